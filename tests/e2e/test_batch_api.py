"""The Batch API over real HTTP with the unmodified ``openai`` SDK: upload, create, poll,
download; the input file's checks; cancellation; the admin view."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import httpx
import msgspec
import openai
import pytest

from router.config import load_config
from service.app import create_app
from service.server import with_address
from tests.upstreams import serve


def batch_config(tmp_path, **batch):
    """The shipped config with its stores under ``tmp_path`` (and ``batch`` overrides)."""
    cfg = load_config()
    traffic = msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{tmp_path / 't.sqlite3'}")
    gov = msgspec.structs.replace(cfg.governance, dsn=f"sqlite:///{tmp_path / 'g.sqlite3'}")
    b = msgspec.structs.replace(cfg.batch, **batch)
    cfg = msgspec.structs.replace(cfg, traffic=traffic, governance=gov, batch=b)
    return with_address(cfg, "127.0.0.1", 0)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    cfg = batch_config(tmp_path_factory.mktemp("batch"), concurrency=8, poll_s=0.2)
    with serve(create_app(cfg), lifespan="on") as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def chat_lines(n: int, model: str = "gpt-4o-mini", tag: str = "q") -> list[dict]:
    return [{"custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": model, "messages": [{"role": "user",
                                                    "content": f"{tag} question {i}"}]}}
            for i in range(n)]


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def upload(client: openai.OpenAI, lines: list[dict]):
    return client.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")


def wait(client: openai.OpenAI, batch_id: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.1)


def results(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_a_chat_batch_through_the_sdk_answers_every_line_once(client):
    lines = chat_lines(40)
    f = upload(client, lines)
    assert (f.object, f.purpose, f.bytes) == ("file", "batch", len(jsonl(lines)))
    assert client.files.retrieve(f.id).id == f.id
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"job": "nightly"})
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"job": "nightly"}
    done = wait(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts.total == done.request_counts.completed == 40
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.error_file_id is None
    out = results(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in out) == sorted(x["custom_id"] for x in lines)
    usage = [o["response"]["body"]["usage"] for o in out]
    assert done.usage.input_tokens == sum(u["prompt_tokens"] for u in usage) > 0
    assert done.usage.output_tokens == sum(u["completion_tokens"] for u in usage) > 0
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    first = out[0]
    assert first["error"] is None and first["response"]["status_code"] == 200
    assert first["id"].startswith("batch_req_") and first["response"]["request_id"]
    body = first["response"]["body"]
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_failed_lines_go_to_the_error_file(client):
    lines = chat_lines(3, tag="ok") + chat_lines(2, model="no-such-model", tag="bad")
    batch = client.batches.create(input_file_id=upload(client, lines).id,
                                  endpoint="/v1/chat/completions", completion_window="24h")
    done = wait(client, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 2)
    errors = results(client, done.error_file_id)
    assert sorted(e["custom_id"] for e in errors) == ["bad-0", "bad-1"]
    assert errors[0]["response"]["status_code"] == 404
    assert errors[0]["response"]["body"]["error"]["message"]
    assert {o["custom_id"] for o in results(client, done.output_file_id)} == {
        "ok-0", "ok-1", "ok-2"}


def test_an_embeddings_batch(client):
    lines = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "text-embedding-3-small", "input": f"text {i}"}}
             for i in range(5)]
    batch = client.batches.create(input_file_id=upload(client, lines).id,
                                  endpoint="/v1/embeddings", completion_window="24h")
    done = wait(client, batch.id)
    assert done.request_counts.completed == 5
    out = results(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in out) == [f"e{i}" for i in range(5)]
    assert out[0]["response"]["body"]["data"][0]["embedding"]


@pytest.mark.parametrize(("lines", "needle"), [
    (b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
     b'not json\n', "line 2: not valid JSON"),
    (jsonl(chat_lines(2, tag="d") + chat_lines(1, tag="d")), "line 3: custom_id 'd-0'"),
    (jsonl([{**chat_lines(1)[0], "method": "GET"}]), "line 1: method must be POST"),
    (jsonl([{**chat_lines(1)[0], "url": "/v1/images"}]), "line 1: url '/v1/images'"),
    (jsonl([*chat_lines(1), {**chat_lines(2)[1], "url": "/v1/embeddings"}]),
     "line 2: url '/v1/embeddings' differs"),
    (b"\n", "no requests"),
])
def test_an_invalid_input_file_is_a_400_naming_the_line(client, lines, needle):
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("in.jsonl", io.BytesIO(lines)), purpose="batch")
    assert needle in err.value.message


def test_a_body_the_endpoint_refuses_is_a_400_naming_the_line(client):
    lines = chat_lines(2)
    lines[1]["body"]["messages"] = "not a list"
    f = upload(client, lines)
    with pytest.raises(openai.BadRequestError) as err:
        client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    assert "line 2 (custom_id 'q-1')" in err.value.message
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings",
                              completion_window="24h")


def test_unknown_ids_are_404(client):
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-nope")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                              completion_window="24h")


def test_listing_pages_with_after(client):
    ids = []
    for _ in range(3):
        f = upload(client, chat_lines(1, tag="p"))
        ids.append(client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                         completion_window="24h").id)
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    nxt = client.batches.list(limit=2, after=page.data[-1].id)
    assert nxt.data[0].id == ids[0]
    seen = [b.id for b in client.batches.list(limit=1)]  # the SDK follows the cursor
    assert seen[:3] == ids[::-1]
    for i in ids:
        wait(client, i)


def test_files_list_and_delete(client):
    f = upload(client, chat_lines(1, tag="del"))
    assert f.id in {x.id for x in client.files.list(purpose="batch")}
    deleted = client.files.delete(f.id)
    assert deleted.deleted and deleted.id == f.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_admin_batches_needs_a_credential(base_url):
    r = httpx.get(f"{base_url}/admin/batches")
    assert r.status_code in (401, 403)


@pytest.mark.slow
def test_a_thousand_line_batch_answers_every_line(client):
    lines = chat_lines(1000, model="auto", tag="k")
    t0 = time.perf_counter()
    batch = client.batches.create(input_file_id=upload(client, lines).id,
                                  endpoint="/v1/chat/completions", completion_window="24h")
    done = wait(client, batch.id, timeout_s=600)
    took = time.perf_counter() - t0
    assert done.status == "completed" and done.request_counts.completed == 1000
    out = results(client, done.output_file_id)
    assert len(out) == 1000
    assert sorted(o["custom_id"] for o in out) == sorted(x["custom_id"] for x in lines)
    print(f"\n1,000 lines in {took:.1f} s ({1000 / took:.0f} lines/s)")
