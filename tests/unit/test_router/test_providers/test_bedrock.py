"""The Bedrock Converse adapter over real HTTP against the SigV4-verifying simulator."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from router.config import ConfigError, Deployment
from router.providers import (
    PROVIDERS,
    BedrockProvider,
    BedrockSettings,
    ProviderContext,
    ProviderError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from router.wire.openai import ChatCompletionChunk, ChatRequest
from tests.unit.test_router.test_providers import harness
from tests.unit.test_router.test_providers.harness import chat_request, complete, stream, words
from tests.upstreams import serve
from tests.upstreams.bedrock import SimState, create_app, encode_frame, event_frame

SIM = SimState()
CATALOG = "catalog-model"
MODEL = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
         "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
LOOKUP = {"type": "function", "function": {"name": "lookup"}}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(create_app(SIM)) as base:
        yield base


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The simulator's fake keys in the environment, and nothing else botocore could find."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CREDENTIAL_EXPIRATION",
                "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SIM.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SIM.secret_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SIM.token or "")
    SIM.last_body, SIM.last_headers, SIM.last_raw_path, SIM.last_model = None, {}, "", ""


def deployment(url: str, **kw: Any) -> Deployment:
    return Deployment(provider="bedrock", **{"endpoint": url, "region": SIM.region,
                                             "model": MODEL, **kw})


def run(dep: Deployment, fn: Callable[[BedrockProvider], Awaitable[Any]],
        http: Callable[[], httpx.AsyncClient] | None = None) -> Any:
    return harness.run(dep, fn, http=http)


def chat(text: str = "hello world", **kw: Any) -> ChatRequest:
    messages = kw.pop("messages", [{"role": "user", "content": text}])
    return chat_request(CATALOG, messages, **kw)


def stream_until_error(dep: Deployment, request: ChatRequest,
                       ) -> tuple[list[ChatCompletionChunk], ProviderError]:
    got: list[ChatCompletionChunk] = []

    async def collect(p: BedrockProvider) -> ProviderError:
        try:
            async for c in p.stream(request):
                got.append(c)
        except ProviderError as exc:
            return exc
        raise AssertionError("the stream did not fail")
    return got, run(dep, collect)


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        assert SIM.secret_key not in text
        assert SIM.token and SIM.token not in text


# --- event stream framing ------------------------------------------------------------------


def test_simulator_frames_parse_with_botocore_in_arbitrary_pieces():
    frames = (event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}})
              + encode_frame({":message-type": "exception", ":exception-type": "x"}, b"{}"))
    buffer, messages = EventStreamBuffer(), []
    for i in range(0, len(frames), 5):  # never a whole frame at once
        buffer.add_data(frames[i:i + 5])
        messages.extend(buffer)
    assert [m.headers[":message-type"] for m in messages] == ["event", "exception"]
    assert messages[0].headers[":event-type"] == "contentBlockDelta"
    assert json.loads(messages[0].payload)["delta"] == {"text": "hi"}
    assert messages[1].headers[":exception-type"] == "x" and messages[1].payload == b"{}"
    corrupt = bytearray(frames)
    corrupt[20] ^= 0xFF  # inside the first frame's headers: the message CRC no longer matches
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(corrupt))
    with pytest.raises(ChecksumMismatch):
        list(buffer)


# --- signing and endpoint ------------------------------------------------------------------


def test_signed_request_is_accepted_and_answers_in_openai_shape(url):
    done = complete(deployment(url), chat())
    assert done.model == CATALOG
    assert done.choices[0].message.content == "echo: hello world"
    assert done.choices[0].finish_reason == "stop"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens,
            done.usage.total_tokens) == (2, 3, 5)
    auth = SIM.last_headers["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={SIM.access_key}/")
    assert "/us-east-1/bedrock/aws4_request, SignedHeaders=" in auth
    assert SIM.last_headers["x-amz-security-token"] == SIM.token
    assert SIM.last_raw_path == "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
    assert SIM.last_model == MODEL
    assert SIM.last_body == {"messages": [{"role": "user", "content": [{"text": "hello world"}]}]}


def test_arn_model_id_travels_as_one_encoded_path_segment(url):
    arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{MODEL}"
    complete(deployment(url, model=arn), chat())
    assert SIM.last_model == arn
    assert "%2F" in SIM.last_raw_path and SIM.last_raw_path.endswith("/converse")


def test_catalog_name_is_the_model_id_when_the_deployment_names_none(url):
    complete(deployment(url, model=""), chat())
    assert SIM.last_model == CATALOG


def test_long_term_keys_sign_without_a_session_token(url, monkeypatch):
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.setattr(SIM, "token", None)
    assert complete(deployment(url), chat()).choices[0].message.content == "echo: hello world"
    assert "x-amz-security-token" not in SIM.last_headers


def test_deployment_headers_are_sent_and_signed(url):
    complete(deployment(url, headers={"x-team": "search"}), chat())
    assert SIM.last_headers["x-team"] == "search"
    assert "x-team" in SIM.last_headers["authorization"].split("SignedHeaders=")[1]


def test_tampered_signature_is_rejected_as_an_upstream_error(url):
    async def tamper(request: httpx.Request) -> None:
        auth = request.headers["authorization"]
        request.headers["authorization"] = auth[:-1] + ("0" if auth[-1] != "0" else "1")

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=10, event_hooks={"request": [tamper]})

    with pytest.raises(UpstreamError) as err:
        complete(deployment(url), chat(), http=client)
    assert type(err.value) is UpstreamError and err.value.status == 502
    assert "credentials were refused" in str(err.value)
    assert_no_secrets(str(err.value))


def test_wrong_secret_key_is_rejected(url, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-" + "x" * 25)
    with pytest.raises(UpstreamError) as err:
        complete(deployment(url), chat())
    assert type(err.value) is UpstreamError and err.value.status == 502
    assert "not-the-secret" not in str(err.value)


def test_refreshable_credentials_are_fetched_for_every_request(url):
    refreshes = []

    def refresh() -> dict[str, str]:
        refreshes.append(1)
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)  # inside botocore's window
        return {"access_key": SIM.access_key, "secret_key": SIM.secret_key,
                "token": SIM.token or "", "expiry_time": soon.isoformat()}

    stale = {"access_key": SIM.access_key, "secret_key": "stale-secret", "token": "stale",
             "expiry_time": (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()}
    creds = RefreshableCredentials.create_from_metadata(stale, refresh, "test")

    async def main() -> list[str | None]:
        async with httpx.AsyncClient(timeout=10) as client:
            ctx = ProviderContext(count_tokens=words, http=client)
            provider = BedrockProvider(deployment(url), ctx, creds, SIM.region)
            return [(await provider.complete(chat())).choices[0].message.content
                    for _ in range(2)]

    assert asyncio.run(main()) == ["echo: hello world"] * 2
    assert len(refreshes) >= 2  # short-lived credentials: refreshed again for the 2nd call


def test_default_endpoint_is_the_regional_runtime_host():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={
            "output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}},
            "stopReason": "end_turn", "metrics": {"latencyMs": 1},
            "usage": {"inputTokens": 4, "outputTokens": 1, "totalTokens": 5,
                      "cacheReadInputTokens": 10, "cacheWriteInputTokens": 2}})

    dep = Deployment(provider="bedrock", model=MODEL, region="eu-west-3")
    done = complete(dep, chat(), http=lambda: httpx.AsyncClient(
        transport=httpx.MockTransport(handler)))
    assert str(seen[0].url) == ("https://bedrock-runtime.eu-west-3.amazonaws.com/model/"
                                "us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse")
    assert "/eu-west-3/bedrock/aws4_request" in seen[0].headers["authorization"]
    assert json.loads(seen[0].content) == {
        "messages": [{"role": "user", "content": [{"text": "hello world"}]}]}
    # cache reads and writes are prompt tokens in OpenAI's accounting
    assert (done.usage.prompt_tokens, done.usage.completion_tokens,
            done.usage.total_tokens) == (16, 1, 17)


def test_registered_as_bedrock():
    assert PROVIDERS["bedrock"].settings is BedrockSettings
    assert PROVIDERS["bedrock"].build == BedrockProvider.from_settings


# --- configuration -------------------------------------------------------------------------


def _no_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)


def test_an_api_key_goes_as_a_bearer_token_and_nothing_is_signed(url, monkeypatch):
    _no_aws_credentials(monkeypatch)
    done = complete(deployment(url, api_key=SIM.api_key, headers={"x-team": "search"}), chat())
    assert done.choices[0].message.content == "echo: hello world"
    assert SIM.last_headers["authorization"] == f"Bearer {SIM.api_key}"
    assert SIM.last_headers["x-team"] == "search"
    assert "x-amz-date" not in SIM.last_headers
    assert "x-amz-security-token" not in SIM.last_headers


def test_an_api_key_from_the_environment_wins_over_aws_credentials(url, monkeypatch):
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", SIM.api_key)  # AWS's own variable
    chunks = stream(deployment(url), chat())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) \
        == "echo: hello world"
    assert SIM.last_headers["authorization"] == f"Bearer {SIM.api_key}"
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK")
    monkeypatch.setenv("TEAM_BEDROCK_KEY", SIM.api_key)
    complete(deployment(url, api_key_env="TEAM_BEDROCK_KEY"), chat())
    assert SIM.last_headers["authorization"] == f"Bearer {SIM.api_key}"


def test_a_named_key_variable_that_is_unset_is_a_config_error(url):
    with pytest.raises(ConfigError, match="TEAM_BEDROCK_KEY"):
        complete(deployment(url, api_key_env="TEAM_BEDROCK_KEY"), chat())


def test_a_wrong_api_key_is_refused_and_never_echoed(url):
    wrong = "ABSK" + "z" * 40
    with pytest.raises(UpstreamError) as err:
        complete(deployment(url, api_key=wrong), chat())
    assert type(err.value) is UpstreamError and err.value.status == 502
    assert "credentials were refused" in str(err.value)
    assert wrong not in str(err.value) and wrong not in repr(err.value)


def test_missing_credentials_is_a_config_error(url, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    with pytest.raises(ConfigError, match=r"no AWS credentials.*AWS_ACCESS_KEY_ID"):
        complete(deployment(url), chat())


def test_missing_region_is_a_config_error(url):
    with pytest.raises(ConfigError, match="no region"):
        complete(deployment(url, region=""), chat())


def test_region_from_environment_and_deployment_region_wins(url, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", SIM.region)
    assert complete(deployment(url, region=""), chat()).choices[0].message.content
    monkeypatch.setenv("AWS_REGION", "eu-west-1")  # AWS_REGION beats AWS_DEFAULT_REGION ...
    with pytest.raises(UpstreamError):  # ... and the simulator only takes us-east-1
        complete(deployment(url, region=""), chat())
    assert complete(deployment(url), chat()).choices[0].message.content  # deployment's wins


def test_repr_and_errors_never_show_the_secret(url):
    dep = deployment(url)
    messages = [repr(dep)]

    async def probe(p: BedrockProvider) -> None:
        messages.append(repr(p))
        for text in ("FAIL 400", "FAIL 403", "FAIL 429", "FAIL 500"):
            try:
                await p.complete(chat(text))
            except ProviderError as exc:
                messages.append(str(exc))
    run(dep, probe)
    assert len(messages) == 6
    assert_no_secrets(*messages)


# --- translation ---------------------------------------------------------------------------


def test_system_and_developer_messages_become_system_blocks(url):
    complete(deployment(url), chat(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]}]))
    assert SIM.last_body["system"] == [{"text": "Be brief."}, {"text": "Use metric units."}]
    assert SIM.last_body["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]


def test_multi_turn_keeps_order_and_merges_consecutive_roles(url):
    done = complete(deployment(url), chat(messages=[
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": ""},  # blank: Converse would refuse it
        {"role": "user", "content": "four"}]))
    assert SIM.last_body["messages"] == [
        {"role": "user", "content": [{"text": "one"}, {"text": "two"}]},
        {"role": "assistant", "content": [{"text": "three"}]},
        {"role": "user", "content": [{"text": "four"}]}]
    assert done.choices[0].message.content == "echo: four"


def test_image_data_url_is_sent_inline(url):
    complete(deployment(url), chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}]}]))
    assert SIM.last_body["messages"][0]["content"] == [
        {"text": "what is this"},
        {"image": {"format": "png", "source": {"bytes": PIXEL.split(",", 1)[1]}}}]


@pytest.mark.parametrize("image_url, reason", [
    ("https://example.com/cat.png", "data: URLs"),
    ("data:image/bmp;base64,Qk0=", "png, jpeg, gif or webp")])
def test_unsupported_images_are_rejected_before_any_call(url, image_url, reason):
    before = SIM.requests
    with pytest.raises(UpstreamRejected, match=reason):
        complete(deployment(url), chat(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url}}]}]))
    assert SIM.requests == before


def test_inference_parameters_and_dropped_fields(url):
    done = complete(deployment(url), chat(
        "alpha beta gamma delta", max_completion_tokens=3, temperature=1.5, top_p=0.5,
        stop=["zzz"], seed=7, user="u-1", presence_penalty=0.5, parallel_tool_calls=False))
    assert SIM.last_body["inferenceConfig"] == {
        "maxTokens": 3, "temperature": 1.0, "stopSequences": ["zzz"]}  # no topP beside it
    assert set(SIM.last_body) == {"messages", "inferenceConfig"}
    assert done.choices[0].message.content == "echo: alpha beta"
    assert done.choices[0].finish_reason == "length"


def test_stop_sequence_finishes_with_stop(url):
    done = complete(deployment(url), chat("hello world", stop="world"))
    assert SIM.last_body["inferenceConfig"] == {"stopSequences": ["world"]}
    assert done.choices[0].message.content == "echo: hello "
    assert done.choices[0].finish_reason == "stop"


def test_guardrail_intervention_is_content_filter(url):
    done = complete(deployment(url), chat("GUARDRAIL please"))
    assert done.choices[0].finish_reason == "content_filter"


def test_json_schema_response_format_uses_output_config(url):
    schema = {"type": "object", "properties": {"echo": {"type": "string"}},
              "required": ["echo"], "additionalProperties": False}
    done = complete(deployment(url), chat("hi", response_format={
        "type": "json_schema", "json_schema": {"name": "echo", "schema": schema}}))
    fmt = SIM.last_body["outputConfig"]["textFormat"]
    assert fmt["type"] == "json_schema"
    assert fmt["structure"]["jsonSchema"]["name"] == "echo"
    assert json.loads(fmt["structure"]["jsonSchema"]["schema"]) == schema
    assert json.loads(done.choices[0].message.content) == {"echo": "hi"}


def test_json_object_response_format_asks_in_the_system_prompt(url):
    done = complete(deployment(url), chat(messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        response_format={"type": "json_object"}))
    assert SIM.last_body["system"][0] == {"text": "Be brief."}
    assert "JSON object" in SIM.last_body["system"][1]["text"]
    assert "outputConfig" not in SIM.last_body
    assert json.loads(done.choices[0].message.content) == {"echo": "hi"}


# --- tools ---------------------------------------------------------------------------------


def test_tool_call_and_result_round_trip(url):
    dep = deployment(url)
    first = complete(dep, chat("weather in Paris", tools=[WEATHER], tool_choice="required"))
    assert SIM.last_body["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "get_weather", "description": "Current weather in a city",
                                "inputSchema": {"json": WEATHER["function"]["parameters"]}}}],
        "toolChoice": {"any": {}}}
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("tooluse_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"query": "weather in Paris"}

    second = complete(dep, chat(tools=[WEATHER], messages=[
        {"role": "user", "content": "weather in Paris"},
        {"role": "assistant", "content": None, "tool_calls": [msgspec.to_builtins(call)]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}]))
    assert SIM.last_body["messages"][1:] == [
        {"role": "assistant", "content": [{"toolUse": {
            "toolUseId": call.id, "name": "get_weather",
            "input": {"query": "weather in Paris"}}}]},
        {"role": "user", "content": [{"toolResult": {
            "toolUseId": call.id, "content": [{"text": "sunny, 21C"}]}}]}]
    assert "toolChoice" not in SIM.last_body["toolConfig"]  # no tool_choice: Converse's auto
    assert second.choices[0].message.content == "tool result: sunny, 21C"
    assert second.choices[0].finish_reason == "stop"


def test_named_tool_choice_and_parameterless_tool(url):
    done = complete(deployment(url), chat("find it", tools=[WEATHER, LOOKUP], tool_choice={
        "type": "function", "function": {"name": "lookup"}}))
    config = SIM.last_body["toolConfig"]
    assert config["toolChoice"] == {"tool": {"name": "lookup"}}
    assert config["tools"][1] == {"toolSpec": {
        "name": "lookup", "inputSchema": {"json": {"type": "object", "properties": {}}}}}
    assert done.choices[0].message.tool_calls[0].function.name == "lookup"


def test_tool_ids_are_mapped_to_the_converse_alphabet_consistently(url):
    complete(deployment(url), chat(tools=[WEATHER], messages=[
        {"role": "user", "content": "weather"},
        {"role": "assistant", "tool_calls": [{"id": "call abc/1", "type": "function",
                                              "function": {"name": "get_weather",
                                                           "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "call abc/1", "content": ""}]))
    use = SIM.last_body["messages"][1]["content"][0]["toolUse"]
    result = SIM.last_body["messages"][2]["content"][0]["toolResult"]
    assert use["toolUseId"] == result["toolUseId"] == "call_abc_1"
    assert use["input"] == {"arguments": "not json"}
    assert result["content"] == [{"text": "(no output)"}]


def test_tool_choice_none_sends_no_tools_and_history_as_text(url):
    done = complete(deployment(url), chat(tools=[WEATHER], tool_choice="none", messages=[
        {"role": "user", "content": "weather"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "so?"}]))
    assert "toolConfig" not in SIM.last_body
    history = SIM.last_body["messages"]
    assert history[1] == {"role": "assistant", "content": [
        {"text": "[tool call call_1: get_weather({\"city\": \"Paris\"})]"}]}
    assert history[2] == {"role": "user", "content": [
        {"text": "[result of tool call call_1: sunny]"}, {"text": "so?"}]}
    assert done.choices[0].message.content == "echo: [result of tool call call_1: sunny] so?"
    assert done.choices[0].message.tool_calls is None


# --- streaming -----------------------------------------------------------------------------


def test_stream_text_matches_the_complete_answer(url):
    dep = deployment(url)
    done = complete(dep, chat("the quick brown fox"))
    chunks = stream(dep, chat("the quick brown fox"))
    assert SIM.last_raw_path.endswith("/converse-stream")
    assert SIM.last_headers["accept"] == "application/vnd.amazon.eventstream"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.model == CATALOG and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == done.choices[0].message.content == "echo: the quick brown fox"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 5
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == done.usage


def test_stream_length_finish(url):
    chunks = stream(deployment(url), chat("one two three", max_tokens=2))
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 2


def test_stream_tool_call_deltas(url):
    chunks = stream(deployment(url), chat("weather in Oslo", tools=[WEATHER]))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    first = deltas[0]
    assert (first.index, first.type, first.function.name, first.function.arguments) == (
        0, "function", "get_weather", "")
    assert first.id and first.id.startswith("tooluse_")
    assert len(deltas) == 4 and all(d.id is None and d.index == 0 for d in deltas[1:])
    arguments = "".join(d.function.arguments for d in deltas)
    assert json.loads(arguments) == {"query": "weather in Oslo"}
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage.prompt_tokens == 3
    assert chunks[-1].usage.completion_tokens == words(arguments)


@pytest.mark.parametrize("exception, error", [
    ("throttlingException", UpstreamRateLimited),
    ("modelStreamErrorException", UpstreamUnavailable),
    ("internalServerException", UpstreamUnavailable),
    ("serviceUnavailableException", UpstreamUnavailable),
    ("validationException", UpstreamRejected),
    ("someNewException", UpstreamError)])
def test_stream_exception_events_map_to_errors(url, exception, error):
    got, exc = stream_until_error(deployment(url), chat(f"FAIL STREAM {exception}"))
    assert type(exc) is error
    assert exception in str(exc) and "interrupted" in str(exc)
    assert "".join(c.choices[0].delta.content or "" for c in got) == \
        f"echo: FAIL STREAM {exception}"
    assert_no_secrets(str(exc))


def test_stream_exception_before_any_event_yields_nothing(url):
    got, exc = stream_until_error(deployment(url), chat("FAIL STREAMSTART throttlingException"))
    assert got == [] and isinstance(exc, UpstreamRateLimited)


@pytest.mark.parametrize("fail, message", [("TRUNCATED", "before messageStop"),
                                           ("CORRUPT", "malformed event stream")])
def test_broken_streams_are_upstream_errors(url, fail, message):
    _, exc = stream_until_error(deployment(url), chat(f"FAIL {fail}"))
    assert type(exc) is UpstreamError and message in str(exc)


# --- HTTP errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("fail, error, aws_type", [
    ("400", UpstreamRejected, "ValidationException"),
    ("404", UpstreamRejected, "ResourceNotFoundException"),
    ("403", UpstreamError, None),
    ("408", UpstreamTimeout, "ModelTimeoutException"),
    ("424", UpstreamError, "ModelErrorException"),
    ("429", UpstreamRateLimited, "ThrottlingException"),
    ("NOTREADY", UpstreamUnavailable, "ModelNotReadyException"),
    ("500", UpstreamUnavailable, "InternalServerException"),
    ("503", UpstreamUnavailable, "ServiceUnavailableException")])
@pytest.mark.parametrize("streaming", [False, True])
def test_error_answers_map_to_gateway_errors(url, fail, error, aws_type, streaming):
    request = chat(f"FAIL {fail}")
    if streaming:
        got, exc = stream_until_error(deployment(url), request)
        assert got == []
    else:
        with pytest.raises(ProviderError) as info:
            complete(deployment(url), request)
        exc = info.value
    assert type(exc) is error
    if aws_type:  # the upstream's own words reach the client (403's stay generic)
        assert aws_type in str(exc)
    assert_no_secrets(str(exc))


def test_simulator_refuses_a_malformed_converse_body(url):
    # The simulator's validation is what makes the translation tests meaningful.
    body = json.dumps({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}).encode()
    aws = AWSRequest(method="POST", url=f"{url}/model/{quote(MODEL, safe='')}/converse",
                     data=body, headers={"content-type": "application/json"})
    SigV4Auth(Credentials(SIM.access_key, SIM.secret_key, SIM.token), "bedrock",
              SIM.region).add_auth(aws)
    answer = httpx.post(aws.url, content=body, headers=dict(aws.headers.items()))
    assert answer.status_code == 400
    assert answer.headers["x-amzn-errortype"].startswith("ValidationException:")
    assert "must start with a user message" in answer.json()["message"]


def test_closing_a_stream_early_releases_it(url):
    async def first(p: BedrockProvider) -> ChatCompletionChunk:
        chunks = p.stream(chat("the quick brown fox"))
        chunk = await anext(chunks)
        await chunks.aclose()
        return chunk

    assert run(deployment(url), first).choices[0].delta.role == "assistant"


def _mocked(content: bytes, content_type: str) -> Callable[[], httpx.AsyncClient]:
    return lambda: httpx.AsyncClient(transport=httpx.MockTransport(
        lambda _req: httpx.Response(200, content=content,
                                    headers={"content-type": content_type})))


@pytest.mark.parametrize("answer", [
    {"output": {"message": {"content": [{"text": "a"}]}},
     "usage": {"inputTokens": 1, "cacheReadInputTokens": "many"}},
    {"output": {"message": {"content": [{"text": "a"}]}},
     "usage": {"inputTokens": 1, "outputTokens": "x"}}, [1]])
def test_unexpected_converse_body_is_an_upstream_error(answer):
    http = _mocked(json.dumps(answer).encode(), "application/json")
    with pytest.raises(UpstreamError, match="unexpected body"):
        complete(deployment("http://bedrock.test"), chat(), http=http)


@pytest.mark.parametrize(("kind", "payload"), [
    ("contentBlockStart", {"contentBlockIndex": 0, "start": "toolUse"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": "text"}),
    ("metadata", {"usage": {"inputTokens": 1, "cacheWriteInputTokens": "x"}})])
def test_unexpected_stream_event_is_an_upstream_error(kind, payload):
    frames = event_frame("messageStart", {"role": "assistant"}) + event_frame(kind, payload)
    http = _mocked(frames, "application/vnd.amazon.eventstream")
    with pytest.raises(UpstreamError, match="unexpected"):
        stream(deployment("http://bedrock.test"), chat(), http=http)


def test_malformed_named_tool_choice_is_rejected(url):
    request = chat(tools=[WEATHER], tool_choice={"type": "function", "function": "x"})
    with pytest.raises(UpstreamRejected, match="tool_choice"):
        complete(deployment(url), request)
