"""Batch lines forwarded to a deployment's own Batch API (``native_batch``), end to end: the
official SDK drives the gateway's ``/v1/batches``; the gateway drives the OpenAI simulator's
Files and Batches API (``tests.upstreams.openai_batches``). Covered: answers and discounted
cost, a mixed batch, a provider batch that fails or expires, cancellation, and a gateway
killed while its provider batch runs; and Anthropic's Message Batches API
(``tests.upstreams.anthropic_batches``) for ``claude-3-haiku``."""

from __future__ import annotations

import io
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import openai
import pytest

from router.config import Deployment, ProviderEntry, RouteEntry, load_config
from router.engine import PINNED
from router.traffic import TrafficLog
from service.app import create_app
from service.server import with_address
from tests.e2e.test_batch_restart import start
from tests.upstreams import serve
from tests.upstreams.anthropic import API_KEY as ANTHROPIC_KEY
from tests.upstreams.anthropic import AnthropicSimulator
from tests.upstreams.anthropic_batches import BatchSim as MessageBatchSim
from tests.upstreams.openai_batches import BatchSim
from tests.upstreams.openai_compat import SimState
from tests.upstreams.openai_compat import create_app as openai_sim

SIM, BATCHES = SimState(), BatchSim(delay_s=0.3)
CLAUDE = AnthropicSimulator(batches=(MESSAGE_BATCHES := MessageBatchSim(delay_s=0.3)))
MINI = (0.15, 0.6)  # gpt-4o-mini's list prices, USD per million tokens
HAIKU = (0.25, 1.25)


def native_config(folder: Path, upstream: str, claude: str = ""):
    """The shipped config with ``gpt-4o-mini`` on the simulator through its Batch API (and
    ``claude-3-haiku`` on the Anthropic one's, at a 40 % discount), a route whose only
    candidate is ``gpt-4o-mini``, and fast polling."""
    cfg = load_config()
    provider = ProviderEntry(name="oai-batch", type="openai-compatible",
                             endpoint=f"{upstream}/v1", api_key=SIM.api_key, native_batch=True)
    native = {"gpt-4o-mini": Deployment(provider="oai-batch")}
    if claude:
        native["claude-3-haiku"] = Deployment(provider="anthropic", endpoint=claude,
                                              api_key=ANTHROPIC_KEY, native_batch=True,
                                              batch_discount=0.4)
    models = [msgspec.structs.replace(m, deployments=[native[m.name]])
              if m.name in native else m for m in cfg.models]
    db = lambda name: f"sqlite:///{folder / name}"  # noqa: E731
    return with_address(msgspec.structs.replace(
        cfg, providers=[*cfg.providers, provider], models=models,
        routes=[*cfg.routes, RouteEntry(name="mini-only", candidates=["gpt-4o-mini"])],
        traffic=msgspec.structs.replace(cfg.traffic, dsn=db("t.sqlite3")),
        governance=msgspec.structs.replace(cfg.governance, dsn=db("g.sqlite3")),
        batch=msgspec.structs.replace(cfg.batch, poll_s=0.1, native_poll_s=0.1,
                                      native_collect_s=30)), "127.0.0.1", 0)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve(openai_sim(SIM, batches=BATCHES)) as url:
        yield url


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("native")


@pytest.fixture(scope="module")
def client(upstream, folder) -> Iterator[openai.OpenAI]:
    with serve(CLAUDE.app) as claude, \
            serve(create_app(native_config(folder, upstream, claude)), lifespan="on") as url, \
            openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(autouse=True)
def fresh() -> None:
    SIM.last_body = None  # set by a live chat call only
    BATCHES.delay_s, BATCHES.fail, BATCHES.expire = 0.3, False, False
    MESSAGE_BATCHES.delay_s, MESSAGE_BATCHES.expire, CLAUDE.calls = 0.3, False, 0


def line(cid: str, model: str, text: str) -> dict:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}]}}


def submit(client: openai.OpenAI, lines: list[dict]):
    f = client.files.create(file=("in.jsonl", io.BytesIO(
        "".join(json.dumps(x) + "\n" for x in lines).encode())), purpose="batch")
    return client.batches.create(input_file_id=f.id, completion_window="24h",
                                 endpoint="/v1/chat/completions")


