"""The Gemini adapters (``gemini``: API key; ``vertex``: Vertex AI) over real HTTP against the
wire-format simulator in ``tests/upstreams/gemini.py``."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from router.config import ConfigError, Deployment
from router.providers import (
    GeminiProvider,
    ProviderContext,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    build_provider,
)
from router.providers.gemini import SKIP_SIGNATURE
from router.wire.openai import (
    EMBEDDINGS_DECODER,
    REQUEST_DECODER,
    ChatCompletionChunk,
    ChatRequest,
)
from tests.unit.test_router.test_providers import harness
from tests.unit.test_router.test_providers.harness import collect
from tests.upstreams import serve
from tests.upstreams.gemini import GeminiSimulator

KEY = "sim-gemini-key"
TOKEN = "sim-vertex-token"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def upstream():
    sim = GeminiSimulator(api_key=KEY, token=TOKEN, project="sim-project")
    with serve(sim.app) as url:
        yield sim, url


@pytest.fixture()
def sim(upstream) -> GeminiSimulator:
    return upstream[0]


@pytest.fixture()
def gemini(upstream) -> Deployment:
    return Deployment(provider="gemini", model="gemini-2.0-flash", endpoint=upstream[1],
                      api_key=KEY)


@pytest.fixture()
def vertex(upstream) -> Deployment:
    return Deployment(provider="vertex", model="gemini-2.0-flash", endpoint=upstream[1],
                      api_key=TOKEN, project="sim-project", region="us-central1")


def chat(**fields: Any) -> ChatRequest:
    fields.setdefault("model", "gemini-flash")
    return REQUEST_DECODER.decode(json.dumps(fields))


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def run(deployment: Deployment, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """``fn(provider)`` in a fresh event loop, with a provider built as the gateway builds it."""
    return harness.run(deployment, fn)


def complete(deployment: Deployment, **fields: Any):
    return run(deployment, lambda p: p.complete(chat(**fields)))


def stream(deployment: Deployment, **fields: Any) -> list[ChatCompletionChunk]:
    return run(deployment, lambda p: collect(p, chat(**fields)))


# --- text -----------------------------------------------------------------------------------


def test_text_completion_over_the_gemini_api(sim, gemini):
    out = complete(gemini, messages=user("hello there"))
    assert out.model == "gemini-flash"  # the catalog name, not the upstream id
    assert out.choices[0].message.content == "Echo: hello there"
    assert out.choices[0].finish_reason == "stop"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == \
        (2, 3, 5)
    req = sim.last
    assert req["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert req["headers"]["x-goog-api-key"] == KEY
    assert "key" not in req["query"]  # the key travels in a header, never in the URL
    assert req["body"] == {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}


def test_system_developer_and_multi_turn(sim, gemini):
    complete(gemini, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "second"},
        {"role": "user", "content": [{"type": "text", "text": "third"}]},
    ])
    body = sim.last["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."},
                                                   {"text": "Answer in English."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "first"}]},
        {"role": "model", "parts": [{"text": "reply"}]},
        {"role": "user", "parts": [{"text": "second"}, {"text": "third"}]},  # merged
    ]


def test_only_system_messages_is_rejected_before_the_call(sim, gemini):
    before = len(sim.requests)
    with pytest.raises(UpstreamRejected, match="at least one user"):
        complete(gemini, messages=[{"role": "system", "content": "x"}])
    assert len(sim.requests) == before


def test_generation_config(sim, gemini):
    complete(gemini, messages=user("hi"), temperature=0.3, top_p=0.9, max_tokens=50,
             stop="STOP", seed=7, presence_penalty=0.5, frequency_penalty=0.25, user="u-1",
             parallel_tool_calls=True)
    assert sim.last["body"]["generationConfig"] == {
        "temperature": 0.3, "topP": 0.9, "maxOutputTokens": 50, "stopSequences": ["STOP"],
        "seed": 7, "presencePenalty": 0.5, "frequencyPenalty": 0.25}
    # the newer field wins, as in OpenAI's API
    complete(gemini, messages=user("hi"), max_tokens=50, max_completion_tokens=9)
    assert sim.last["body"]["generationConfig"]["maxOutputTokens"] == 9


def test_max_tokens_gives_finish_reason_length(gemini):
    out = complete(gemini, messages=user("one two three four five"), max_tokens=2)
    assert out.choices[0].finish_reason == "length"
    assert out.choices[0].message.content == "Echo: one"


# --- images ---------------------------------------------------------------------------------


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def image_message(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                         {"type": "image_url",
                                          "image_url": {"url": url, "detail": "high"}}]}]


def test_data_url_image_is_sent_inline(sim, gemini):
    out = complete(gemini, messages=image_message(f"data:image/png;base64,{PNG}"))
    assert sim.last["body"]["contents"][0]["parts"] == [
        {"text": "what is this?"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}]
    assert out.usage.prompt_tokens == 3 + 258  # the simulator bills an image like Gemini


def test_https_image_is_file_data_on_the_gemini_api(sim, gemini):
    complete(gemini, messages=image_message("https://example.com/cat.jpg"))
    assert sim.last["body"]["contents"][0]["parts"][1] == {
        "fileData": {"fileUri": "https://example.com/cat.jpg", "mimeType": "image/jpeg"}}


@pytest.mark.parametrize("url, match", [
    ("gs://bucket/cat.png", "gs://"),
    ("http://example.com/cat.png", "not http URLs"),
    ("data:image/png,rawbytes", "base64"),
])
def test_unsupported_images_are_rejected_on_the_gemini_api(sim, gemini, url, match):
    before = len(sim.requests)
    with pytest.raises(UpstreamRejected, match=match):
        complete(gemini, messages=image_message(url))
    assert len(sim.requests) == before  # refused here, not downloaded, not sent


def test_vertex_takes_gs_and_http_urls_with_a_mime_type(sim, vertex):
    complete(vertex, messages=image_message("gs://bucket/cat.png"))
    assert sim.last["body"]["contents"][0]["parts"][1] == {
        "fileData": {"fileUri": "gs://bucket/cat.png", "mimeType": "image/png"}}
    complete(vertex, messages=image_message("http://example.com/a.webp"))
    assert sim.last["body"]["contents"][0]["parts"][1]["fileData"]["mimeType"] == "image/webp"
    with pytest.raises(UpstreamRejected, match="MIME type"):
        complete(vertex, messages=image_message("https://example.com/image?id=3"))


# --- tools ----------------------------------------------------------------------------------


def test_tool_call_and_result_round_trip(sim, gemini):
    async def two_turns(provider: GeminiProvider):
        messages = user('CALL get_weather {"city": "Paris"}')
        first = await provider.complete(chat(messages=messages, tools=[WEATHER],
                                             tool_choice="auto"))
        first_body = sim.last["body"]
        call = first.choices[0].message.tool_calls[0]
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function",
                 "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
        ]
        second = await provider.complete(chat(messages=messages, tools=[WEATHER]))
        return first, first_body, second, sim.last["body"]

    first, first_body, second, second_body = run(gemini, two_turns)
    assert first_body["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "OBJECT", "required": ["city"],
                       "properties": {"city": {"type": "STRING"}}}}]}]
    assert first_body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    model_turn, result_turn = second_body["contents"][1:]
    assert model_turn["role"] == "model"
    assert model_turn["parts"][0]["functionCall"] == {"name": "get_weather",
                                                      "args": {"city": "Paris"}}
    # the signature the model gave this call goes back with it (Gemini 3 requires it)
    assert model_turn["parts"][0]["thoughtSignature"] in sim.signatures
    assert result_turn == {"role": "user", "parts": [{"functionResponse": {
        "name": "get_weather", "response": {"temp": 21}}}]}
    assert second.choices[0].message.content == 'tool results: get_weather={"temp": 21}'
    assert second.choices[0].finish_reason == "stop"


def test_foreign_tool_calls_get_the_skip_placeholder(sim, gemini):
    """Calls this process did not see (another model's) carry Google's placeholder on the first
    call of the turn, so Gemini 3 accepts the history; results that are not JSON objects go
    under "output"."""
    lookup = {"type": "function", "function": {"name": "lookup"}}  # no parameters at all
    out = complete(gemini, tools=[WEATHER, lookup], messages=[
        {"role": "user", "content": "weather and lookup"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            {"id": "toolu_2", "type": "function",
             "function": {"name": "lookup", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "[1, 2]"},
    ])
    body = sim.last["body"]
    assert body["tools"][0]["functionDeclarations"][1] == {"name": "lookup"}
    model_parts = body["contents"][1]["parts"]
    assert model_parts[0] == {"text": "Checking."}
    assert model_parts[1]["thoughtSignature"] == SKIP_SIGNATURE
    assert "thoughtSignature" not in model_parts[2]  # only the first call of a turn is signed
    assert model_parts[2]["functionCall"] == {"name": "lookup", "args": {}}
    assert body["contents"][2]["parts"] == [  # both results in one turn, names recovered
        {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}},
        {"functionResponse": {"name": "lookup", "response": {"output": [1, 2]}}}]
    assert out.choices[0].message.content.startswith("tool results: get_weather=")


def test_tool_result_for_an_unknown_call_is_rejected(gemini):
    with pytest.raises(UpstreamRejected, match="needs the function's name"):
        complete(gemini, messages=[{"role": "user", "content": "x"},
                                   {"role": "tool", "tool_call_id": "nope", "content": "1"}])


def test_invalid_tool_arguments_are_rejected(gemini):
    with pytest.raises(UpstreamRejected, match="not valid JSON"):
        complete(gemini, messages=[
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "get_weather", "arguments": "{oops"}}]}])


@pytest.mark.parametrize("choice, config, called", [
    ("none", {"mode": "NONE"}, False),
    ("required", {"mode": "ANY"}, True),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}, True),
])
def test_tool_choice(sim, gemini, choice, config, called):
    out = complete(gemini, messages=user("what now?"), tools=[WEATHER], tool_choice=choice)
    assert sim.last["body"]["toolConfig"] == {"functionCallingConfig": config}
    assert bool(out.choices[0].message.tool_calls) is called
    assert out.choices[0].finish_reason == ("tool_calls" if called else "stop")


def test_json_schema_is_converted_to_gemini_schema(sim, gemini):
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object", "additionalProperties": False, "required": ["city", "tags"],
        "properties": {
            "city": {"$ref": "#/$defs/City"},
            "note": {"type": ["string", "null"], "format": "uri"},
            "kind": {"const": "report"},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
            "when": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
        },
        "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}}}},
    }
    out = complete(gemini, messages=user("report"), response_format={
        "type": "json_schema", "json_schema": {"name": "r", "schema": schema, "strict": True}})
    config = sim.last["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {
        "type": "OBJECT", "required": ["city", "tags"], "properties": {
            "city": {"type": "OBJECT", "properties": {"name": {"type": "STRING"}}},
            "note": {"type": "STRING", "nullable": True},
            "kind": {"type": "STRING", "enum": ["report"]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a", "b"]}},
            "when": {"type": "STRING", "format": "date-time", "nullable": True},
        }}
    assert json.loads(out.choices[0].message.content) == {"echo": "report", "schema": True}


def test_incompatible_schema_falls_back_to_json_mode(sim, gemini):
    tree = {"type": "object", "properties": {"children": {
        "type": "array", "items": {"$ref": "#/$defs/Node"}}}, "$defs": {"Node": {
            "type": "object", "properties": {"kids": {"type": "array",
                                                      "items": {"$ref": "#/$defs/Node"}}}}}}
    complete(gemini, messages=user("tree"), response_format={
        "type": "json_schema", "json_schema": {"name": "t", "schema": tree}})
    assert sim.last["body"]["generationConfig"] == {"responseMimeType": "application/json"}
    complete(gemini, messages=user("obj"), response_format={"type": "json_object"})
    assert sim.last["body"]["generationConfig"] == {"responseMimeType": "application/json"}


def test_incompatible_tool_schema_is_rejected(sim, gemini):
    tool = {"type": "function", "function": {"name": "pick", "parameters": {
        "type": "object", "properties": {"n": {"enum": [1, 2, 3]}}}}}
    with pytest.raises(UpstreamRejected, match="pick"):
        complete(gemini, messages=user("x"), tools=[tool])


# --- streaming ------------------------------------------------------------------------------


def test_stream_text(sim, gemini):
    chunks = stream(gemini, messages=user("a b c d e"))
    assert sim.last["path"] == "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    assert sim.last["query"] == {"alt": "sse"}
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert len(pieces) > 1 and "".join(pieces) == "Echo: a b c d e"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 6  # from the last (cumulative) chunk
    assert chunks[-1].usage.total_tokens == 5 + 6
    assert {c.model for c in chunks} == {"gemini-flash"}
    assert len({c.id for c in chunks}) == 1


def test_stream_tool_calls(gemini):
    chunks = stream(gemini, messages=user('CALL get_weather {"city": "Rome"}\nCALL get_weather '
                                          '{"city": "Nice"}'), tools=[WEATHER])
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [(d.index, d.function.name, d.function.arguments) for d in deltas] == [
        (0, "get_weather", ""), (0, None, '{"city": "Rome"}'),
        (1, "get_weather", ""), (1, None, '{"city": "Nice"}')]
    assert deltas[0].id.startswith("call_") and deltas[0].type == "function"
    assert deltas[2].id != deltas[0].id
    assert deltas[1].id is None  # argument pieces carry no id, as in OpenAI's stream
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage.completion_tokens == 20


def test_usage_counts_thinking_tokens_as_completion(upstream):
    think = Deployment(provider="gemini", model="gemini-think", endpoint=upstream[1],
                       api_key=KEY)
    out = complete(think, messages=user("x y"))
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == \
        (2, 3 + 7, 12)
    chunks = stream(think, messages=user("x y"))
    assert chunks[-1].usage.completion_tokens == 10


def test_sse_framing_is_googles(upstream):
    """The simulator's stream is what the API sends: data-only events, CRLF CRLF, no [DONE]."""
    _, url = upstream
    r = httpx.post(f"{url}/v1beta/models/m:streamGenerateContent?alt=sse",
                   headers={"x-goog-api-key": KEY},
                   json={"contents": [{"parts": [{"text": "one two three"}]}]})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = r.text.split("\r\n\r\n")
    assert events[-1] == "" and all(e.startswith("data: {") for e in events[:-1])
    last = json.loads(events[-2].removeprefix("data: "))
    assert last["candidates"][0]["finishReason"] == "STOP"


# --- safety ---------------------------------------------------------------------------------


def test_safety_finish_is_content_filter(gemini):
    out = complete(gemini, messages=user("FAIL SAFETY"))
    assert out.choices[0].finish_reason == "content_filter"
    assert out.choices[0].message.content is None
    chunks = stream(gemini, messages=user("FAIL SAFETY"))
    assert chunks[-2].choices[0].finish_reason == "content_filter"


def test_blocked_prompt_is_an_empty_content_filter_answer(gemini):
    out = complete(gemini, messages=user("FAIL BLOCK now"))
    assert out.choices[0].finish_reason == "content_filter"
    assert out.choices[0].message.content is None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (3, 0)
    chunks = stream(gemini, messages=user("FAIL BLOCK now"))
    assert chunks[-2].choices[0].finish_reason == "content_filter"
    assert chunks[-1].usage.prompt_tokens == 3


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command, error", [
    ("FAIL 400", UpstreamRejected),
    ("FAIL 429", UpstreamRateLimited),
    ("FAIL 500", UpstreamUnavailable),
    ("FAIL 503", UpstreamUnavailable),
])
def test_errors_map_over_http(gemini, vertex, command, error):
    for deployment in (gemini, vertex):
        with pytest.raises(error) as caught:
            complete(deployment, messages=user(command))
        with pytest.raises(error):
            stream(deployment, messages=user(command))
    if error is UpstreamRateLimited:
        assert caught.value.retry_after == 7.0  # from google.rpc.RetryInfo in the body
    if error is UpstreamRejected:
        assert "Request contains an invalid argument." in str(caught.value)


