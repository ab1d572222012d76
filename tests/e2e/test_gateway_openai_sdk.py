"""The gateway under uvicorn on a local port, with the unmodified ``openai`` SDK as its client."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import msgspec
import numpy as np
import openai
import pytest

from router.config import load_config
from service.app import create_app
from service.server import with_address
from tests.upstreams import serve

MAX_BODY = 64 * 1024
USER = [{"role": "user", "content": "Prove that the square root of 2 is irrational."}]
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
         "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    cfg = load_config()
    server = msgspec.structs.replace(cfg.server, max_body_bytes=MAX_BODY)
    traffic = msgspec.structs.replace(
        cfg.traffic, dsn=f"sqlite:///{tmp_path_factory.mktemp('log') / 'traffic.sqlite3'}")
    cfg = msgspec.structs.replace(cfg, server=server, traffic=traffic)
    return with_address(cfg, "127.0.0.1", 0)


@pytest.fixture(scope="module")
def base_url(config) -> Iterator[str]:
    with serve(create_app(config), lifespan="on") as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def http(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


def capable(config, capability: str) -> set[str]:
    return {m.name for m in config.models if capability in m.capabilities}


def test_auto_completion_carries_routing_headers(client, config):
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=USER)
    completion = raw.parse()
    assert raw.headers["x-contextforge-route"] == config.default_route
    assert raw.headers["x-contextforge-model"] == completion.model
    assert completion.model in {m.name for m in config.models}
    assert raw.headers["x-contextforge-cache"] == "bypass"
    assert float(raw.headers["x-contextforge-cost-usd"]) > 0
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    u = completion.usage
    assert u.prompt_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_stream_assembles_the_same_answer_and_ends_with_usage(client):
    whole = client.chat.completions.create(model="auto", messages=USER)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=USER, stream=True, stream_options={"include_usage": True})
    assert raw.headers["x-contextforge-model"] == whole.model
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_stream_without_include_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="auto", messages=USER, stream=True))
    assert chunks and all(c.choices for c in chunks)


def test_concrete_model_and_alias_skip_routing(client):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER)
    assert raw.parse().model == "gpt-4o-mini"
    assert raw.headers["x-contextforge-model"] == "gpt-4o-mini"
    assert raw.headers["x-contextforge-route"] == "none"
    aliased = client.chat.completions.create(model="gpt-4o-2024-08-06", messages=USER)
    assert aliased.model == "gpt-4o"


def test_route_name_as_model(client):
    raw = client.chat.completions.with_raw_response.create(model="gpt4o-30", messages=USER)
    assert raw.headers["x-contextforge-route"] == "gpt4o-30"
    assert raw.parse().model in {"gpt-4o", "gpt-4o-mini"}


def test_max_tokens_caps_the_answer(client):
    c = client.chat.completions.create(model="auto", messages=USER, max_tokens=5)
    assert c.usage.completion_tokens == 5 and c.choices[0].finish_reason == "length"


def test_unknown_model_is_not_found_and_server_stays_up(client, http):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-17", messages=USER)
    assert exc.value.body["code"] == "model_not_found"
    assert http.get("/healthz").json() == {"status": "ok"}


def test_no_eligible_model_is_422(client):
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="command", messages=USER, tools=TOOLS)
    with pytest.raises(openai.UnprocessableEntityError):  # no context window is that large
        client.chat.completions.create(model="auto", messages=USER, max_tokens=5_000_000)


@pytest.mark.parametrize(("body", "param"), [
    (b'{"model": "auto", "messages": [', None),
    (b'not json at all', None),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
     "temperature"),
    (b'{"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
    (b'{"model": 4, "messages": [{"role": "user", "content": "x"}]}', "model"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": [{"type": "text"}]}]}',
     "messages[0].content[0].text"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
     "max_tokens"),
])
def test_bad_requests_are_400_naming_the_field(http, body, param):
    r = http.post("/v1/chat/completions", content=body,
                  headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert "Traceback" not in r.text
    assert http.get("/healthz").status_code == 200


def test_oversized_body_is_413(http):
    big = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x" * MAX_BODY}]})
    r = http.post("/v1/chat/completions", content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    # Without a Content-Length header (chunked), the limit holds on the bytes received.
    chunked = http.post("/v1/chat/completions", content=iter([big.encode()[i:i + 4096]
                                                              for i in range(0, len(big), 4096)]))
    assert chunked.status_code == 413
    assert http.get("/healthz").status_code == 200


@pytest.mark.parametrize("prompt", [
    "What's the weather in Paris?", "Write a haiku about autumn.", "Solve 12*13.",
])
def test_tools_route_only_to_models_with_tools(client, config, prompt):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": prompt}], tools=TOOLS)
    assert raw.headers["x-contextforge-model"] in capable(config, "tools")


def test_tool_results_conversation(client, config):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [{"role": "user", "content": "What's the weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages,
                                                           tools=TOOLS, tool_choice="auto")
    assert raw.headers["x-contextforge-model"] in capable(config, "tools")
    assert raw.parse().choices[0].message.content


@pytest.mark.parametrize("route", ["auto", "budget", "quality-first"])
def test_images_route_only_to_models_with_vision(client, config, route):
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}]}]
    raw = client.chat.completions.with_raw_response.create(model=route, messages=messages)
    assert raw.headers["x-contextforge-model"] in capable(config, "vision")


def test_json_response_format_routes_to_json_models(client, config):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=USER, response_format={"type": "json_object"})
    assert raw.headers["x-contextforge-model"] in capable(config, "json")
    assert json.loads(raw.parse().choices[0].message.content)["answer"]


def test_models_lists_catalog_models_and_routes(client, config):
    ids = {m.id for m in client.models.list()}
    assert {m.name for m in config.models} <= ids
    assert {r.name for r in config.routes} | {"auto"} <= ids
    assert client.models.retrieve("gpt-4o-2024-08-06").id == "gpt-4o"


def test_health_and_readiness(http):
    assert http.get("/healthz").status_code == 200
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_contextforge_serve_command(tmp_path):
    """The CLI verb end to end: a subprocess serving on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port",
                                 str(port)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.1)
        assert r.status_code == 200
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x",
                           max_retries=0) as c:
            assert c.chat.completions.create(model="auto", messages=USER).choices
    finally:
        proc.terminate()
        proc.wait(10)


