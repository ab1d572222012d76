"""The Replicate adapter against the local predictions simulator, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from router.config import ConfigError, Deployment
from router.providers import (
    PROVIDERS,
    ProviderContext,
    ReplicateProvider,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    build_provider,
)
from router.wire.openai import ChatCompletionChunk, ChatRequest
from tests.unit.test_router.test_providers import harness
from tests.unit.test_router.test_providers.harness import chat_request
from tests.unit.test_router.test_providers.harness import words as _words
from tests.upstreams import serve
from tests.upstreams.replicate import API_TOKEN, ReplicateSimulator

MODEL = "llama-3-8b"  # the catalog name
UPSTREAM = "meta/meta-llama-3-8b-instruct"
CREATE_PATH = f"/v1/models/{UPSTREAM}/predictions"


@pytest.fixture(scope="module")
def sim() -> Any:
    simulator = ReplicateSimulator()
    with serve(simulator.app) as url:
        simulator.url = url  # type: ignore[attr-defined]
        yield simulator


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("router.providers.replicate.POLL_FIRST_S", 0.01)


def run(sim: Any, work: Callable[[ReplicateProvider], Awaitable[Any]], *,
        token: str = API_TOKEN, model: str = UPSTREAM,
        count: Callable[[str], int] = _words) -> Any:
    deployment = Deployment(provider="replicate", model=model, api_key=token, endpoint=sim.url)
    return harness.run(deployment, work, count_tokens=count)


def req(*messages: dict[str, Any], **fields: Any) -> ChatRequest:
    return chat_request(MODEL, list(messages), **fields)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def complete(sim: Any, request: ChatRequest, **kw: Any) -> Any:
    return run(sim, lambda p: p.complete(request), **kw)


def stream(sim: Any, request: ChatRequest, **kw: Any) -> list[ChatCompletionChunk]:
    async def collect(p: ReplicateProvider) -> list[ChatCompletionChunk]:
        return [c async for c in p.stream(request)]

    return run(sim, collect, **kw)


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# --- complete ------------------------------------------------------------------------------


def test_text_answer_sync_wait_and_usage(sim: Any) -> None:
    before = len(sim.requests)
    out = complete(sim, req(user("Hello there")))
    assert out.choices[0].message.content == "Echo: Hello there"
    assert out.choices[0].finish_reason == "stop"
    assert out.model == MODEL and out.id.startswith("chatcmpl-sim")
    assert sim.last_body == {"input": {"prompt": "Hello there"}}
    assert sim.create_headers["prefer"] == "wait"
    assert sim.create_headers["authorization"] == f"Bearer {API_TOKEN}"
    assert sim.requests[before:] == [("POST", CREATE_PATH)]  # answered within the wait
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (2, 3)
    assert out.usage.total_tokens == 5


def test_system_prompts_and_multi_turn_transcript(sim: Any) -> None:
    out = complete(sim, req({"role": "system", "content": "Be brief."},
                            {"role": "developer", "content": "Use French."},
                            user("What is 2+2?"), {"role": "assistant", "content": "4."},
                            user("And 3+3?")))
    model_input = sim.last_body["input"]
    assert model_input["system_prompt"] == "Be brief.\n\nUse French."
    assert model_input["prompt"] == "User: What is 2+2?\n\nAssistant: 4.\n\nUser: And 3+3?"
    assert out.choices[0].message.content == (
        "Echo: User: What is 2+2?\n\nAssistant: 4.\n\nUser: And 3+3? "
        "[system=Be brief.\n\nUse French.]")
    assert out.usage.prompt_tokens == 9 + 4  # prompt words + system words (metrics)


def test_sampling_parameters(sim: Any) -> None:
    complete(sim, req(user("hi"), temperature=0.3, top_p=0.9, max_tokens=64,
                      stop=["###", "END"], seed=5, user="u-1", presence_penalty=0.5))
    assert sim.last_body["input"] == {"prompt": "hi", "max_tokens": 64, "temperature": 0.3,
                                      "top_p": 0.9, "stop_sequences": "###,END"}
    with pytest.raises(UpstreamRejected, match="comma"):
        complete(sim, req(user("hi"), stop=["a,b"]))


def test_finish_reasons(sim: Any) -> None:
    out = complete(sim, req(user("one two three four five"), max_completion_tokens=3))
    assert out.choices[0].message.content == "Echo: one two"
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 3

    out = complete(sim, req(user("alpha beta gamma"), stop="beta", max_tokens=50))
    assert out.choices[0].message.content == "Echo: alpha "
    assert out.choices[0].finish_reason == "stop"


def test_json_response_format_becomes_an_instruction(sim: Any) -> None:
    complete(sim, req(user("give json"), response_format={"type": "json_object"}))
    assert sim.last_body["input"]["system_prompt"] == \
        "Answer with a single JSON object, and nothing else."
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    complete(sim, req({"role": "system", "content": "S"}, user("x"), response_format={
        "type": "json_schema", "json_schema": {"name": "n", "schema": schema}}))
    system = sim.last_body["input"]["system_prompt"]
    assert system.startswith("S\n\nAnswer with a single JSON object that matches")
    assert json.dumps(schema) in system


def test_tools_images_and_tool_messages_are_refused_before_any_call(sim: Any) -> None:
    before = len(sim.requests)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(UpstreamRejected, match="tools"):
        complete(sim, req(user("hi"), tools=[tool]))
    with pytest.raises(UpstreamRejected, match="images"):
        complete(sim, req(user([{"type": "text", "text": "look"}, {
            "type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])))
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    with pytest.raises(UpstreamRejected, match="tool calls"):
        complete(sim, req(user("hi"), {"role": "assistant", "tool_calls": [call]},
                          {"role": "tool", "tool_call_id": "c1", "content": "r"}))
    with pytest.raises(UpstreamRejected, match="tools"):
        stream(sim, req(user("hi"), tools=[tool]))
    assert len(sim.requests) == before


def test_polls_until_the_prediction_ends(sim: Any) -> None:
    before = len(sim.requests)
    out = complete(sim, req(user("SLOW answer please")))
    assert out.choices[0].message.content == "Echo: SLOW answer please"
    calls = sim.requests[before:]
    assert calls[0] == ("POST", CREATE_PATH)
    assert len(calls) == 3 and all(m == "GET" and p.startswith("/v1/predictions/")
                                   for m, p in calls[1:])


def test_failed_prediction(sim: Any) -> None:
    with pytest.raises(UpstreamError, match="CUDA out of memory"):
        complete(sim, req(user("FAIL PREDICTION")))


def test_usage_estimated_without_metrics(sim: Any) -> None:
    def double(text: str) -> int:
        return 2 * len(text.split())

    out = complete(sim, req(user("NO METRICS here")), count=double)
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (6, 8)


# --- streaming -----------------------------------------------------------------------------


def test_stream_text(sim: Any) -> None:
    request = req(user("Tell me: a\nmultiline prompt"), {"role": "assistant", "content": "ok"},
                  user("more"))
    chunks = stream(sim, request)
    assert sim.last_body["stream"] is True
    assert "prefer" not in sim.create_headers  # streaming must not wait for the end
    assert chunks[0].choices[0].delta.role == "assistant"
    expected = complete(sim, request).choices[0].message.content
    assert text_of(chunks) == expected and "\n" in expected  # multi-line data survives SSE
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 5
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == _words(expected)  # from metrics, read after done
    assert all(c.model == MODEL and c.id == chunks[0].id for c in chunks)


def test_stream_reads_events_then_metrics(sim: Any) -> None:
    before = len(sim.requests)
    chunks = stream(sim, req(user("count these words"), max_tokens=2))
    calls = sim.requests[before:]
    assert [m for m, _ in calls] == ["POST", "GET", "GET"]
    assert calls[1][1].startswith("/v1/streams/") and calls[2][1].startswith("/v1/predictions/")
    assert text_of(chunks) == "Echo: count"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_stream_without_stream_url_waits_for_the_answer(sim: Any) -> None:
    chunks = stream(sim, req(user("NO STREAM here")))
    contents = [c.choices[0].delta.content for c in chunks if c.choices
                and c.choices[0].delta.content]
    assert contents == ["Echo: NO STREAM here"]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3


def test_stream_failures(sim: Any) -> None:
    with pytest.raises(UpstreamError, match="the model crashed"):
        stream(sim, req(user("FAIL MIDSTREAM now")))
    with pytest.raises(UpstreamError, match="CUDA out of memory"):
        stream(sim, req(user("FAIL PREDICTION now")))
    with pytest.raises(UpstreamRateLimited) as info:
        stream(sim, req(user("FAIL 429")))
    assert info.value.retry_after == 5


# --- abandoned predictions are canceled ----------------------------------------------------


def _cancels(sim: Any, since: int) -> list[str]:
    return [path for method, path in sim.requests[since:]
            if method == "POST" and path.endswith("/cancel")]


def test_a_timed_out_completion_cancels_its_prediction(sim: Any) -> None:
    before = len(sim.requests)

    async def work(p: ReplicateProvider) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(p.complete(req(user("HANG forever"))), 0.3)

    run(sim, work)  # run's aclose waits for the background cancel
    (path,) = _cancels(sim, before)
    pid = path.split("/")[-2]
    assert sim.predictions[pid]["status"] == "canceled"
    assert sim.last_headers["authorization"] == f"Bearer {API_TOKEN}"


def test_a_stream_abandoned_mid_way_cancels_its_prediction(sim: Any) -> None:
    before = len(sim.requests)

    async def work(p: ReplicateProvider) -> str:
        async with contextlib.aclosing(p.stream(req(user("HANG on a stream")))) as chunks:
            async for c in chunks:
                if c.choices and c.choices[0].delta.content:
                    return c.choices[0].delta.content  # the client leaves here
        raise AssertionError("no content arrived")

    assert run(sim, work) == "Echo: "
    (path,) = _cancels(sim, before)
    assert sim.predictions[path.split("/")[-2]]["status"] == "canceled"


def test_ended_predictions_are_not_canceled(sim: Any) -> None:
    before = len(sim.requests)
    complete(sim, req(user("SLOW but it ends")))
    stream(sim, req(user("a whole stream")))
    stream(sim, req(user("NO STREAM here")))
    with pytest.raises(UpstreamError):
        complete(sim, req(user("FAIL PREDICTION")))
    with pytest.raises(UpstreamError):
        stream(sim, req(user("FAIL MIDSTREAM now")))
    assert _cancels(sim, before) == []


def test_urls_on_other_hosts_get_no_credentials(sim: Any) -> None:
    with pytest.raises(UpstreamError, match="unexpected host"):
        complete(sim, req(user("EVIL URL")))
    with pytest.raises(UpstreamError, match="unexpected host"):
        stream(sim, req(user("EVIL URL")))


# --- errors and configuration --------------------------------------------------------------


def test_error_statuses_map_to_gateway_errors(sim: Any) -> None:
    with pytest.raises(UpstreamRejected, match="simulated 400"):
        complete(sim, req(user("FAIL 400")))
    with pytest.raises(UpstreamRejected, match="simulated 422"):
        complete(sim, req(user("FAIL 422")))
    with pytest.raises(UpstreamRejected, match="could not be found"):
        complete(sim, req(user("hi")), model="meta/missing-model")
    with pytest.raises(UpstreamRateLimited) as info:
        complete(sim, req(user("FAIL 429")))
    assert info.value.retry_after == 5 and "throttled" in str(info.value)
    with pytest.raises(UpstreamUnavailable):
        complete(sim, req(user("FAIL 500")))
    with pytest.raises(UpstreamUnavailable):
        complete(sim, req(user("FAIL 503")))


def test_simulator_validates_the_input_schema(sim: Any) -> None:
    async def raw(_: ReplicateProvider) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.post(f"{sim.url}{CREATE_PATH}", json={
                "input": {"prompt": "x", "stop_sequences": ["a"], "top_k": "5"}},
                headers={"Authorization": f"Bearer {API_TOKEN}"})

    response = run(sim, raw)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 422 and "input.stop_sequences" in body["detail"]
    assert {f["field"] for f in body["invalid_fields"]} == {"input.stop_sequences",
                                                             "input.top_k"}


def test_wrong_token_is_our_fault_and_never_echoed(sim: Any) -> None:
    secret = "r8_wrong_secret_token"
    with pytest.raises(UpstreamError) as info:
        complete(sim, req(user("hi")), token=secret)
    assert type(info.value) is UpstreamError
    assert "credentials" in str(info.value) and secret not in str(info.value)
    provider = build_provider(Deployment(provider="replicate", api_key=secret),
                                 ProviderContext(count_tokens=_words))
    assert secret not in repr(provider)


def test_model_ids_must_be_owner_and_name(sim: Any) -> None:
    ctx = ProviderContext(count_tokens=_words)
    with pytest.raises(ConfigError, match="owner/name"):
        build_provider(Deployment(provider="replicate", model="meta/llama:abc123",
                                     api_key="k"), ctx)
    with pytest.raises(UpstreamError, match="owner/name"):
        complete(sim, req(user("hi")), model="")  # the catalog name is no Replicate id


def test_missing_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    ctx = ProviderContext(count_tokens=_words)
    with pytest.raises(ConfigError, match="REPLICATE_API_TOKEN"):
        build_provider(Deployment(provider="replicate"), ctx)
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_env")
    provider = build_provider(Deployment(provider="replicate"), ctx)
    assert isinstance(provider, ReplicateProvider)
    assert provider._auth["Authorization"] == "Bearer r8_env"
    assert "replicate" in PROVIDERS