def wait(client: openai.OpenAI, batch_id: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while (batch := client.batches.retrieve(batch_id)).status not in (
            "completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.05)
    return batch


def output(client: openai.OpenAI, file_id: str | None) -> dict[str, dict]:
    if file_id is None:
        return {}
    return {o["custom_id"]: o for o in map(json.loads,
                                           client.files.content(file_id).text.splitlines())}


def rows(folder: Path, ids: set[str]) -> dict:
    """The traffic-log rows of ``ids`` (waiting for the writer's window)."""
    deadline = time.monotonic() + 10
    while True:
        log = TrafficLog(f"sqlite:///{folder / 't.sqlite3'}")
        try:
            found = {r.id: r for r in log.records() if r.id in ids}
        finally:
            log.close()
        if len(found) == len(ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def list_price(row, prices=MINI) -> float:
    return (row.input_tokens * prices[0] + row.output_tokens * prices[1]) / 1e6


def test_lines_go_to_the_providers_batch_api_at_its_discount(client, folder):
    before = BATCHES.submissions
    lines = [line(f"n{i}", "gpt-4o-mini", f"native {i}") for i in range(5)]
    lines += [line(f"r{i}", "mini-only", f"routed {i}") for i in range(2)]
    done = wait(client, submit(client, lines).id)
    assert done.status == "completed" and done.request_counts.completed == 7
    assert BATCHES.submissions == before + 1  # one provider batch held every line
    assert SIM.last_body is None  # and none went live
    out = output(client, done.output_file_id)
    assert sorted(out) == sorted(x["custom_id"] for x in lines)
    for x in lines:
        body = out[x["custom_id"]]["response"]["body"]
        text = x["body"]["messages"][0]["content"]
        assert body["choices"][0]["message"]["content"] == f"echo: {text}"
        assert body["model"] == "gpt-4o-mini"
    logged = rows(folder, {o["response"]["body"]["id"] for o in out.values()})
    assert len(logged) == 7
    for cid, o in out.items():
        row = logged[o["response"]["body"]["id"]]
        assert row.model == "gpt-4o-mini" and row.status == 200
        assert row.deployment.startswith("openai-compatible:gpt-4o-mini@")
        assert row.route == ("mini-only" if cid.startswith("r") else PINNED)
        assert row.cost_usd == pytest.approx(0.5 * list_price(row)) and row.cost_usd > 0
    usage = [o["response"]["body"]["usage"] for o in out.values()]
    assert done.usage.input_tokens == sum(u["prompt_tokens"] for u in usage)
    assert done.usage.output_tokens == sum(u["completion_tokens"] for u in usage)


def test_a_mixed_batch_forwards_some_lines_and_runs_the_rest_live(client, folder):
    before = len(BATCHES.batches)
    lines = [line(f"m{i}", "gpt-4o-mini", f"mixed {i}") for i in range(3)]
    lines += [line(f"l{i}", "gpt-4o", f"live {i}") for i in range(3)]
    lines += [line("bad", "gpt-4o-mini", "FAIL 400")]
    done = wait(client, submit(client, lines).id)
    assert done.request_counts.completed == 6 and done.request_counts.failed == 1
    (pb,) = list(BATCHES.batches.values())[before:]
    sent = BATCHES.files[pb["input_file_id"]][1].decode().splitlines()
    assert len(sent) == 4  # the gpt-4o-mini lines only
    out = output(client, done.output_file_id)
    assert sorted(out) == ["l0", "l1", "l2", "m0", "m1", "m2"]
    errors = output(client, done.error_file_id)
    assert errors["bad"]["response"]["status_code"] == 400
    logged = rows(folder, {o["response"]["body"]["id"] for o in out.values()})
    for cid, o in out.items():
        row = logged[o["response"]["body"]["id"]]
        if cid.startswith("m"):
            assert row.cost_usd == pytest.approx(0.5 * list_price(row))
        else:  # live, at the list price, on gpt-4o's own deployment
            assert row.model == "gpt-4o" and not row.deployment.startswith("openai-compat")
            assert row.cost_usd == pytest.approx(list_price(row, (2.5, 10.0)))


@pytest.mark.parametrize("outcome", ["fail", "expire"])
def test_a_provider_batch_that_fails_runs_its_lines_live(client, folder, outcome):
    setattr(BATCHES, outcome, True)
    before = BATCHES.submissions
    lines = [line(f"{outcome}{i}", "gpt-4o-mini", f"{outcome} {i}") for i in range(3)]
    done = wait(client, submit(client, lines).id)
    assert BATCHES.submissions == before + 1
    assert done.status == "completed" and done.request_counts.completed == 3
    assert SIM.last_body is not None  # answered by the live endpoint
    out = output(client, done.output_file_id)
    assert sorted(out) == sorted(x["custom_id"] for x in lines)
    logged = rows(folder, {o["response"]["body"]["id"] for o in out.values()})
    for row in logged.values():  # live answers: the list price
        assert row.cost_usd == pytest.approx(list_price(row)) and row.cost_usd > 0


def test_cancelling_the_batch_cancels_the_provider_batch(client):
    BATCHES.delay_s = 60
    before, cancels = BATCHES.submissions, BATCHES.cancels
    batch = submit(client, [line(f"c{i}", "gpt-4o-mini", f"cancel {i}") for i in range(3)])
    deadline = time.monotonic() + 10
    while BATCHES.submissions == before:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.batches.cancel(batch.id).status == "cancelling"
    done = wait(client, batch.id)
    assert done.status == "cancelled" and BATCHES.cancels == cancels + 1
    assert done.request_counts.completed == 0 and done.output_file_id is None
    assert list(BATCHES.batches.values())[-1]["status"] == "cancelled"
    assert SIM.last_body is None


def test_a_killed_gateway_resumes_polling_its_provider_batch(tmp_path, upstream):
    BATCHES.delay_s = 4  # the provider batch is in progress when the gateway dies
    before = BATCHES.submissions
    proc, url = start(tmp_path, upstream, native=SIM.api_key)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    try:
        batch = submit(client, [line(f"k{i}", "gpt-4o-mini", f"kill {i}") for i in range(6)])
        deadline = time.monotonic() + 20
        while BATCHES.submissions == before:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
    proc, url = start(tmp_path, upstream, native=SIM.api_key)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    try:
        done = wait(client, batch.id, timeout_s=60)
        out = output(client, done.output_file_id)
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)
    assert done.status == "completed" and done.request_counts.completed == 6
    assert sorted(out) == [f"k{i}" for i in range(6)]
    assert BATCHES.submissions == before + 1  # polled again, never submitted again
    assert SIM.last_body is None


def test_anthropic_lines_go_to_its_message_batches_api(client, folder):
    before = MESSAGE_BATCHES.submissions
    lines = [line(f"a{i}", "claude-3-haiku", f"claude {i}") for i in range(3)]
    lines += [line("a-bad", "claude-3-haiku", "FAIL 400")]
    done = wait(client, submit(client, lines).id)
    assert done.request_counts.completed == 3 and done.request_counts.failed == 1
    assert MESSAGE_BATCHES.submissions == before + 1 and CLAUDE.calls == 0  # none live
    out = output(client, done.output_file_id)
    assert sorted(out) == ["a0", "a1", "a2"]
    assert output(client, done.error_file_id)["a-bad"]["response"]["status_code"] == 400
    logged = rows(folder, {o["response"]["body"]["id"] for o in out.values()})
    for cid, o in out.items():
        body = o["response"]["body"]
        assert body["choices"][0]["message"]["content"].startswith(f"Echo: claude {cid[1]}")
        row = logged[body["id"]]
        assert row.model == "claude-3-haiku" and row.deployment.startswith("anthropic:")
        assert row.cost_usd == pytest.approx(0.6 * list_price(row, HAIKU)) and row.cost_usd > 0


@pytest.mark.parametrize("how", ["expire", "cancel"])
def test_anthropic_batches_expire_to_live_and_cancel(client, how):
    MESSAGE_BATCHES.expire = how == "expire"
    MESSAGE_BATCHES.delay_s = 0.3 if how == "expire" else 60
    before, cancels = MESSAGE_BATCHES.submissions, MESSAGE_BATCHES.cancels
    batch = submit(client, [line(f"{how}{i}", "claude-3-haiku", f"{how} {i}")
                            for i in range(2)])
    if how == "cancel":
        deadline = time.monotonic() + 10
        while MESSAGE_BATCHES.submissions == before:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.batches.cancel(batch.id)
    done = wait(client, batch.id)
    assert MESSAGE_BATCHES.submissions == before + 1
    if how == "expire":  # every line answered live instead
        assert done.status == "completed" and done.request_counts.completed == 2
        assert CLAUDE.calls == 2
    else:
        assert done.status == "cancelled" and done.request_counts.completed == 0
        assert MESSAGE_BATCHES.cancels == cancels + 1 and CLAUDE.calls == 0