def test_error_event_mid_stream(gemini):
    seen: list[ChatCompletionChunk] = []

    async def consume(provider):
        async for chunk in provider.stream(chat(messages=user("FAIL MIDSTREAM please"))):
            seen.append(chunk)

    with pytest.raises(UpstreamUnavailable, match="overloaded"):
        run(gemini, consume)
    assert any(c.choices and c.choices[0].delta.content for c in seen)


def test_stream_cut_short_is_an_error(gemini):
    with pytest.raises(UpstreamError, match="finish reason"):
        stream(gemini, messages=user("FAIL CUT here"))


def test_wrong_api_key_is_a_credentials_error_without_the_key(upstream):
    bad = Deployment(provider="gemini", model="m", endpoint=upstream[1],
                     api_key="wrong-secret-123")
    with pytest.raises(UpstreamError) as caught:
        complete(bad, messages=user("hi"))
    assert not isinstance(caught.value, UpstreamRejected)  # Google says 400; it is our key
    assert "credentials" in str(caught.value)
    assert "wrong-secret-123" not in str(caught.value)
    assert "wrong-secret-123" not in repr(build_provider(bad, ProviderContext(len)))


def test_expired_vertex_token_is_a_credentials_error(upstream):
    bad = Deployment(provider="vertex", model="m", endpoint=upstream[1], api_key="expired-tok",
                     project="sim-project", region="us-central1")
    with pytest.raises(UpstreamError) as caught:
        stream(bad, messages=user("hi"))
    assert "credentials" in str(caught.value) and "expired-tok" not in str(caught.value)


