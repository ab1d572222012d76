"""The gateway over real HTTP upstreams: failover, upstream errors' statuses, streaming usage."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from litestar.testing import TestClient

from router.config import Deployment, ProviderEntry, RouteEntry, load_config
from router.dispatch_config import ProbeConfig
from router.providers import Timeouts
from service.app import create_app
from tests.upstreams import serve
from tests.upstreams.openai_compat import SimState
from tests.upstreams.openai_compat import create_app as openai_sim

KEY = "sk-sim-0123456789abcdef"



@pytest.fixture(scope="module")
def upstream():
    state = SimState(api_key=KEY, strict=False)
    with serve(openai_sim(state)) as url:
        yield url, state


def configured(upstream_url: str, *deployments: Deployment):
    cfg = load_config()
    providers = [ProviderEntry(name="good", type="openai-compatible",
                               endpoint=f"{upstream_url}/v1", api_key=KEY),
                 # Nothing listens on port 1: connection refused, at once.
                 ProviderEntry(name="dead", type="openai-compatible",
                               endpoint="http://127.0.0.1:1/v1")]
    models = [msgspec.structs.replace(m, deployments=list(deployments))
              if m.name == "gpt-4o" else m for m in cfg.models]
    dispatch = msgspec.structs.replace(cfg.dispatch, backoff_ms=0, failure_threshold=1000)
    traffic = msgspec.structs.replace(cfg.traffic, enabled=False)
    return msgspec.structs.replace(cfg, providers=providers, models=models, dispatch=dispatch,
                                   traffic=traffic)


def chat(c: TestClient, text: str, headers=None, **kw):
    return c.post("/v1/chat/completions", headers=headers, json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": text}], **kw})


def test_a_dead_deployment_fails_over_to_the_live_one(upstream, engine):
    url, _ = upstream
    cfg = configured(url, Deployment(provider="dead"), Deployment(provider="good"))
    with TestClient(create_app(cfg, engine=engine)) as c:
        replies = [chat(c, f"question {i}") for i in range(12)]
        assert all(r.status_code == 200 for r in replies)
        assert {r.json()["choices"][0]["message"]["content"] for r in replies[:2]} == {
            "echo: question 0", "echo: question 1"}
        metrics = c.get("/metrics").text
    # Weighted random order: the dead one was tried first about half the time, and failed.
    assert ('contextforge_upstream_errors_total{model="gpt-4o",provider="openai-compatible",'
            'status="503"}') in metrics


def test_upstream_rate_limit_is_a_429_with_retry_after(upstream, engine):
    url, _ = upstream
    cfg = configured(url, Deployment(provider="good"))
    with TestClient(create_app(cfg, engine=engine)) as c:
        r = chat(c, "FAIL 429")
        assert r.status_code == 429 and r.headers["retry-after"] == "7"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert "sk-sim" not in r.text


def test_upstream_rejection_is_a_400_and_not_retried(upstream, engine):
    url, _ = upstream
    cfg = configured(url, Deployment(provider="good"), Deployment(provider="good",
                                                                  model="gpt-4o-copy"))
    app = create_app(cfg, engine=engine)
    with TestClient(app) as c:
        r = chat(c, "FAIL 400")
        assert r.status_code == 400 and r.json()["error"]["code"] == "upstream_rejected"
        # Another deployment would refuse the same request: one call went out, not two.
        upstreams = app.state.gateway.dispatchers["gpt-4o"].upstreams
        assert sum(u.calls for u in upstreams) == 1
        assert all(u.breaker.state == "closed" for u in upstreams)


def test_upstream_5xx_everywhere_is_a_503(upstream, engine):
    url, _ = upstream
    cfg = configured(url, Deployment(provider="good"))
    with TestClient(create_app(cfg, engine=engine)) as c:
        r = chat(c, "FAIL 503")
        assert r.status_code == 503 and r.json()["error"]["type"] == "upstream_error"


def test_stream_through_a_real_adapter_ends_with_usage(upstream, engine):
    url, _ = upstream
    cfg = configured(url, Deployment(provider="good"))
    with TestClient(create_app(cfg, engine=engine)) as c:
        r = chat(c, "tell me more", stream=True, stream_options={"include_usage": True})
        assert r.status_code == 200
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [msgspec.json.decode(e) for e in events[:-1]]
        text = "".join(ch["choices"][0]["delta"].get("content") or ""
                       for ch in chunks if ch["choices"])
        assert text == "echo: tell me more"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
        assert {ch["id"] for ch in chunks} == {r.headers["x-contextforge-request-id"]}


PROMPT = {"role": "user", "content": "Prove that the square root of 2 is irrational."}


def routed_choice(engine) -> str:
    """The model route auto picks for PROMPT when everything is healthy."""
    return engine.decide(PROMPT["content"]).model


def breaking(engine, model: str, fallback_models: int):
    """The default config with every deployment of ``model`` failing."""
    from router.config import SimulatedSettings

    cfg = load_config()
    broken = Deployment(provider="simulated", simulated=SimulatedSettings(failure_rate=1.0))
    models = [msgspec.structs.replace(m, deployments=[broken]) if m.name == model else m
              for m in cfg.models]
    dispatch = msgspec.structs.replace(cfg.dispatch, backoff_ms=0,
                                       fallback_models=fallback_models)
    traffic = msgspec.structs.replace(cfg.traffic, enabled=False)
    return create_app(msgspec.structs.replace(cfg, models=models, dispatch=dispatch,
                                              traffic=traffic), engine=engine)


@pytest.mark.parametrize("stream", [False, True])
def test_routed_requests_fall_back_to_the_next_best_model(engine, stream):
    first = routed_choice(engine)
    with TestClient(breaking(engine, first, fallback_models=1)) as c:
        r = c.post("/v1/chat/completions", json={"model": "auto", "messages": [PROMPT],
                                                  "stream": stream})
        metrics = c.get("/metrics").text
    assert r.status_code == 200
    second = r.headers["x-contextforge-model"]
    assert second != first
    assert (f'contextforge_model_fallbacks_total{{chosen="{second}",failed="{first}"}} 1.0'
            in metrics)


def test_without_fallback_the_failure_reaches_the_client(engine):
    with TestClient(breaking(engine, routed_choice(engine), fallback_models=0)) as c:
        r = c.post("/v1/chat/completions", json={"model": "auto", "messages": [PROMPT]})
    assert r.status_code == 502


def test_a_named_model_never_falls_back(engine):
    first = routed_choice(engine)
    with TestClient(breaking(engine, first, fallback_models=1)) as c:
        r = c.post("/v1/chat/completions", json={"model": first, "messages": [PROMPT]})
    assert r.status_code == 502


def test_deployment_health_shows_in_the_admin_api_and_metrics(upstream, engine):
    url, _ = upstream
    cfg = configured(url, Deployment(provider="dead"), Deployment(provider="good"))
    master = {"authorization": "Bearer admin-s3cret"}  # the admin API needs the master key
    cfg = msgspec.structs.replace(cfg, server=msgspec.structs.replace(
        cfg.server, master_key="admin-s3cret"))
    with TestClient(create_app(cfg, engine=engine)) as c:
        for i in range(10):
            assert chat(c, f"question {i}", headers=master).status_code == 200
        rows = {r["deployment"].split("@")[1]: r
                for r in c.get("/admin/deployments", headers=master).json()["data"]
                if r["model"] == "gpt-4o"}
        metrics = c.get("/metrics", headers=master).text
    dead, good = rows["http://127.0.0.1:1/v1"], rows[f"{url}/v1"]
    assert dead["state"] == "degraded" and dead["error_rate"] == 1.0
    assert dead["consecutive_failures"] == dead["calls"] > 0
    assert good["state"] == "healthy" and good["error_rate"] == 0.0
    assert good["latency_ewma_ms"] > 0 and good["inflight"] == 0
    assert good["strategy"] == "weighted" and good["calls_last_minute"] == good["calls"]
    label = f'deployment="openai-compatible:gpt-4o@{url}/v1",model="gpt-4o"'
    assert f"contextforge_deployment_state{{{label}}} 0.0" in metrics
    assert "contextforge_deployment_error_rate{" in metrics
    assert f'contextforge_deployment_latency_ewma_seconds{{{label},phase="total"}}' in metrics


def test_a_slow_upstream_times_out_per_deployment_and_each_attempt_counts_once(upstream,
                                                                               engine):
    """total_s on the deployment bounds each attempt; every attempt is one upstream error."""
    state = SimState(api_key=KEY, strict=False)
    sim = openai_sim(state)

    async def slow(scope, receive, send):
        if scope["type"] == "http":
            await asyncio.sleep(1.0)
        await sim(scope, receive, send)

    with serve(slow) as slow_url:
        cfg = configured(slow_url, Deployment(provider="good",
                                              timeouts=Timeouts(total_s=0.1)))
        cfg = msgspec.structs.replace(cfg, providers=[ProviderEntry(
            name="good", type="openai-compatible", endpoint=f"{slow_url}/v1", api_key=KEY)])
        with TestClient(create_app(cfg, engine=engine)) as c:
            r = chat(c, "hello")
            metrics = c.get("/metrics").text
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    attempts = cfg.dispatch.retry.max_attempts
    assert ('contextforge_upstream_errors_total{model="gpt-4o",provider="openai-compatible",'
            f'status="504"}} {float(attempts)}') in metrics


def test_active_probes_are_off_by_default_and_call_each_deployment_when_on(engine):
    state = SimState(api_key=KEY, strict=False)
    with serve(openai_sim(state)) as url:
        cfg = configured(url, Deployment(provider="good"))
        with TestClient(create_app(cfg, engine=engine)):
            time.sleep(1.3)
        assert state.last_body is None  # off: no call without traffic
        probes = ProbeConfig(enabled=True, interval_s=1, only_unhealthy=False)
        cfg = msgspec.structs.replace(cfg, dispatch=msgspec.structs.replace(
            cfg.dispatch, probes=probes))
        with TestClient(create_app(cfg, engine=engine)):
            deadline = time.monotonic() + 5
            while state.last_body is None and time.monotonic() < deadline:
                time.sleep(0.05)
    assert state.last_body is not None and state.last_body["max_tokens"] == 1
    assert state.last_body["messages"] == [{"role": "user", "content": "ping"}]


def test_a_routes_strategy_orders_the_deployments_of_the_models_it_routes(upstream, engine):
    url, state = upstream
    cfg = configured(url, Deployment(provider="good", input_price=10.0),
                     Deployment(provider="good", model="gpt-4o-cheap", input_price=1.0))
    route = RouteEntry(name="cheap", candidates=["gpt-4o"], strategy="lowest_cost")
    cfg = msgspec.structs.replace(cfg, routes=[*cfg.routes, route])
    with TestClient(create_app(cfg, engine=engine)) as c:
        routed = set()
        for i in range(8):
            assert c.post("/v1/chat/completions", json={
                "model": "cheap", "messages": [{"role": "user", "content": f"q {i}"}],
            }).status_code == 200
            routed.add(state.last_body["model"])
        named = set()
        for i in range(30):  # the model's own strategy: weighted
            assert chat(c, f"q {i}").status_code == 200
            named.add(state.last_body["model"])
    assert routed == {"gpt-4o-cheap"} and named == {"gpt-4o", "gpt-4o-cheap"}
