"""The Anthropic adapter over real HTTP against the wire-format simulator (and the official SDK
against the simulator, to show the simulator speaks the real format)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from router.config import ConfigError, Deployment
from router.providers import (
    PROVIDERS,
    AnthropicProvider,
    AnthropicSettings,
    ChatRequest,
    ProviderContext,
    ProviderError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    build_provider,
)
from router.providers.anthropic import DEFAULT_MAX_TOKENS
from tests.unit.test_router.test_providers.harness import chat_request, collect, run
from tests.upstreams import serve
from tests.upstreams.anthropic import API_KEY, AnthropicSimulator

PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
         "rkJggg==")
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CLOCK = {"type": "function", "function": {"name": "get_time"}}


@pytest.fixture(scope="module")
def sim() -> AnthropicSimulator:
    return AnthropicSimulator()


@pytest.fixture(scope="module")
def url(sim) -> Iterator[str]:
    with serve(sim.app) as base:
        yield base


def deployment(url: str, **kw: Any) -> Deployment:
    return Deployment(provider="anthropic", model="claude-test-1", endpoint=url,
                      api_key=kw.pop("api_key", API_KEY), **kw)


def chat(messages: list[dict[str, Any]] | str, **kw: Any) -> ChatRequest:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return chat_request("claude-catalog", messages, **kw)


def complete(url: str, request: ChatRequest, **kw: Any):
    return run(deployment(url, **kw), lambda p: p.complete(request))


def stream(url: str, request: ChatRequest, **kw: Any) -> list:
    return run(deployment(url, **kw), lambda p: collect(p, request))


def error_of(fn: Any, *args: Any) -> ProviderError:
    with pytest.raises(ProviderError) as exc:
        fn(*args)
    assert API_KEY not in str(exc.value) and API_KEY not in repr(exc.value)
    return exc.value


# --- requests and answers ------------------------------------------------------------------


def test_registered_under_anthropic():
    assert PROVIDERS["anthropic"].settings is AnthropicSettings
    assert PROVIDERS["anthropic"].build == AnthropicProvider.from_settings


def test_text_completion_headers_and_defaults(url, sim):
    c = complete(url, chat("hello there"))
    assert c.choices[0].message.content == "Echo: hello there"
    assert c.choices[0].finish_reason == "stop"
    assert c.model == "claude-catalog"  # the catalog name, not the upstream id
    assert c.id.startswith("msg_sim")
    body, headers = sim.last_body, sim.last_headers
    assert body == {"model": "claude-test-1", "max_tokens": DEFAULT_MAX_TOKENS,
                    "messages": [{"role": "user",
                                  "content": [{"type": "text", "text": "hello there"}]}]}
    assert headers["x-api-key"] == API_KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json"
    assert c.usage.prompt_tokens == 2 and c.usage.completion_tokens == 3
    assert c.usage.total_tokens == 5


def test_api_version_extra_headers_and_endpoint_slash(url, sim):
    complete(url + "/", chat("hi"), api_version="2099-01-01",
             headers={"anthropic-beta": "some-beta-2025"})
    assert sim.last_headers["anthropic-version"] == "2099-01-01"
    assert sim.last_headers["anthropic-beta"] == "some-beta-2025"


def test_system_and_developer_messages_become_system_blocks(url, sim):
    c = complete(url, chat([{"role": "system", "content": "Be terse."},
                            {"role": "developer", "content": [{"type": "text",
                                                               "text": "Use SI units."}]},
                            {"role": "user", "content": "How far is the moon?"}]))
    assert sim.last_body["system"] == [{"type": "text", "text": "Be terse."},
                                       {"type": "text", "text": "Use SI units."}]
    assert all(m["role"] != "system" for m in sim.last_body["messages"])
    assert c.choices[0].message.content.endswith("| system: Be terse. Use SI units.")
    # The simulator reports the system prompt's 5 words as cache reads: they count as prompt.
    assert c.usage.prompt_tokens == 5 + 5


def test_multi_turn_merges_consecutive_same_role_turns(url, sim):
    c = complete(url, chat([{"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello! How can I help?"},
                            {"role": "user", "content": "First part."},
                            {"role": "user", "content": "Second part."}]))
    assert [m["role"] for m in sim.last_body["messages"]] == ["user", "assistant", "user"]
    assert sim.last_body["messages"][2]["content"] == [
        {"type": "text", "text": "First part."}, {"type": "text", "text": "Second part."}]
    assert c.choices[0].message.content == "Echo: First part. Second part."


def test_images_as_base64_and_url_sources(url, sim):
    c = complete(url, chat([{"role": "user", "content": [
        {"type": "text", "text": "Compare these"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}",
                                            "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]))
    blocks = sim.last_body["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                     "data": PIXEL}}
    assert blocks[2] == {"type": "image", "source": {"type": "url",
                                                     "url": "https://example.com/cat.jpg"}}
    assert c.choices[0].message.content.endswith(
        "images: base64 image/png, url https://example.com/cat.jpg")


@pytest.mark.parametrize("image_url", ["ftp://example.com/a.png",
                                       f"data:image/bmp;base64,{PIXEL}",
                                       "data:image/png,notbase64"])
def test_unsupported_images_are_rejected_before_any_call(url, sim, image_url):
    calls = sim.calls
    err = error_of(complete, url, chat([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_url}}]}]))
    assert isinstance(err, UpstreamRejected) and err.status == 400
    assert sim.calls == calls


def test_tool_call_with_preamble_text(url, sim):
    c = complete(url, chat("Weather in Paris?", tools=[WEATHER, CLOCK], tool_choice="auto"))
    assert sim.last_body["tools"] == [
        {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"],
         "description": "Current weather in a city"},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}]
    assert sim.last_body["tool_choice"] == {"type": "auto"}
    msg = c.choices[0].message
    assert c.choices[0].finish_reason == "tool_calls"
    assert msg.content == "Let me check."
    (call,) = msg.tool_calls
    assert call.type == "function" and call.id.startswith("toolu_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"query": "Weather in Paris?"}


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("required", None, {"type": "any"}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ({"type": "function", "function": {"name": "get_time"}}, None,
     {"type": "tool", "name": "get_time"}),
    ("none", None, {"type": "none"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    (None, None, None),
])
def test_tool_choice_mapping(url, sim, choice, parallel, expected):
    kw: dict[str, Any] = {"tools": [WEATHER, CLOCK]}
    if choice is not None:
        kw["tool_choice"] = choice
    if parallel is not None:
        kw["parallel_tool_calls"] = parallel
    c = complete(url, chat("What now?", **kw))
    assert sim.last_body.get("tool_choice") == expected
    if expected and expected["type"] == "tool":
        assert c.choices[0].message.tool_calls[0].function.name == "get_time"
        assert c.choices[0].message.content is None  # forced calls come without text
    if expected and expected["type"] == "none":
        assert c.choices[0].message.tool_calls is None
        assert c.choices[0].finish_reason == "stop"


def test_tool_choice_without_tools_is_not_sent(url, sim):
    complete(url, chat("hi", tool_choice="required"))
    assert "tool_choice" not in sim.last_body and "tools" not in sim.last_body


def test_tool_results_round_trip(url, sim):
    calls = [{"id": "toolu_a", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
             {"id": "toolu_b", "type": "function",
              "function": {"name": "get_time", "arguments": ""}}]
    c = complete(url, chat([
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": "Checking both.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "toolu_a", "content": '{"temp_c": 18}'},
        {"role": "tool", "tool_call_id": "toolu_b", "content": "14:05"},
        {"role": "user", "content": "Thanks!"}], tools=[WEATHER, CLOCK]))
    messages = sim.last_body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "text", "text": "Checking both."},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": '{"temp_c": 18}'},
        {"type": "tool_result", "tool_use_id": "toolu_b", "content": "14:05"},
        {"type": "text", "text": "Thanks!"}]
    assert c.choices[0].message.content.startswith(
        'Tool results: toolu_a={"temp_c": 18}; toolu_b=14:05')


def test_tool_arguments_that_are_not_an_object_are_rejected(url):
    call = {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}
    err = error_of(complete, url, chat([{"role": "user", "content": "x"},
                                        {"role": "assistant", "tool_calls": [call]},
                                        {"role": "tool", "tool_call_id": "t1", "content": "y"}]))
    assert isinstance(err, UpstreamRejected)


def test_json_object_format_is_a_system_instruction(url, sim):
    complete(url, chat("List three colours", response_format={"type": "json_object"}))
    (instruction,) = sim.last_body["system"]
    assert "single valid JSON object" in instruction["text"]


COLOURS = {"type": "object", "properties": {"colours": {"type": "array",
                                                       "items": {"type": "string"}},
                                           "count": {"type": "integer"}},
           "required": ["colours", "count"], "additionalProperties": False}


def test_json_schema_format_becomes_structured_outputs(url, sim):
    c = complete(url, chat([{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "List three colours"}],
                           response_format={"type": "json_schema", "json_schema": {
                               "name": "colours", "strict": True, "schema": COLOURS}}))
    assert sim.last_body["output_config"] == {"format": {"type": "json_schema",
                                                         "schema": COLOURS}}
    assert [b["text"] for b in sim.last_body["system"]] == ["Be brief."]  # no instruction
    assert json.loads(c.choices[0].message.content) == {"colours": ["List three colours"],
                                                        "count": 3}


def test_structured_outputs_stream_as_text(url, sim):
    fmt = {"type": "json_schema", "json_schema": {"name": "colours", "schema": COLOURS}}
    chunks = stream(url, chat("List three colours", response_format=fmt))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sim.last_body["output_config"]["format"]["schema"] == COLOURS
    assert json.loads(text)["count"] == 3


def test_a_schema_anthropic_cannot_enforce_is_the_callers_400(url, sim):
    loose = {"type": "object", "properties": {"colours": {"type": "array"}}}
    err = error_of(complete, url, chat("List three colours", response_format={
        "type": "json_schema", "json_schema": {"name": "colours", "schema": loose}}))
    assert isinstance(err, UpstreamRejected) and err.status == 400
    assert "additionalProperties" in str(err)


def test_json_schema_without_a_schema_is_an_instruction(url, sim):
    complete(url, chat("List three colours", response_format={
        "type": "json_schema", "json_schema": {"name": "colours"}}))
    assert "output_config" not in sim.last_body
    assert "single valid JSON object" in sim.last_body["system"][-1]["text"]


def test_sampling_stop_and_user_fields(url, sim):
    c = complete(url, chat("one two three STOP four", stop="STOP", temperature=1.5, top_p=0.5,
                           user="user-42", seed=7, presence_penalty=0.5))
    body = sim.last_body
    assert body["stop_sequences"] == ["STOP"]
    assert body["temperature"] == 1.0  # clamped to Anthropic's range
    assert "top_p" not in body  # newer Claude models refuse both: temperature wins
    assert body["metadata"] == {"user_id": "user-42"}
    assert "seed" not in body and "presence_penalty" not in body
    assert c.choices[0].message.content == "Echo: one two three "
    assert c.choices[0].finish_reason == "stop"


def test_top_p_alone_is_sent(url, sim):
    complete(url, chat("one two", top_p=0.3))
    assert sim.last_body["top_p"] == 0.3 and "temperature" not in sim.last_body


def test_max_tokens_cap_and_length_finish(url, sim):
    c = complete(url, chat("a b c d e f g", max_completion_tokens=3))
    assert sim.last_body["max_tokens"] == 3
    assert c.choices[0].message.content == "Echo: a b"
    assert c.choices[0].finish_reason == "length"


def test_refusal_is_content_filter(url):
    c = complete(url, chat("REFUSE this"))
    assert c.choices[0].finish_reason == "content_filter"
    assert c.choices[0].message.content == ""


# --- streaming -----------------------------------------------------------------------------


def test_stream_text_matches_complete_and_ends_with_usage(url, sim):
    request = chat([{"role": "system", "content": "Be kind."},
                    {"role": "user", "content": "tell me a story"}])
    whole = complete(url, request)
    chunks = stream(url, request)
    assert sim.last_body["stream"] is True
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert {c.model for c in chunks} == {"claude-catalog"}
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("msg_sim")


def test_stream_tool_calls(url):
    chunks = stream(url, chat("Weather in Oslo?", tools=[WEATHER]))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    first = deltas[0]
    assert (first.index, first.type, first.function.name) == (0, "function", "get_weather")
    assert first.id.startswith("toolu_")
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    assert len(deltas) >= 3  # the arguments arrive in pieces
    args = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(args) == {"query": "Weather in Oslo?"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me check."
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage.completion_tokens == 3 + 10  # "Let me check." + a tool call


def test_stream_max_tokens_finish_is_length(url):
    chunks = stream(url, chat("a b c d e f g", max_tokens=2))
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 2


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(("trigger", "cls", "status"), [
    ("FAIL 400", UpstreamRejected, 400),
    ("FAIL 401", UpstreamError, 502),
    ("FAIL 429", UpstreamRateLimited, 429),
    ("FAIL 500", UpstreamUnavailable, 503),
    ("FAIL 529", UpstreamUnavailable, 503),
])
@pytest.mark.parametrize("streaming", [False, True])
def test_error_statuses_map_to_provider_errors(url, trigger, cls, status, streaming):
    err = error_of(stream if streaming else complete, url, chat(trigger))
    assert type(err) is cls and err.status == status
    if cls is UpstreamRateLimited:
        assert err.retry_after == 7
    if cls is UpstreamRejected:
        assert "simulated failure (FAIL 400)" in str(err)  # the upstream's own message


def test_wrong_key_is_a_gateway_error_without_the_key(url):
    with pytest.raises(UpstreamError) as exc:
        complete(url, chat("hi"), api_key="sk-ant-wrong-key-123")
    assert "sk-ant-wrong-key-123" not in str(exc.value)
    assert "credentials" in str(exc.value)


def test_error_event_mid_stream_raises_after_first_chunks(url):
    got: list = []

    async def consume(p):
        async for chunk in p.stream(chat("FAIL MIDSTREAM please")):
            got.append(chunk)

    with pytest.raises(UpstreamUnavailable) as exc:
        run(deployment(url), consume)
    assert "Overloaded" in str(exc.value)
    assert got[0].choices[0].delta.role == "assistant"
    assert got[-1].choices[0].delta.content == "Echo: "


def test_simulator_rejects_wrong_shapes_with_anthropic_errors(url):
    r = httpx.post(f"{url}/v1/messages", headers={"x-api-key": API_KEY,
                                                  "anthropic-version": "2023-06-01"},
                   json={"model": "m", "max_tokens": 5,
                         "messages": [{"role": "user", "content": [{"type": "text"}]}]})
    assert r.status_code == 400
    assert r.json() == {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "messages.0.content.0: Object missing required field `text`"}}
    r = httpx.post(f"{url}/v1/messages", headers={"x-api-key": API_KEY},
                   json={"model": "m", "max_tokens": 5,
                         "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]


def test_connection_refused_is_unavailable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = error_of(complete, f"http://127.0.0.1:{port}", chat("hi"))
    assert isinstance(err, UpstreamUnavailable)


def _mock_stream(body: bytes) -> list:
    async def run():
        transport = httpx.MockTransport(lambda _req: httpx.Response(
            200, content=body, headers={"content-type": "text/event-stream"}))
        async with httpx.AsyncClient(transport=transport) as http:
            p = AnthropicProvider(deployment("http://upstream.test"), API_KEY, http)
            return [c async for c in p.stream(chat("hi"))]
    return asyncio.run(run())


def test_stream_cut_before_message_stop_is_an_upstream_error():
    start = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
             b'"type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,'
             b'"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}}\n\n')
    with pytest.raises(UpstreamError, match="before message_stop"):
        _mock_stream(start)
    with pytest.raises(UpstreamError, match="not JSON"):
        _mock_stream(start + b"event: content_block_delta\ndata: {oops\n\n")


def test_stream_skips_thinking_and_unknown_events():
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "usage": {
            "input_tokens": 3, "cache_creation_input_tokens": 2, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "some_future_event"},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 4, "input_tokens": 5}},
        {"type": "message_stop"}]
    body = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
    chunks = _mock_stream(body)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi"
    assert chunks[-1].usage.prompt_tokens == 5 + 2 and chunks[-1].usage.completion_tokens == 4


# --- configuration -------------------------------------------------------------------------


def test_missing_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        build_provider(Deployment(provider="anthropic"), ProviderContext(count_tokens=len))


def test_key_from_environment_never_in_repr(monkeypatch):
    monkeypatch.setenv("MY_CLAUDE_KEY", "sk-ant-from-env-999")

    async def check():
        async with httpx.AsyncClient() as http:
            p = build_provider(
                Deployment(provider="anthropic", api_key_env="MY_CLAUDE_KEY"),
                ProviderContext(count_tokens=len, http=http))
            assert p._headers["x-api-key"] == "sk-ant-from-env-999"
            assert "sk-ant-from-env-999" not in repr(p)
            assert "api.anthropic.com/v1/messages" in repr(p)

    asyncio.run(check())


# --- the simulator speaks the real wire format ---------------------------------------------


def test_official_sdk_against_the_simulator(url):
    tool = {"name": "get_weather", "description": "Weather",
            "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}
    with anthropic.Anthropic(base_url=url, api_key=API_KEY, max_retries=0) as client:
        msg = client.messages.create(model="claude-x", max_tokens=100, system="Be brief.",
                                     messages=[{"role": "user", "content": "hello"}])
        assert msg.content[0].text == "Echo: hello | system: Be brief."
        assert msg.stop_reason == "end_turn" and msg.usage.input_tokens == 1

        with client.messages.stream(model="claude-x", max_tokens=100,
                                    messages=[{"role": "user", "content": "stream me"}]) as s:
            streamed = "".join(s.text_stream)
            final = s.get_final_message()
        assert streamed == final.content[0].text == "Echo: stream me"
        assert final.usage.output_tokens == 3

        with client.messages.stream(model="claude-x", max_tokens=100, tools=[tool],
                                    tool_choice={"type": "any"},
                                    messages=[{"role": "user", "content": "rain?"}]) as s:
            final = s.get_final_message()
        (use,) = final.content
        assert use.type == "tool_use" and use.input == {"query": "rain?"}
        assert final.stop_reason == "tool_use"

        follow_up = client.messages.create(model="claude-x", max_tokens=100, tools=[tool],
                                           messages=[
            {"role": "user", "content": "rain?"},
            {"role": "assistant", "content": [use.model_dump(include={"type", "id", "name",
                                                                      "input"})]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": "light rain"}]}])
        assert follow_up.content[0].text == f"Tool results: {use.id}=light rain"

        with pytest.raises(anthropic.OverloadedError):
            client.messages.create(model="claude-x", max_tokens=10,
                                   messages=[{"role": "user", "content": "FAIL 529"}])
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(model="claude-x", max_tokens=10,
                                   messages=[{"role": "user", "content": "FAIL 429"}])


def _mock_complete(body: bytes, request: ChatRequest | None = None):
    async def run():
        transport = httpx.MockTransport(lambda _req: httpx.Response(
            200, content=body, headers={"content-type": "application/json"}))
        async with httpx.AsyncClient(transport=transport) as http:
            p = AnthropicProvider(deployment("http://upstream.test"), API_KEY, http)
            return await p.complete(request or chat("hi"))
    return asyncio.run(run())


@pytest.mark.parametrize("body", [
    b'{"content": ["not a block"]}', b'{"content": [], "usage": [1]}', b'[1, 2]',
    b'{"content": [{"type": "tool_use", "name": "f"}]}'])
def test_unexpected_message_body_is_an_upstream_error(body):
    with pytest.raises(UpstreamError, match="unexpected body"):
        _mock_complete(body)


@pytest.mark.parametrize("event", [
    b'event: content_block_start\ndata: {"type":"content_block_start",'
    b'"content_block":{"type":"text","text":""}}\n\n',  # no index
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"tool_use","name":"f"}}\n\n',  # no id
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":"x",'
    b'"delta":{"type":"text_delta","text":"a"}}\n\n',  # not an int
    b'event: ping\ndata: [1]\n\n'])  # not an object
def test_unexpected_stream_event_is_an_upstream_error(event):
    with pytest.raises(UpstreamError, match="unexpected"):
        _mock_stream(event)


def test_malformed_named_tool_choice_is_rejected():
    request = chat("hi", tools=[WEATHER],
                   tool_choice={"type": "function", "function": "get_weather"})
    with pytest.raises(UpstreamRejected, match="tool_choice"):
        _mock_complete(b"{}", request)