# --- keys and configuration -----------------------------------------------------------------


def test_missing_key_is_a_config_error(monkeypatch):
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_ACCESS_TOKEN", "MY_KEY"):
        monkeypatch.delenv(var, raising=False)
    ctx = ProviderContext(len)
    with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
        build_provider(Deployment(provider="gemini"), ctx)
    with pytest.raises(ConfigError, match="MY_KEY"):
        build_provider(Deployment(provider="gemini", api_key_env="MY_KEY"), ctx)
    with pytest.raises(ConfigError, match="GOOGLE_ACCESS_TOKEN"):
        build_provider(Deployment(provider="vertex", project="p",
                                                  region="us-central1"), ctx)
    with pytest.raises(ConfigError, match="project and region"):
        build_provider(Deployment(provider="vertex", api_key="t"), ctx)


def test_key_from_environment_with_google_api_key_fallback(monkeypatch, sim, upstream):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    deployment = Deployment(provider="gemini", model="gemini-2.0-flash", endpoint=upstream[1])
    assert complete(deployment, messages=user("env")).choices[0].message.content == "Echo: env"
    monkeypatch.setenv("GEMINI_API_KEY", "preferred")
    provider = build_provider(deployment, ProviderContext(len))
    assert provider._headers["x-goog-api-key"] == "preferred"  # GEMINI_API_KEY wins


