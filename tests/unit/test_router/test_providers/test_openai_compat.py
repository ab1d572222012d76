"""The OpenAI-compatible adapter family over real HTTP against the wire-format simulator."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgspec
import openai
import pytest

from router.config import ConfigError, Deployment
from router.providers import (
    EmbeddingProvider,
    OpenAICompatProvider,
    OpenAISettings,
    Provider,
    ProviderContext,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    build_provider,
)
from router.providers.openai_compat import (
    AZURE_DEFAULT_API_VERSION,
    FINISH_REASONS,
    PRESETS,
    OpenAIStreamTranslator,
)
from router.wire.openai import (
    ChatCompletionChunk,
    ChatRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
)
from tests.unit.test_router.test_providers import harness
from tests.unit.test_router.test_providers.harness import chat_request, complete, stream, words
from tests.upstreams import serve
from tests.upstreams.openai_compat import SimState, create_app

SIM = SimState()
CATALOG = "catalog-model"
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
         "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
HOSTED_ENV = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY",
              "mistral": "MISTRAL_API_KEY", "together": "TOGETHER_API_KEY",
              "perplexity": "PERPLEXITY_API_KEY", "groq": "GROQ_API_KEY",
              "deepseek": "DEEPSEEK_API_KEY"}
SELF_HOSTED = ("vllm", "tgi", "ollama", "openai-compatible")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(create_app(SIM)) as base:
        yield base


@pytest.fixture(autouse=True)
def fresh_sim() -> None:
    SIM.strict, SIM.refuse, SIM.last_body, SIM.last_headers = True, set(), None, {}


def deployment(url: str, provider: str = "openai", **kw: Any) -> Deployment:
    endpoint = url if provider == "azure" else f"{url}/v1"
    key = SIM.azure_key if provider == "azure" else SIM.api_key
    return Deployment(provider=provider, **{"endpoint": endpoint, "api_key": key,
                                            "model": "gpt-4o-mini", **kw})


def run(dep: Deployment, fn: Callable[[OpenAICompatProvider], Awaitable[Any]],
        count_tokens: Callable[[str], int] = words) -> Any:
    return harness.run(dep, fn, count_tokens=count_tokens)


def chat(text: str = "hello world", **kw: Any) -> ChatRequest:
    messages = kw.pop("messages", [{"role": "user", "content": text}])
    return chat_request(CATALOG, messages, **kw)


def embed(dep: Deployment, **body: Any) -> EmbeddingsResponse:
    request = msgspec.convert({"model": CATALOG, **body}, EmbeddingsRequest)
    return run(dep, lambda p: p.embed(request))


# --- chat: translation ---------------------------------------------------------------------


def test_text_answer_with_upstream_usage_and_model(url):
    done = complete(deployment(url), chat())
    assert done.model == CATALOG
    assert done.choices[0].message.content == "echo: hello world"
    assert done.choices[0].finish_reason == "stop"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (8, 3)
    assert SIM.last_body["model"] == "gpt-4o-mini"
    assert SIM.last_headers["authorization"] == f"Bearer {SIM.api_key}"
    assert SIM.last_path == "/v1/chat/completions"


def test_provider_satisfies_both_protocols(url):
    provider = run(deployment(url), lambda p: asyncio.sleep(0, p))
    assert isinstance(provider, Provider) and isinstance(provider, EmbeddingProvider)
    assert SIM.api_key not in repr(provider)


def test_system_prompt_and_multi_turn_are_forwarded(url):
    messages = [{"role": "system", "content": "Be terse."},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"}]
    done = complete(deployment(url), chat(messages=messages, temperature=0.3, top_p=0.9,
                                          seed=7, stop=["\n\n"], user="u-1"))
    assert done.choices[0].message.content == "echo: second question"
    sent = SIM.last_body
    assert sent["messages"] == messages
    assert (sent["temperature"], sent["top_p"], sent["seed"], sent["stop"], sent["user"]) == \
        (0.3, 0.9, 7, ["\n\n"], "u-1")
    assert "stream" not in sent and "n" not in sent


def test_openai_sends_max_completion_tokens_and_reports_length(url):
    done = complete(deployment(url), chat("one two three four", max_tokens=2))
    assert SIM.last_body["max_completion_tokens"] == 2 and "max_tokens" not in SIM.last_body
    assert done.choices[0].message.content == "echo: one"
    assert done.choices[0].finish_reason == "length"


def test_reasoning_model_gets_developer_role_and_no_sampling_params(url):
    # the simulator refuses max_tokens and temperature for o-series models, as OpenAI does
    messages = [{"role": "system", "content": "Think."}, {"role": "user", "content": "hi"}]
    done = complete(deployment(url, model="o3-mini"),
                    chat(messages=messages, max_tokens=50, temperature=0.2, top_p=0.5))
    assert done.choices[0].message.content == "echo: hi"
    sent = SIM.last_body
    assert sent["messages"][0]["role"] == "developer"
    assert sent["max_completion_tokens"] == 50
    assert not {"max_tokens", "temperature", "top_p"} & sent.keys()


def test_developer_role_kept_for_openai_but_system_elsewhere(url):
    messages = [{"role": "developer", "content": "Rules."}, {"role": "user", "content": "hi"}]
    complete(deployment(url), chat(messages=messages))
    assert SIM.last_body["messages"][0]["role"] == "developer"
    complete(deployment(url, "groq"), chat(messages=messages))
    assert SIM.last_body["messages"][0]["role"] == "system"


def test_image_parts_are_forwarded(url):
    parts = [{"type": "text", "text": "what is this"},
             {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}},
             {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    done = complete(deployment(url), chat(messages=[{"role": "user", "content": parts}]))
    assert SIM.last_body["messages"][0]["content"] == parts
    assert done.choices[0].message.content == "echo: what is this [2 image(s)]"


def test_tool_call_and_tool_result_round_trip(url):
    first = complete(deployment(url), chat("weather in Paris", tools=[WEATHER]))
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert first.choices[0].message.content is None
    assert (call.type, call.function.name) == ("function", "get_weather")
    assert json.loads(call.function.arguments) == {"query": "weather in Paris"}
    assert call.id
    messages = [{"role": "user", "content": "weather in Paris"},
                {"role": "assistant", "content": None, "tool_calls": [msgspec.to_builtins(call)]},
                {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}]
    second = complete(deployment(url), chat(messages=messages, tools=[WEATHER]))
    assert second.choices[0].message.content == "tool result: 18C and sunny"
    assert SIM.last_body["messages"][2] == messages[2]


def test_named_tool_choice_is_forwarded(url):
    other = {"type": "function", "function": {"name": "lookup"}}
    choice = {"type": "function", "function": {"name": "lookup"}}
    done = complete(deployment(url), chat("x", tools=[WEATHER, other], tool_choice=choice,
                                          parallel_tool_calls=False))
    assert done.choices[0].message.tool_calls[0].function.name == "lookup"
    assert SIM.last_body["tool_choice"] == choice
    assert SIM.last_body["parallel_tool_calls"] is False


def test_json_response_formats(url):
    done = complete(deployment(url), chat("give json", response_format={"type": "json_object"}))
    assert json.loads(done.choices[0].message.content) == {"echo": "give json"}
    schema = {"type": "json_schema", "json_schema": {"name": "echo", "schema": {
        "type": "object", "properties": {"echo": {"type": "string"}}}}}
    complete(deployment(url), chat("give json", response_format=schema))
    assert SIM.last_body["response_format"] == schema


# --- chat: per-provider quirks -------------------------------------------------------------


def test_mistral_dialect(url):
    SIM.strict, SIM.refuse = False, {"seed", "user", "stream_options"}
    messages = [{"role": "user", "content": "hello", "name": "ann"}]
    done = complete(deployment(url, "mistral"), chat(messages=messages, seed=3, user="u",
                                                     tools=[WEATHER], tool_choice="required"))
    sent = SIM.last_body
    assert sent["random_seed"] == 3 and sent["tool_choice"] == "any"
    assert "name" not in sent["messages"][0]
    assert done.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_mistral_stream_without_usage_is_estimated(url):
    SIM.strict, SIM.refuse = False, {"stream_options"}
    chunks = stream(deployment(url, "mistral"), chat("hello world"), count_tokens=len)
    assert "stream_options" not in SIM.last_body
    # count_tokens=len (characters) tells the estimate from the simulator's word counts
    assert chunks[-1].usage.prompt_tokens == 3 + 3 + len("hello world")
    assert chunks[-1].usage.completion_tokens == len("echo: hello world")


def test_groq_drops_message_names(url):
    messages = [{"role": "user", "content": "hi", "name": "ann"}]
    complete(deployment(url, "groq"), chat(messages=messages))
    assert SIM.last_body["messages"] == [{"role": "user", "content": "hi"}]


def test_perplexity_drops_unsupported_fields_and_refuses_tools(url):
    SIM.refuse = {"stop", "seed", "user", "parallel_tool_calls", "stream_options"}
    done = complete(deployment(url, "perplexity"), chat(
        "hi", stop="x", seed=1, user="u", response_format={"type": "json_object"}))
    assert done.choices[0].message.content == "echo: hi"  # json_object is not sent
    assert "response_format" not in SIM.last_body
    chunks = stream(deployment(url, "perplexity"), chat("hi"))
    assert chunks[-1].usage is not None and "stream_options" not in SIM.last_body
    with pytest.raises(UpstreamRejected, match="tools"):
        complete(deployment(url, "perplexity"), chat("hi", tools=[WEATHER]))


def test_deepseek_downgrades_json_schema_and_refuses_images(url):
    SIM.refuse = {"seed", "user", "parallel_tool_calls"}
    schema = {"type": "json_schema", "json_schema": {"name": "e", "schema": {"type": "object"}}}
    complete(deployment(url, "deepseek"), chat("hi", response_format=schema, seed=1, user="u"))
    assert SIM.last_body["response_format"] == {"type": "json_object"}
    image = [{"type": "image_url", "image_url": {"url": PIXEL}}]
    SIM.last_body = None
    with pytest.raises(UpstreamRejected, match="images"):
        complete(deployment(url, "deepseek"), chat(messages=[{"role": "user", "content": image}]))
    assert SIM.last_body is None  # refused before any call


def test_tgi_response_format_grammar(url):
    SIM.strict = False
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "e", "schema": schema}}
    complete(deployment(url, "tgi"), chat("hi", response_format=fmt))
    assert SIM.last_body["response_format"] == {"type": "json_object", "value": schema}


def test_extra_deployment_headers_are_sent(url):
    complete(deployment(url, headers={"x-team": "search"}), chat())
    assert SIM.last_headers["x-team"] == "search"


# --- streaming -----------------------------------------------------------------------------


def test_streaming_text(url):
    chunks = stream(deployment(url), chat("hello world"))
    assert SIM.last_body["stream"] is True
    assert SIM.last_body["stream_options"] == {"include_usage": True}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello world"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    last = chunks[-1]
    assert last.choices == [] and (last.usage.prompt_tokens, last.usage.completion_tokens) == (8, 3)
    assert {c.model for c in chunks} == {CATALOG} and len({c.id for c in chunks}) == 1


def test_streaming_length_finish(url):
    chunks = stream(deployment(url), chat("one two three", max_completion_tokens=1))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_streaming_tool_call(url):
    chunks = stream(deployment(url), chat("weather in Oslo", tools=[WEATHER]))
    pieces = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    first = pieces[0]
    assert (first.index, first.type, first.function.name, first.function.arguments) == \
        (0, "function", "get_weather", "")
    assert first.id and all(p.id is None and p.function.name is None for p in pieces[1:])
    assert json.loads("".join(p.function.arguments for p in pieces)) == \
        {"query": "weather in Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_usage_estimated_when_upstream_sends_none(url):
    done = complete(deployment(url), chat("hi FAIL NOUSAGE"), count_tokens=len)
    assert done.usage.prompt_tokens == 3 + 3 + len("hi FAIL NOUSAGE")
    assert done.usage.completion_tokens == len("echo: hi FAIL NOUSAGE")
    chunks = stream(deployment(url), chat("hi FAIL NOUSAGE"), count_tokens=len)
    assert chunks[-1].usage == done.usage


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(("trigger", "error"), [
    ("FAIL 400", UpstreamRejected), ("FAIL 429", UpstreamRateLimited),
    ("FAIL 500", UpstreamUnavailable), ("FAIL 503", UpstreamUnavailable),
    ("FAIL MALFORMED", UpstreamError)])
@pytest.mark.parametrize("streaming", [False, True])
def test_upstream_failures_map_to_our_errors(url, trigger, error, streaming):
    call = stream if streaming else complete
    with pytest.raises(error) as info:
        call(deployment(url), chat(f"please {trigger}"))
    assert type(info.value) is error
    assert SIM.api_key not in str(info.value)
    if error is UpstreamRateLimited:
        assert info.value.retry_after == 7.0 and info.value.status == 429


@pytest.mark.parametrize(("trigger", "error"), [
    ("FAIL MIDSTREAM", UpstreamUnavailable), ("FAIL STREAMERROR", UpstreamError),
    ("FAIL TRUNCATED", UpstreamError)])
def test_stream_failures_after_the_first_event(url, trigger, error):
    with pytest.raises(error) as info:
        stream(deployment(url), chat(f"x {trigger}"))
    assert type(info.value) is error


def test_wrong_key_is_an_upstream_error_without_the_key(url):
    wrong = "sk-wrong-secret-123456789"
    with pytest.raises(UpstreamError) as info:
        complete(deployment(url, api_key=wrong), chat())
    assert info.value.status == 502 and "credentials" in str(info.value)
    assert wrong not in str(info.value) and wrong[-4:] not in str(info.value)


def test_upstream_rejection_keeps_the_upstream_message(url):
    with pytest.raises(UpstreamRejected, match="asked to refuse this"):
        complete(deployment(url), chat("FAIL 400"))


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "env"), HOSTED_ENV.items())
def test_missing_key_is_a_config_error_naming_the_variable(monkeypatch, name, env):
    monkeypatch.delenv(env, raising=False)
    dep = Deployment(provider=name, endpoint="https://example.invalid")
    with pytest.raises(ConfigError, match=env):
        build_provider(dep, ProviderContext(count_tokens=words))


def test_key_from_environment(monkeypatch, url):
    monkeypatch.setenv("OPENAI_API_KEY", SIM.api_key)
    done = complete(Deployment(provider="openai", endpoint=f"{url}/v1"), chat())
    assert done.choices[0].message.content == "echo: hello world"


@pytest.mark.parametrize("name", [*SELF_HOSTED, "azure"])
def test_self_hosted_and_azure_need_an_endpoint(name):
    with pytest.raises(ConfigError, match="endpoint"):
        build_provider(Deployment(provider=name, api_key="k"),
                                             ProviderContext(count_tokens=words))


@pytest.mark.parametrize("name", SELF_HOSTED)
def test_self_hosted_sends_no_key_unless_configured(monkeypatch, url, name):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient-must-not-leak")
    SIM.strict = False
    with pytest.raises(UpstreamError):  # the simulator insists on a key: 401
        complete(deployment(url, name, api_key=""), chat())
    assert "authorization" not in SIM.last_headers
    monkeypatch.setenv("MY_VLLM_KEY", SIM.api_key)
    done = complete(deployment(url, name, api_key="", api_key_env="MY_VLLM_KEY"), chat())
    assert done.choices[0].message.content == "echo: hello world"


def test_named_key_variable_must_exist(monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    dep = Deployment(provider="vllm", endpoint="http://h/v1", api_key_env="NOPE_KEY")
    with pytest.raises(ConfigError, match="NOPE_KEY"):
        build_provider(dep, ProviderContext(count_tokens=words))


@pytest.mark.parametrize(("name", "base"), [
    ("openai", "https://api.openai.com/v1"), ("mistral", "https://api.mistral.ai/v1"),
    ("together", "https://api.together.xyz/v1"), ("perplexity", "https://api.perplexity.ai"),
    ("groq", "https://api.groq.com/openai/v1"), ("deepseek", "https://api.deepseek.com")])
def test_default_endpoints(name, base):
    provider = build_provider(
        Deployment(provider=name, api_key="k"), ProviderContext(count_tokens=words))
    assert provider._url(CATALOG, "chat/completions") == (f"{base}/chat/completions", None)


def test_every_name_has_a_preset():
    assert set(PRESETS) == {*HOSTED_ENV, *SELF_HOSTED}
    with pytest.raises(ConfigError, match="unknown"):
        OpenAICompatProvider("nope", OpenAISettings(provider="nope", api_key="k"),
                             ProviderContext(count_tokens=words))


# --- Azure ---------------------------------------------------------------------------------


def test_azure_path_header_and_default_api_version(url):
    done = complete(deployment(url, "azure", model="my-gpt4o"), chat(max_tokens=5))
    assert done.choices[0].message.content == "echo: hello world"
    assert SIM.last_path == "/openai/deployments/my-gpt4o/chat/completions"
    assert SIM.last_query == {"api-version": AZURE_DEFAULT_API_VERSION}
    assert SIM.last_headers["api-key"] == SIM.azure_key
    assert "authorization" not in SIM.last_headers
    assert SIM.last_body["max_tokens"] == 5  # the GA api-version knows max_tokens only


def test_azure_stream_and_custom_api_version(url):
    dep = deployment(url, "azure", model="my-gpt4o", api_version="2025-04-01-preview")
    chunks = stream(dep, chat("hello world"))
    assert SIM.last_query == {"api-version": "2025-04-01-preview"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "echo: hello world"
    assert chunks[-1].usage.total_tokens == 11


def test_azure_wrong_key(url):
    with pytest.raises(UpstreamError, match="credentials"):
        complete(deployment(url, "azure", api_key="bad-azure-key"), chat())


# --- embeddings ----------------------------------------------------------------------------


def test_embeddings_float_and_base64(url):
    floats = embed(deployment(url, model="text-embedding-3-small"), input=["a b", "c"])
    assert floats.model == CATALOG and [e.index for e in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 8 and floats.usage.prompt_tokens == 3
    assert SIM.last_body == {"model": "text-embedding-3-small", "input": ["a b", "c"],
                             "encoding_format": "float"}
    b64 = embed(deployment(url), input="a b", encoding_format="base64", dimensions=4, user="u")
    assert SIM.last_body["dimensions"] == 4 and SIM.last_body["user"] == "u"
    raw = base64.b64decode(b64.data[0].embedding)
    assert struct.unpack("<4f", raw) == pytest.approx(floats.data[0].embedding[:4], abs=1e-6)


def test_mistral_embeddings_encode_base64_locally(url):
    SIM.strict = False
    floats = embed(deployment(url, "mistral"), input="a b")
    b64 = embed(deployment(url, "mistral"), input="a b", encoding_format="base64")
    assert "encoding_format" not in SIM.last_body
    assert struct.unpack("<8f", base64.b64decode(b64.data[0].embedding)) == \
        pytest.approx(floats.data[0].embedding, abs=1e-6)
    embed(deployment(url, "mistral"), input="a b", dimensions=6)
    assert SIM.last_body["output_dimension"] == 6


def test_azure_embeddings_path(url):
    done = embed(deployment(url, "azure", model="emb-deploy"), input="x y")
    assert SIM.last_path == "/openai/deployments/emb-deploy/embeddings"
    assert done.usage.total_tokens == 2


def test_embeddings_unsupported_or_failing(url):
    with pytest.raises(UpstreamRejected, match="embeddings"):
        embed(deployment(url, "groq"), input="x")
    with pytest.raises(UpstreamRejected, match="dimensions"):
        embed(deployment(url, "together"), input="x", dimensions=3)
    with pytest.raises(UpstreamError):
        embed(deployment(url), input="x FAIL MALFORMED")
    with pytest.raises(UpstreamRateLimited):
        embed(deployment(url), input="x FAIL 429")
    estimated = embed(deployment(url), input=["one two three FAIL NOUSAGE"])
    assert estimated.usage.prompt_tokens == 5


# --- the simulator speaks the real wire format: the official SDK as its client -------------


def test_official_sdk_against_the_simulator(url):
    with openai.OpenAI(base_url=f"{url}/v1", api_key=SIM.api_key, max_retries=0) as client:
        done = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}])
        assert done.choices[0].message.content == "echo: hi there"
        assert done.usage.total_tokens == done.usage.prompt_tokens + 3

        events = list(client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}],
            stream=True, stream_options={"include_usage": True}))
        assert "".join(e.choices[0].delta.content or "" for e in events if e.choices) == \
            "echo: hi there"
        assert events[-1].choices == [] and events[-1].usage.completion_tokens == 3

        called = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER], tool_choice="required")
        tool_call = called.choices[0].message.tool_calls[0]
        assert tool_call.function.name == "get_weather"
        assert json.loads(tool_call.function.arguments) == {"query": "weather?"}

        vectors = client.embeddings.create(model="text-embedding-3-small", input=["a", "b c"])
        assert SIM.last_body["encoding_format"] == "base64"  # the SDK's default, decoded
        assert len(vectors.data) == 2 and len(vectors.data[1].embedding) == 8

        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=[])
        assert info.value.body["param"] == "messages"

    with openai.AzureOpenAI(azure_endpoint=url, api_key=SIM.azure_key,
                            api_version="2024-10-21", max_retries=0) as azure:
        done = azure.chat.completions.create(
            model="my-deploy", messages=[{"role": "user", "content": "hi"}])
        assert done.choices[0].message.content == "echo: hi"
        assert SIM.last_path == "/openai/deployments/my-deploy/chat/completions"


# --- other servers' stream and finish dialects (decoded as they arrive on the wire) ---------


@pytest.mark.parametrize(("reason", "calls", "ours"), [
    ("stop", True, "tool_calls"), ("model_length", False, "length"),
    ("eos_token", False, "stop"), ("stop_sequence", False, "stop"), (None, False, "stop"),
    ("content_filter", False, "content_filter"), ("length", True, "length")])
def test_finish_reasons_map_to_openai(reason, calls, ours):
    assert FINISH_REASONS(reason, calls) == ours


def test_mistral_error_finish_is_an_upstream_error():
    with pytest.raises(UpstreamError):
        FINISH_REASONS("error", False)


def test_whole_tool_calls_in_one_delta_are_split_in_openai_order():
    # Mistral streams each call whole; Ollama may send arguments as an object and "stop"
    translator = OpenAIStreamTranslator("mistral", chat(), words)
    events = [
        '{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
        '{"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"id":"abc123def","function":'
        '{"name":"get_weather","arguments":"{\\"city\\": \\"Oslo\\"}"}}]}}]}',
        '{"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"id":"zzz999yyy","function":'
        '{"name":"lookup","arguments":{"q":1}}}]},"finish_reason":"stop"}],'
        '"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14}}']
    out = [c.choices[0] for e in events for c in translator.feed(e)]
    calls = [c.delta.tool_calls[0] for c in out if c.delta.tool_calls]
    assert [(c.index, c.id, c.function.name, c.function.arguments) for c in calls] == [
        (0, "abc123def", "get_weather", ""), (0, None, None, '{"city": "Oslo"}'),
        (1, "zzz999yyy", "lookup", ""), (1, None, None, '{"q": 1}')]
    assert out[0].delta.role == "assistant" and out[-1].finish_reason == "tool_calls"
    assert translator.usage.total_tokens == 14


def test_groq_usage_in_x_groq_is_read():
    translator = OpenAIStreamTranslator("groq", chat(), words)
    translator.feed('{"choices":[{"delta":{},"finish_reason":"stop"}],'
                    '"x_groq":{"usage":{"prompt_tokens":2,"completion_tokens":3}}}')
    assert (translator.usage.prompt_tokens, translator.usage.total_tokens) == (2, 5)


def _sdk_assembled(chunks: list[ChatCompletionChunk]) -> list[tuple[str, str, str]]:
    """(id, name, arguments) of each tool call as the official openai SDK assembles the
    stream (its own accumulator, fed our chunks as they go over the wire)."""
    from openai.lib.streaming.chat._completions import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk as SDKChunk

    sdk = ChatCompletionStreamState()
    for c in chunks:
        if c.choices:  # the SDK's accumulator wants choices; the usage chunk is checked apart
            sdk.handle_chunk(SDKChunk.model_validate(msgspec.to_builtins(c)))
    message = sdk.current_completion_snapshot.choices[0].message
    return [(t.id, t.function.name, t.function.arguments) for t in message.tool_calls or []]


def test_parallel_calls_sent_at_one_index_stay_apart():
    # vLLM's tool parsers and Mistral (which may omit `index`) send parallel calls all at
    # index 0, told apart only by their ids; the SDK must still see two calls.
    translator = OpenAIStreamTranslator("vllm", chat(), words)
    events = [
        '{"choices":[{"delta":{"role":"assistant","content":""}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call-a","type":"function",'
        '"function":{"name":"add","arguments":""}}]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"a\\": 1}"}}'
        ']}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call-b","type":"function",'
        '"function":{"name":"get_weather","arguments":"{\\"city\\""}}]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":": \\"Oslo\\"}"}}'
        ']}}]}',
        '{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}']
    chunks = [c for e in events for c in translator.feed(e)]
    assert _sdk_assembled(chunks) == [("call-a", "add", '{"a": 1}'),
                                      ("call-b", "get_weather", '{"city": "Oslo"}')]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_repeated_ids_and_placeholder_ids_continue_their_call():
    # Some servers repeat the id (and name) on every piece, or send a placeholder id on
    # continuations: neither starts a new call.
    translator = OpenAIStreamTranslator("vllm", chat(), words)
    events = [
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f",'
        '"arguments":"{\\"x\\""}}]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f",'
        '"arguments":": 1"}}]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"null","function":'
        '{"arguments":"}"}}]}}]}',
        '{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}']
    chunks = [c for e in events for c in translator.feed(e)]
    assert _sdk_assembled(chunks) == [("c1", "f", '{"x": 1}')]