def test_embeddings_from_the_local_encoder(client):
    texts = ["route this prompt", "and this one"]
    # The SDK asks for base64 by default and decodes it: the vectors must survive that.
    out = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    floats = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts,
                                      encoding_format="float")
    assert [d.index for d in out.data] == [0, 1] and out.model == "all-MiniLM-L6-v2"
    for a, b in zip(out.data, floats.data, strict=True):
        assert len(a.embedding) == 384
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    v = np.array(out.data[0].embedding)
    assert abs(np.linalg.norm(v) - 1) < 1e-4
    assert out.usage.prompt_tokens > 0
    single = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0])
    assert single.data[0].embedding == pytest.approx(out.data[0].embedding, abs=1e-5)


def test_embeddings_from_a_catalog_model(client):
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small",
                                                     input="hello", dimensions=256)
    out = raw.parse()
    assert len(out.data[0].embedding) == 256 and out.model == "text-embedding-3-small"
    assert float(raw.headers["x-contextforge-cost-usd"]) > 0


def test_embeddings_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-embedder", input="x")
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model="gpt-4o", input="x")  # a chat model
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=128)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="text-embedding-3-small", messages=USER)


def test_simulated_models_answer_dataset_prompts_with_recorded_answers(client):
    """gpt-4o stands in for gpt-4-1106-preview: a RouterBench prompt gets that model's real
    answer from the data (the index loads in the background after start-up)."""
    from router.providers.recorded import RecordedAnswers

    prompt = "Write a python function to identify non-prime numbers."
    expected = RecordedAnswers.load().answer("gpt-4-1106-preview", prompt)
    deadline = time.monotonic() + 20
    while True:
        got = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": prompt}])
        if got.choices[0].message.content == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got.choices[0].message.content == expected