def test_vertex_paths_and_auth(sim, vertex):
    out = complete(vertex, messages=user("on vertex"))
    assert out.choices[0].message.content == "Echo: on vertex"
    assert sim.last["path"] == ("/v1/projects/sim-project/locations/us-central1/publishers/"
                                "google/models/gemini-2.0-flash:generateContent")
    assert sim.last["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert "x-goog-api-key" not in sim.last["headers"]
    stream(vertex, messages=user("streamed"))
    assert sim.last["path"].endswith(":streamGenerateContent") and sim.last["query"] == \
        {"alt": "sse"}


def test_default_urls():
    ctx = ProviderContext(len)
    regional = build_provider(Deployment(
        provider="vertex", api_key="t", project="p1", region="europe-west4"), ctx)
    assert regional._model_url("gemini-2.5-pro", "generateContent") == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/p1/locations/europe-west4/"
        "publishers/google/models/gemini-2.5-pro:generateContent")
    world = build_provider(Deployment(
        provider="vertex", api_key="t", project="p1", region="global"), ctx)
    assert world._model_url("gemini-2.5-pro", "predict").startswith(
        "https://aiplatform.googleapis.com/v1/projects/p1/locations/global/")
    api = build_provider(Deployment(provider="gemini", api_key="k"), ctx)
    assert api._model_url("gemini-2.0-flash", "generateContent") == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:"
        "generateContent")
    v1 = build_provider(Deployment(provider="gemini", api_key="k",
                                                   api_version="v1"), ctx)
    assert v1._model_url("models/gemini-2.0-flash", "embedContent").endswith(
        "/v1/models/gemini-2.0-flash:embedContent")


