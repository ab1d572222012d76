"""The gateway under uvicorn on a local port, with the unmodified ``anthropic`` SDK as its client
(``POST /v1/messages``).

Models are served by the default simulated provider, except ``claude-3-haiku``, which is served
by the Anthropic adapter against the local Anthropic simulator: that one answers with real
``tool_use`` blocks, so tool calls make the whole trip (Anthropic -> gateway -> Anthropic).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import msgspec
import pytest
from litestar import Litestar, Router
from litestar.di import Provide

from router.config import Deployment, ServerConfig, load_config
from service.anthropic_api import create_message
from service.app import create_app, provide_gateway
from service.auth import master_key_guard
from service.server import with_address
from tests.upstreams import serve
from tests.upstreams.anthropic import API_KEY, AnthropicSimulator

USER = [{"role": "user", "content": "Prove that the square root of 2 is irrational."}]
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
         "rkJggg==")
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
VIA_ADAPTER = "claude-3-haiku"  # served through the Anthropic adapter and simulator


@pytest.fixture(scope="module")
def upstream() -> Iterator[AnthropicSimulator]:
    sim = AnthropicSimulator()
    with serve(sim.app) as url:
        sim.url = url  # type: ignore[attr-defined]
        yield sim


@pytest.fixture(scope="module")
def config(tmp_path_factory, upstream):
    cfg = load_config()
    traffic = msgspec.structs.replace(
        cfg.traffic, dsn=f"sqlite:///{tmp_path_factory.mktemp('log') / 'traffic.sqlite3'}")
    # Failures provoked below must not open a circuit breaker other tests depend on.
    dispatch = msgspec.structs.replace(cfg.dispatch, failure_threshold=1000, backoff_ms=0)
    adapter = Deployment(provider="anthropic", model="claude-3-haiku-20240307",
                         endpoint=upstream.url, api_key=API_KEY)
    models = [msgspec.structs.replace(m, deployments=[adapter]) if m.name == VIA_ADAPTER else m
              for m in cfg.models]
    cfg = msgspec.structs.replace(cfg, traffic=traffic, dispatch=dispatch, models=models)
    return with_address(cfg, "127.0.0.1", 0)


@pytest.fixture(scope="module")
def base_url(config) -> Iterator[str]:
    with serve(create_app(config), lifespan="on") as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def http(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


def capable(config, capability: str) -> set[str]:
    return {m.name for m in config.models if capability in m.capabilities}


def create(client: anthropic.Anthropic, **kw: Any):
    """``messages.create`` with its raw response: (Message, headers)."""
    raw = client.messages.with_raw_response.create(**{"max_tokens": 1024, **kw})
    return raw.parse(), raw.headers


# --- answers -------------------------------------------------------------------------------


def test_auto_message_carries_routing_headers(client, config):
    msg, headers = create(client, model="auto", messages=USER)
    assert headers["x-contextforge-route"] == config.default_route
    assert headers["x-contextforge-model"] == msg.model
    assert msg.model in {m.name for m in config.models}
    assert float(headers["x-contextforge-cost-usd"]) > 0
    assert msg.id == "msg_" + headers["x-contextforge-request-id"].removeprefix("chatcmpl-")
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_named_model_and_alias_skip_routing(client):
    msg, headers = create(client, model="claude-4", messages=USER)
    assert msg.model == "claude-4" and headers["x-contextforge-route"] == "none"
    aliased, _ = create(client, model="claude-sonnet-4-20250514", messages=USER)
    assert aliased.model == "claude-4"


def test_route_name_as_model(client):
    msg, headers = create(client, model="gpt4o-30", messages=USER)
    assert headers["x-contextforge-route"] == "gpt4o-30"
    assert msg.model in {"gpt-4o", "gpt-4o-mini"}


def test_system_prompt_and_sampling_fields_are_accepted(client):
    msg, _ = create(client, model="gpt-4o-mini", messages=USER, system=[
        {"type": "text", "text": "You are a mathematician.",
         "cache_control": {"type": "ephemeral"}}],
        stop_sequences=["QED"], metadata={"user_id": "user-7"},
        # SDK 2.x dropped the sampling arguments; the wire format still has them.
        extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 40})
    assert msg.content[0].text


def test_structured_output_routes_to_json_models(client, config):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    msg, headers = create(client, model="auto", messages=USER,
                          output_config={"format": {"type": "json_schema", "schema": schema}})
    assert headers["x-contextforge-model"] in capable(config, "json")
    assert json.loads(msg.content[0].text)["answer"]  # the simulated provider answers JSON


def test_max_tokens_caps_the_answer(client):
    msg, _ = create(client, model="auto", messages=USER, max_tokens=5)
    assert msg.usage.output_tokens == 5 and msg.stop_reason == "max_tokens"


def test_multi_turn_conversation(client):
    messages = [{"role": "user", "content": "Hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
                {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}]
    msg, _ = create(client, model="gpt-4o-mini", messages=messages)
    assert "2+2" in msg.content[0].text  # the simulated provider quotes the last user turn


# --- streaming -----------------------------------------------------------------------------


def test_stream_assembles_the_same_answer_with_usage(client):
    whole, _ = create(client, model="gpt-4o-mini", messages=USER)
    with client.messages.stream(model="gpt-4o-mini", max_tokens=1024, messages=USER) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == whole.content[0].text == final.content[0].text
    assert final.model == "gpt-4o-mini" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens


def test_stream_event_sequence_and_headers(client, config):
    raw = client.messages.with_raw_response.create(model="auto", max_tokens=1024,
                                                   messages=USER, stream=True)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-contextforge-route"] == config.default_route
    events = list(raw.parse())
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"} and len(kinds) > 6
    start = events[0].message
    assert start.model == raw.headers["x-contextforge-model"] and start.content == []
    assert start.usage.input_tokens > 0  # the gateway's count, until message_delta's
    delta = events[-2]
    assert delta.delta.stop_reason == "end_turn"
    # One delta per token here; five events are not deltas.
    assert delta.usage.output_tokens == len(kinds) - 5 and delta.usage.input_tokens > 0


def test_stream_max_tokens(client):
    with client.messages.stream(model="auto", max_tokens=3, messages=USER) as s:
        final = s.get_final_message()
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 3


# --- tools ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [
    "What's the weather in Paris?", "Write a haiku about autumn.", "Solve 12*13.",
])
def test_tools_route_only_to_models_with_tools(client, config, prompt):
    _, headers = create(client, model="auto", messages=[{"role": "user", "content": prompt}],
                        tools=[WEATHER], tool_choice={"type": "auto"})
    assert headers["x-contextforge-model"] in capable(config, "tools")


def test_tool_use_from_a_model_and_the_result_round_trip(client, upstream):
    msg, headers = create(client, model=VIA_ADAPTER, tools=[WEATHER],
                          messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert headers["x-contextforge-model"] == VIA_ADAPTER
    assert msg.stop_reason == "tool_use"
    text, use = msg.content
    assert text.type == "text" and text.text == "Let me check."
    assert use.type == "tool_use" and use.name == "get_weather"
    assert use.input == {"query": "Weather in Paris?"}
    # The tool's answer goes back through the gateway to the upstream as a tool_result.
    follow_up, _ = create(client, model=VIA_ADAPTER, tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                                          {"type": "tool_use", "id": use.id,
                                           "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "18C and sunny"},
                                     {"type": "text", "text": "Thanks"}]}])
    assert follow_up.content[0].text == f"Tool results: {use.id}=18C and sunny"
    sent = upstream.last_body["messages"]
    assert sent[1]["content"][1] == {"type": "tool_use", "id": use.id, "name": "get_weather",
                                     "input": {"query": "Weather in Paris?"}}
    assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": use.id,
                                     "content": "18C and sunny"}


def test_streamed_tool_use_and_forced_tool_choice(client, upstream):
    with client.messages.stream(model=VIA_ADAPTER, max_tokens=200, tools=[WEATHER],
                                tool_choice={"type": "tool", "name": "get_weather",
                                             "disable_parallel_tool_use": True},
                                messages=[{"role": "user", "content": "Rain in Oslo?"}]) as s:
        final = s.get_final_message()
    (use,) = final.content  # a forced call comes without preamble text
    assert use.type == "tool_use" and use.input == {"query": "Rain in Oslo?"}
    assert final.stop_reason == "tool_use"
    assert upstream.last_body["tool_choice"] == {"type": "tool", "name": "get_weather",
                                                 "disable_parallel_tool_use": True}


def test_tool_choice_none_still_needs_a_tools_model(client, config):
    msg, headers = create(client, model="auto", tools=[WEATHER], tool_choice={"type": "none"},
                          messages=[{"role": "user", "content": "Just chat."}])
    assert headers["x-contextforge-model"] in capable(config, "tools")
    assert all(b.type == "text" for b in msg.content)


# --- images --------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["auto", "budget", "quality-first"])
@pytest.mark.parametrize("source", [
    {"type": "base64", "media_type": "image/png", "data": PIXEL},
    {"type": "url", "url": "https://example.com/cat.png"},
])
def test_images_route_only_to_models_with_vision(client, config, route, source):
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image", "source": source}]}]
    _, headers = create(client, model=route, messages=messages)
    assert headers["x-contextforge-model"] in capable(config, "vision")


def test_image_reaches_the_upstream_as_sent(client, upstream):
    create(client, model=VIA_ADAPTER, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": PIXEL}},
        {"type": "text", "text": "Describe it."}]}])
    blocks = upstream.last_body["messages"][0]["content"]
    assert blocks[0] == {"type": "image", "source": {"type": "base64",
                                                     "media_type": "image/png", "data": PIXEL}}


# --- errors --------------------------------------------------------------------------------


def test_unknown_model_is_not_found(client, http):
    with pytest.raises(anthropic.NotFoundError) as exc:
        create(client, model="claude-17", messages=USER)
    assert exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "not_found_error"
    assert "claude-17" in exc.value.body["error"]["message"]
    assert http.get("/healthz").status_code == 200


def test_no_eligible_model_is_422(client):
    with pytest.raises(anthropic.UnprocessableEntityError) as exc:
        create(client, model="command", messages=USER, tools=[WEATHER])
    assert exc.value.body["error"]["type"] == "invalid_request_error"


def test_wrong_type_from_the_sdk_is_bad_request(client):
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model="auto", max_tokens=10, messages=USER,
                               stop_sequences="QED")  # type: ignore[arg-type]
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert "stop_sequences" in exc.value.body["error"]["message"]


MSG = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(("body", "field"), [
    (b'{"model": "auto", "messages": [', None),
    (b"not json", None),
    ({"model": "auto", "messages": MSG}, "max_tokens"),
    ({"max_tokens": 10, "messages": MSG}, "model"),
    ({"model": "auto", "max_tokens": 10, "messages": []}, "messages"),
    ({"model": "auto", "max_tokens": 0, "messages": MSG}, "max_tokens"),
    ({"model": "auto", "max_tokens": 10, "messages": MSG, "temperature": 1.5}, "temperature"),
    ({"model": "auto", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
     "messages[0].role"),
    ({"model": "auto", "max_tokens": 10,
      "messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages[0].content[0].text"),
    ({"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "data": "x"}}]}]},
     "messages[0].content[0].type"),
    ({"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
     "messages[0].content[0]"),
    ({"model": "auto", "max_tokens": 10, "messages": MSG, "tools": [{"name": "f"}]},
     "tools[0].input_schema"),
    ({"model": "auto", "max_tokens": 10, "messages": MSG, "tool_choice": {"type": "maybe"}},
     "tool_choice.type"),
])
def test_bad_bodies_are_400_in_anthropic_shape(http, body, field):
    if isinstance(body, dict):
        r = http.post("/v1/messages", json=body)
    else:
        r = http.post("/v1/messages", content=body,
                      headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    data = r.json()
    assert data["type"] == "error" and set(data) == {"type", "error"}
    assert data["error"]["type"] == "invalid_request_error"
    if field is not None:
        assert field in data["error"]["message"], data
    assert "Traceback" not in r.text


def test_upstream_rejection_is_bad_request(client):
    with pytest.raises(anthropic.BadRequestError) as exc:
        create(client, model=VIA_ADAPTER, messages=[{"role": "user", "content": "FAIL 400"}])
    assert "simulated failure (FAIL 400)" in exc.value.body["error"]["message"]


def test_upstream_overload_is_503_overloaded(client):
    with pytest.raises(anthropic.InternalServerError) as exc:
        create(client, model=VIA_ADAPTER, messages=[{"role": "user", "content": "FAIL 529"}])
    assert exc.value.status_code == 503
    assert exc.value.body["error"]["type"] == "overloaded_error"


def test_failure_mid_stream_is_an_error_event(client):
    seen = []
    with pytest.raises(anthropic.APIStatusError) as exc, client.messages.stream(
            model=VIA_ADAPTER, max_tokens=100,
            messages=[{"role": "user", "content": "FAIL MIDSTREAM now"}]) as s:
        for event in s:
            seen.append(event.type)
    assert seen[0] == "message_start" and "content_block_delta" in seen
    assert exc.value.body["error"]["type"] == "overloaded_error"


def test_openai_endpoints_keep_openai_errors(http):
    r = http.post("/v1/chat/completions", json={"model": "claude-17", "messages": MSG})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_master_key_guard_answers_in_anthropic_shape():
    """With a master key, the SDK's key (sent as a bearer token) passes the guard."""
    guard = master_key_guard(ServerConfig(host="0.0.0.0", master_key="sk-master"))
    app = Litestar(route_handlers=[Router(path="/v1", route_handlers=[create_message],
                                          guards=[guard])],
                   dependencies={"gateway": Provide(provide_gateway, sync_to_thread=False)})
    with serve(app) as url:
        with anthropic.Anthropic(base_url=url, api_key="sk-wrong", max_retries=0) as c, \
                pytest.raises(anthropic.AuthenticationError) as exc:
            c.messages.create(model="auto", max_tokens=5, messages=MSG)
        assert exc.value.body["error"]["type"] == "authentication_error"
        with anthropic.Anthropic(base_url=url, api_key="sk-master", max_retries=0) as c, \
                pytest.raises(anthropic.InternalServerError) as exc:
            c.messages.create(model="auto", max_tokens=5, messages=MSG)
        # Past the guard: this bare app has no gateway, so it is "not ready" (503).
        assert exc.value.status_code == 503
        assert exc.value.body["error"]["type"] == "overloaded_error"
