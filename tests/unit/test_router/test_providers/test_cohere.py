"""The Cohere v2 adapter against the local v2 simulator, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

from router.config import ConfigError, Deployment
from router.providers import (
    PROVIDERS,
    CohereProvider,
    ProviderContext,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    build_provider,
)
from router.wire.openai import ChatCompletionChunk, ChatRequest, EmbeddingsRequest
from tests.unit.test_router.test_providers import harness
from tests.unit.test_router.test_providers.harness import chat_request
from tests.unit.test_router.test_providers.harness import words as _words
from tests.upstreams import serve
from tests.upstreams.cohere import API_KEY, PREAMBLE_TOKENS, CohereSimulator

MODEL = "command-a"  # the catalog name
UPSTREAM = "command-a-03-2025"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake png bytes").decode()
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object",
                                       "properties": {"zone": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def sim() -> Any:
    simulator = CohereSimulator()
    with serve(simulator.app) as url:
        simulator.url = url  # type: ignore[attr-defined]
        yield simulator


def run(sim: Any, work: Callable[[CohereProvider], Awaitable[Any]], *,
        api_key: str = API_KEY, endpoint: str | None = None) -> Any:
    deployment = Deployment(provider="cohere", model=UPSTREAM, api_key=api_key,
                            endpoint=sim.url if endpoint is None else endpoint)
    return harness.run(deployment, work)


def req(*messages: dict[str, Any], **fields: Any) -> ChatRequest:
    return chat_request(MODEL, list(messages), **fields)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def complete(sim: Any, request: ChatRequest, **kw: Any) -> Any:
    return run(sim, lambda p: p.complete(request), **kw)


def stream(sim: Any, request: ChatRequest) -> list[ChatCompletionChunk]:
    async def collect(p: CohereProvider) -> list[ChatCompletionChunk]:
        return [c async for c in p.stream(request)]

    return run(sim, collect)


# --- chat ----------------------------------------------------------------------------------


def test_text_answer_usage_and_wire_shape(sim: Any) -> None:
    out = complete(sim, req(user("Hello there")))
    choice = out.choices[0]
    assert choice.message.content == "Echo: Hello there"
    assert choice.finish_reason == "stop"
    assert out.model == MODEL
    assert sim.last_body == {"model": UPSTREAM, "stream": False,
                             "messages": [{"role": "user", "content": "Hello there"}]}
    assert sim.last_headers["authorization"] == f"Bearer {API_KEY}"
    # usage.tokens (words + preamble), not billed_units (words)
    assert out.usage.prompt_tokens == 2 + PREAMBLE_TOKENS
    assert out.usage.completion_tokens == 3
    assert out.usage.total_tokens == 5 + PREAMBLE_TOKENS


def test_system_and_developer_prompts_become_system_messages(sim: Any) -> None:
    out = complete(sim, req({"role": "system", "content": "Be brief."},
                            {"role": "developer", "content": "Use French."}, user("Hi")))
    assert [m["role"] for m in sim.last_body["messages"]] == ["system", "system", "user"]
    assert "[system=Be brief. / Use French.]" in out.choices[0].message.content


def test_multi_turn_history(sim: Any) -> None:
    out = complete(sim, req(user("What is 2+2?"), {"role": "assistant", "content": "4."},
                            user("And 3+3?")))
    assert sim.last_body["messages"][1] == {"role": "assistant", "content": "4."}
    assert out.choices[0].message.content == "Echo: And 3+3? [turns=3]"


def test_images_as_image_url_parts(sim: Any) -> None:
    out = complete(sim, req(user([
        {"type": "text", "text": "Compare these"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}",
                                            "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}])))
    assert sim.last_body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}",
                                            "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]
    assert out.choices[0].message.content == "Echo: Compare these [images=2]"


def test_tool_call(sim: Any) -> None:
    strict = {**WEATHER, "function": {**WEATHER["function"], "strict": True}}
    out = complete(sim, req(user("Weather in Paris? use get_weather"), tools=[strict, TIME]))
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert json.loads(call.function.arguments) == {"city": "Weather in Paris? use get_weather"}
    assert choice.message.content == "I will call get_weather."  # the tool plan
    assert sim.last_body["tools"] == [WEATHER, TIME]  # strict moved to strict_tools
    assert sim.last_body["strict_tools"] is True
    assert "tool_choice" not in sim.last_body  # auto is Cohere's default


def test_tool_result_round_trip(sim: Any) -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    out = complete(sim, req(user("Weather in Paris? use get_weather"),
                            {"role": "assistant", "content": "Checking.", "tool_calls": [call]},
                            {"role": "tool", "tool_call_id": "call_1", "content": "18C sunny"},
                            tools=[WEATHER]))
    sent = sim.last_body["messages"]
    assert sent[1] == {"role": "assistant", "tool_plan": "Checking.", "tool_calls": [call]}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "18C sunny"}
    assert out.choices[0].message.content == "Tool results: call_1=18C sunny"
    assert out.choices[0].finish_reason == "stop"


def test_tool_choice_mapping(sim: Any) -> None:
    out = complete(sim, req(user("anything"), tools=[WEATHER, TIME], tool_choice="required"))
    assert sim.last_body["tool_choice"] == "REQUIRED"
    assert out.choices[0].message.tool_calls[0].function.name == "get_weather"

    out = complete(sim, req(user("use get_weather"), tools=[WEATHER], tool_choice="none"))
    assert sim.last_body["tool_choice"] == "NONE"
    assert out.choices[0].message.tool_calls is None

    named = {"type": "function", "function": {"name": "get_time"}}
    out = complete(sim, req(user("anything"), tools=[WEATHER, TIME], tool_choice=named))
    assert sim.last_body["tool_choice"] == "REQUIRED"
    assert [t["function"]["name"] for t in sim.last_body["tools"]] == ["get_time"]
    assert out.choices[0].message.tool_calls[0].function.name == "get_time"

    with pytest.raises(UpstreamRejected, match="nope"):
        complete(sim, req(user("x"), tools=[WEATHER],
                          tool_choice={"type": "function", "function": {"name": "nope"}}))


def test_json_response_formats(sim: Any) -> None:
    out = complete(sim, req(user("give json"), response_format={"type": "json_object"}))
    assert sim.last_body["response_format"] == {"type": "json_object"}
    assert json.loads(out.choices[0].message.content) == {"echo": "give json"}

    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    out = complete(sim, req(user("schema please"), response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}))
    assert sim.last_body["response_format"] == {"type": "json_object", "json_schema": schema}
    assert json.loads(out.choices[0].message.content)["schema_keys"] == ["a"]

    complete(sim, req(user("plain"), response_format={"type": "text"}))
    assert "response_format" not in sim.last_body


def test_sampling_parameters_are_renamed_and_clamped(sim: Any) -> None:
    complete(sim, req(user("hi"), temperature=0.2, top_p=1.0, max_completion_tokens=50,
                      stop="END", seed=7, presence_penalty=-1.0, frequency_penalty=0.5,
                      user="u-1", parallel_tool_calls=False))
    body = sim.last_body
    assert body["temperature"] == 0.2
    assert body["p"] == 0.99  # Cohere's maximum
    assert body["max_tokens"] == 50
    assert body["stop_sequences"] == ["END"]
    assert body["seed"] == 7
    assert body["presence_penalty"] == 0.0 and body["frequency_penalty"] == 0.5
    for openai_only in ("top_p", "stop", "user", "parallel_tool_calls",
                        "max_completion_tokens", "n"):
        assert openai_only not in body


def test_finish_reasons(sim: Any) -> None:
    out = complete(sim, req(user("one two three four five six"), max_tokens=3))
    assert out.choices[0].finish_reason == "length"
    assert out.choices[0].message.content == "Echo: one two"

    out = complete(sim, req(user("alpha beta gamma"), stop=["beta"]))
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].message.content == "Echo: alpha "

    out = complete(sim, req(user("TOXIC words")))
    assert out.choices[0].finish_reason == "content_filter"

    with pytest.raises(UpstreamError, match="error while generating"):
        complete(sim, req(user("FAIL MIDSTREAM")))


# --- streaming -----------------------------------------------------------------------------


def test_stream_text(sim: Any) -> None:
    chunks = stream(sim, req(user("stream this please"),
                             {"role": "system", "content": "S"}))
    assert sim.last_body["stream"] is True
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream this please [system=S]"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == 4 + PREAMBLE_TOKENS
    assert last.usage.completion_tokens == 5  # "Echo: stream this please [system=S]"
    assert all(c.model == MODEL and c.id == chunks[0].id for c in chunks)


def test_stream_tool_calls(sim: Any) -> None:
    chunks = stream(sim, req(user("use get_weather and get_time"), tools=[WEATHER, TIME]))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    firsts = [d for d in deltas if d.id is not None]
    assert [(d.index, d.function.name, d.type) for d in firsts] == [
        (0, "get_weather", "function"), (1, "get_time", "function")]
    assert deltas.index(firsts[1]) > deltas.index(firsts[0])
    args = {0: "", 1: ""}
    for d in deltas:
        args[d.index] += d.function.arguments or ""
    assert json.loads(args[0]) == {"city": "use get_weather and get_time"}
    assert json.loads(args[1]) == {"zone": "use get_weather and get_time"}
    assert len([d for d in deltas if d.id is None]) > 2  # arguments arrive in pieces
    plan = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert plan == "I will call get_weather and get_time."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_stream_failures(sim: Any) -> None:
    with pytest.raises(UpstreamError, match="mid-stream: internal error"):
        stream(sim, req(user("FAIL MIDSTREAM now")))
    with pytest.raises(UpstreamError, match="before message-end"):
        stream(sim, req(user("FAIL TRUNCATE now")))
    with pytest.raises(UpstreamRateLimited) as info:
        stream(sim, req(user("FAIL 429")))
    assert info.value.retry_after == 3


# --- errors and keys -----------------------------------------------------------------------


def test_error_statuses_map_to_gateway_errors(sim: Any) -> None:
    with pytest.raises(UpstreamRejected, match="simulated bad request"):
        complete(sim, req(user("FAIL 400")))
    with pytest.raises(UpstreamRateLimited) as info:
        complete(sim, req(user("FAIL 429")))
    assert info.value.retry_after == 3 and "Trial key" in str(info.value)
    with pytest.raises(UpstreamUnavailable):
        complete(sim, req(user("FAIL 500")))
    with pytest.raises(UpstreamUnavailable):
        complete(sim, req(user("FAIL 503")))


def test_simulator_refuses_openai_field_names(sim: Any) -> None:
    async def raw(_: CohereProvider) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.post(f"{sim.url}/v2/chat", json={
                "model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 0.5},
                headers={"Authorization": f"Bearer {API_KEY}"})

    response = run(sim, raw)
    assert response.status_code == 400
    assert "top_p" in response.json()["message"]


def test_wrong_key_is_our_fault_and_never_echoed(sim: Any) -> None:
    secret = "co-wrong-secret-key-999"
    with pytest.raises(UpstreamError) as info:
        complete(sim, req(user("hi")), api_key=secret)
    assert type(info.value) is UpstreamError
    assert "credentials" in str(info.value) and secret not in str(info.value)
    assert secret not in repr(build_provider(
        Deployment(provider="cohere", api_key=secret), ProviderContext(count_tokens=_words)))


def test_unreachable_upstream(sim: Any) -> None:
    with pytest.raises(UpstreamUnavailable, match="unreachable"):
        complete(sim, req(user("hi")), endpoint="http://127.0.0.1:9")


def test_keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = ProviderContext(count_tokens=_words)
    for env in ("CO_API_KEY", "COHERE_API_KEY"):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(ConfigError, match="CO_API_KEY or COHERE_API_KEY"):
        build_provider(Deployment(provider="cohere"), ctx)
    monkeypatch.setenv("COHERE_API_KEY", "from-cohere-var")
    p = build_provider(Deployment(provider="cohere"), ctx)
    assert p._headers["Authorization"] == "Bearer from-cohere-var"
    monkeypatch.setenv("CO_API_KEY", "from-co-var")
    p = build_provider(Deployment(provider="cohere"), ctx)
    assert p._headers["Authorization"] == "Bearer from-co-var"
    with pytest.raises(ConfigError, match="MY_COHERE"):
        build_provider(Deployment(provider="cohere", api_key_env="MY_COHERE"), ctx)
    assert isinstance(build_provider(Deployment(provider="cohere"), ctx), CohereProvider)
    assert "cohere" in PROVIDERS


def test_usage_estimated_when_absent() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "x", "finish_reason": "COMPLETE", "message": {
            "role": "assistant", "content": [{"type": "text", "text": "three word answer"}]}})

    async def main() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            p = build_provider(Deployment(provider="cohere", api_key="k",
                                          endpoint="http://cohere.test"),
                               ProviderContext(count_tokens=_words, http=http))
            return await p.complete(req(user("one two")))

    out = asyncio.run(main())
    assert out.usage.completion_tokens == 3
    assert out.usage.prompt_tokens == 3 + (3 + 2)  # reply priming + per-message overhead + words


# --- embeddings ----------------------------------------------------------------------------


def embed(sim: Any, **fields: Any) -> Any:
    request = msgspec.convert({"model": "embed-v4", **fields}, EmbeddingsRequest)
    return run(sim, lambda p: p.embed(request))


def test_embeddings(sim: Any) -> None:
    out = embed(sim, input=["first text here", "second"])
    assert sim.last_body == {"model": UPSTREAM, "texts": ["first text here", "second"],
                             "input_type": "search_document", "embedding_types": ["float"]}
    assert out.model == "embed-v4"
    assert [e.index for e in out.data] == [0, 1]
    assert len(out.data[0].embedding) == 1024
    assert abs(np.linalg.norm(out.data[0].embedding) - 1.0) < 1e-5
    assert out.data[0].embedding != out.data[1].embedding
    assert out.usage.prompt_tokens == 4 == out.usage.total_tokens


def test_embeddings_dimensions_base64_and_batches(sim: Any) -> None:
    out = embed(sim, input="just one", dimensions=256, encoding_format="base64")
    assert sim.last_body["output_dimension"] == 256
    vector = np.frombuffer(base64.b64decode(out.data[0].embedding), dtype="<f4")
    assert vector.shape == (256,)

    before = len(sim.bodies)
    texts = [f"text number {i}" for i in range(130)]
    out = embed(sim, input=texts)
    assert [len(b["texts"]) for b in sim.bodies[before:]] == [96, 34]
    assert [e.index for e in out.data] == list(range(130))
    assert out.usage.prompt_tokens == 3 * 130
    single = embed(sim, input="text number 100")
    assert np.allclose(out.data[100].embedding, single.data[0].embedding)


def test_embedding_errors(sim: Any) -> None:
    with pytest.raises(UpstreamRateLimited):
        embed(sim, input=["ok", "FAIL 429"])
    with pytest.raises(UpstreamRejected, match="output_dimension"):
        embed(sim, input="x", dimensions=100)


def test_malformed_named_tool_choice_is_rejected(sim: Any) -> None:
    with pytest.raises(UpstreamRejected, match="tool_choice"):
        complete(sim, req(user("hi"), tools=[WEATHER],
                          tool_choice={"type": "function", "function": "get_weather"}))