def test_simulator_refuses_what_gemini_refuses(upstream):
    _, url = upstream

    def post(body: dict) -> httpx.Response:
        return httpx.post(f"{url}/v1beta/models/m:generateContent",
                          headers={"x-goog-api-key": KEY}, json=body)

    bad_schema = {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "tools": [
        {"functionDeclarations": [{"name": "f", "parameters": {
            "type": "object", "additionalProperties": False,
            "properties": {"a": {"type": "string"}}}}]}]}
    for body in (bad_schema, {"contents": []}, {"contents": [{"role": "bot", "parts": [
            {"text": "x"}]}]}, {"contents": [{"parts": []}]}, {"prompt": "x"}):
        r = post(body)
        assert r.status_code == 400, body
        assert r.json()["error"]["status"] == "INVALID_ARGUMENT"
    no_key = httpx.post(f"{url}/v1beta/models/m:generateContent", json={})
    assert no_key.status_code == 403 and no_key.json()["error"]["code"] == 403


# --- embeddings -----------------------------------------------------------------------------


def embed_request(**fields: Any):
    fields.setdefault("model", "gemini-embed")
    return EMBEDDINGS_DECODER.decode(json.dumps(fields))


def test_gemini_embeddings_batch_in_hundreds(sim, upstream):
    deployment = Deployment(provider="gemini", model="gemini-embedding-001",
                            endpoint=upstream[1], api_key=KEY)
    texts = [f"text number {i}" for i in range(150)]
    before = len(sim.requests)
    out = run(deployment, lambda p: p.embed(embed_request(input=texts, dimensions=4)))
    calls = sim.requests[before:]
    assert [len(c["body"]["requests"]) for c in calls] == [100, 50]
    assert calls[0]["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert calls[0]["body"]["requests"][0] == {
        "model": "models/gemini-embedding-001", "content": {"parts": [{"text": "text number 0"}]},
        "outputDimensionality": 4}
    assert out.model == "gemini-embed"
    assert [e.index for e in out.data] == list(range(150))
    assert len(out.data[0].embedding) == 4
    assert out.data[149].embedding != out.data[0].embedding  # order kept, not repeated
    assert out.usage.prompt_tokens == 3 * 150  # estimated: the API reports no counts


def test_gemini_embeddings_base64(upstream):
    deployment = Deployment(provider="gemini", model="gemini-embedding-001",
                            endpoint=upstream[1], api_key=KEY)
    floats = run(deployment, lambda p: p.embed(embed_request(input="hi")))
    packed = run(deployment, lambda p: p.embed(embed_request(input="hi",
                                                             encoding_format="base64")))
    raw = base64.b64decode(packed.data[0].embedding)
    assert struct.unpack(f"<{len(raw) // 4}f", raw) == pytest.approx(floats.data[0].embedding)


def test_embedding_errors_map(upstream):
    deployment = Deployment(provider="gemini", model="gemini-embedding-001",
                            endpoint=upstream[1], api_key=KEY)
    with pytest.raises(UpstreamRateLimited):
        run(deployment, lambda p: p.embed(embed_request(input=["ok", "FAIL 429"])))
    on_vertex = Deployment(provider="vertex", model="gemini-embedding-001",
                           endpoint=upstream[1], api_key=TOKEN, project="sim-project",
                           region="us-central1")
    with pytest.raises(UpstreamUnavailable):  # from one of several parallel calls
        run(on_vertex, lambda p: p.embed(embed_request(input=["ok", "FAIL 503", "fine"])))


def test_vertex_embeddings_use_predict(sim, upstream):
    def deployment(model: str) -> Deployment:
        return Deployment(provider="vertex", model=model, endpoint=upstream[1], api_key=TOKEN,
                          project="sim-project", region="us-central1")

    before = len(sim.requests)
    out = run(deployment("text-embedding-005"),
              lambda p: p.embed(embed_request(input=["a b", "c d e", "f"], dimensions=3)))
    # Only this model's calls: a parallel call the test before abandoned (one of its siblings
    # failed) may still reach the simulator after ``before`` was taken.
    (call,) = [c for c in sim.requests[before:] if "text-embedding-005" in c["path"]]
    assert call["path"].endswith("/publishers/google/models/text-embedding-005:predict")
    assert call["body"] == {"instances": [{"content": "a b"}, {"content": "c d e"},
                                          {"content": "f"}],
                            "parameters": {"outputDimensionality": 3}}
    assert out.usage.prompt_tokens == 6  # statistics.token_count, summed
    assert [len(e.embedding) for e in out.data] == [3, 3, 3]

    before = len(sim.requests)
    out = run(deployment("gemini-embedding-001"),
              lambda p: p.embed(embed_request(input=["a", "b", "c"])))
    assert len(sim.requests) - before == 3  # one instance per request for this model
    assert {len(c["body"]["instances"]) for c in sim.requests[before:]} == {1}
    texts = [c["body"]["instances"][0]["content"] for c in sim.requests[before:]]
    assert sorted(texts) == ["a", "b", "c"]
    assert len({tuple(e.embedding) for e in out.data}) == 3


def _mocked(body: bytes, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """``fn(provider)`` against an upstream that answers 200 with ``body``."""
    async def main() -> Any:
        transport = httpx.MockTransport(lambda _req: httpx.Response(
            200, content=body, headers={"content-type": "text/event-stream"}))
        async with httpx.AsyncClient(transport=transport) as http:
            provider = build_provider(
                Deployment(provider="gemini", model="gemini-x", endpoint="http://g.test",
                           api_key="k"),
                ProviderContext(count_tokens=lambda t: len(t.split()), http=http))
            return await fn(provider)
    return asyncio.run(main())


@pytest.mark.parametrize("answer", [
    {"candidates": [{"content": ["x"], "finishReason": "STOP"}]},
    {"candidates": {"0": {}}},
    {"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": None}}])
def test_unexpected_answer_shapes_are_upstream_errors(answer):
    body = json.dumps(answer).encode()
    with pytest.raises(UpstreamError, match=r"unexpected body|usageMetadata"):
        _mocked(body, lambda p: p.complete(chat(messages=user("hi"))))
    with pytest.raises(UpstreamError, match=r"unexpected body|usageMetadata"):
        _mocked(b"data: " + body + b"\n\n", lambda p: collect(p, chat(messages=user("hi"))))


def test_malformed_named_tool_choice_is_rejected():
    request = chat(messages=user("hi"), tools=[{"type": "function", "function": {"name": "f"}}],
                   tool_choice={"type": "function", "function": "f"})
    with pytest.raises(UpstreamRejected, match="tool_choice"):
        _mocked(b"{}", lambda p: p.complete(request))
