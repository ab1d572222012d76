"""Model-level fallback through the gateway: configured chains (``models[].fallbacks``,
``routes[].fallbacks``), the router's next-best candidate after them, regions and context
windows kept, and a pinned prompt too long for its model moved to a larger one."""

from __future__ import annotations

import msgspec
import pytest
from litestar.testing import TestClient

from router.config import ConfigError, Deployment, SimulatedSettings, load_config
from router.dispatch_config import FallbackResponse
from router.traffic import TrafficLog
from service.app import create_app

BROKEN = Deployment(provider="simulated", simulated=SimulatedSettings(failure_rate=1.0))
PROMPT = {"role": "user", "content": "Prove that the square root of 2 is irrational."}



def gateway(engine, *, models=None, routes=None, dispatch=None, log_to=None):
    """The default config with ``models``' entries replaced ({name: {field: value}}), routes'
    likewise, and dispatch settings; the traffic log in ``log_to`` (a folder), else off."""
    cfg = load_config()
    ms = [msgspec.structs.replace(m, **(models or {}).get(m.name, {})) for m in cfg.models]
    rs = [msgspec.structs.replace(r, **(routes or {}).get(r.name, {})) for r in cfg.routes]
    d = msgspec.structs.replace(cfg.dispatch, backoff_ms=0, **(dispatch or {}))
    traffic = (msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{log_to / 't.sqlite3'}")
               if log_to is not None else msgspec.structs.replace(cfg.traffic, enabled=False))
    return create_app(msgspec.structs.replace(cfg, models=ms, routes=rs, dispatch=d,
                                              traffic=traffic), engine=engine)


def chat(c: TestClient, model: str, content: str = PROMPT["content"], **kw):
    return c.post("/v1/chat/completions", headers=kw.pop("headers", None), json={
        "model": model, "messages": [{"role": "user", "content": content}], **kw})


@pytest.mark.parametrize("stream", [False, True])
def test_a_pinned_model_falls_back_along_its_configured_chain(engine, stream):
    app = gateway(engine, models={
        "gpt-4o": {"deployments": [BROKEN], "fallbacks": ["claude-3.5-sonnet", "gpt-4o-mini"]},
        "claude-3.5-sonnet": {"deployments": [BROKEN]}})
    with TestClient(app) as c:
        r = chat(c, "gpt-4o", stream=stream)
        metrics = c.get("/metrics").text
    assert r.status_code == 200 and r.headers["x-contextforge-model"] == "gpt-4o-mini"
    if stream:
        assert r.text.rstrip().endswith("data: [DONE]") and '"error"' not in r.text
    assert ('contextforge_model_fallbacks_total{chosen="gpt-4o-mini",failed="claude-3.5-sonnet"}'
            ' 1.0') in metrics


def test_a_routes_chain_comes_before_its_next_best_candidate(engine):
    first = engine.decide(PROMPT["content"]).model
    last_resort = "mixtral-8x7b" if first != "mixtral-8x7b" else "command-r"
    app = gateway(engine, models={first: {"deployments": [BROKEN]}},
                  routes={"auto": {"fallbacks": [last_resort]}},
                  dispatch={"fallback_models": 0})
    with TestClient(app) as c:
        r = chat(c, "auto")
    assert r.status_code == 200 and r.headers["x-contextforge-model"] == last_resort


def test_after_the_chain_the_router_picks_the_next_best(engine):
    first = engine.decide(PROMPT["content"]).model
    dead = "mixtral-8x7b" if first != "mixtral-8x7b" else "command-r"
    app = gateway(engine, models={first: {"deployments": [BROKEN], "fallbacks": [dead]},
                                  dead: {"deployments": [BROKEN]}},
                  dispatch={"fallback_models": 1})
    with TestClient(app) as c:
        r = chat(c, "auto")
    assert r.status_code == 200
    assert r.headers["x-contextforge-model"] not in (first, dead)


def test_a_fallback_that_cannot_serve_the_request_is_skipped(engine):
    """``command`` has 4,096 tokens of context: a request asking for more output skips it."""
    app = gateway(engine, models={"gpt-4o": {"deployments": [BROKEN],
                                             "fallbacks": ["command", "gpt-4o-mini"]}})
    with TestClient(app) as c:
        r = chat(c, "gpt-4o", max_tokens=8000)
    assert r.status_code == 200 and r.headers["x-contextforge-model"] == "gpt-4o-mini"


def test_no_fallback_leaves_the_required_regions(engine):
    eu_broken = msgspec.structs.replace(BROKEN, residency="eu")
    us = Deployment(provider="simulated", residency="us")
    app = gateway(engine, models={"gpt-4o": {"deployments": [eu_broken],
                                             "fallbacks": ["gpt-4o-mini"]},
                                  "gpt-4o-mini": {"deployments": [us]}})
    with TestClient(app) as c:
        pinned = chat(c, "gpt-4o", headers={"x-contextforge-regions": "eu"})
        free = chat(c, "gpt-4o")
    assert pinned.status_code == 502
    assert free.status_code == 200 and free.headers["x-contextforge-model"] == "gpt-4o-mini"


def test_a_pinned_prompt_too_long_for_its_model_moves_to_a_larger_one(engine):
    long_prompt = "word " * 6000  # over command's 4,096 tokens
    plain = gateway(engine)
    chained = gateway(engine, models={"command": {"fallbacks": ["command-r"]}})
    with TestClient(plain) as c:
        refused = chat(c, "command", long_prompt)
    with TestClient(chained) as c:
        moved = chat(c, "command", long_prompt)
        short = chat(c, "command", "hello")
    assert refused.status_code in (400, 422) and "context window" in refused.text
    assert moved.status_code == 200 and moved.headers["x-contextforge-model"] == "command-r"
    assert short.headers["x-contextforge-model"] == "command"


def test_unknown_fallbacks_are_config_errors_with_their_path(tmp_path):
    text = (load_config.__globals__["DEFAULT_CONFIG"]).read_text()
    text = text.replace("  - name: auto\n", "  - name: auto\n    fallbacks: [gpt5]\n", 1)
    path = tmp_path / "contextforge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"routes\[0\]\.fallbacks\[0\]: unknown model 'gpt5'"):
        load_config(path)


# --- the configured fallback response -------------------------------------------------------


def test_everything_failing_answers_with_the_fallback_response(engine, tmp_path):
    app = gateway(engine, models={"gpt-4o": {"deployments": [BROKEN]}}, log_to=tmp_path,
                  dispatch={"fallback_response": FallbackResponse(content="Try again soon.")})
    with TestClient(app) as c:
        r = chat(c, "gpt-4o")
        s = chat(c, "gpt-4o", stream=True, stream_options={"include_usage": True})
        refused = chat(c, "gpt-4o", "hi", max_tokens=10**6)  # the request's fault: no reply
        anthropic = c.post("/v1/messages", json={
            "model": "gpt-4o", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200 and r.headers["x-contextforge-fallback"] == "static"
    assert r.json()["choices"][0]["message"]["content"] == "Try again soon."
    assert s.status_code == 200 and s.headers["x-contextforge-fallback"] == "static"
    events = [msgspec.json.decode(line[6:]) for line in s.text.splitlines()
              if line.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                   if e["choices"]) == "Try again soon."
    assert s.text.rstrip().endswith("data: [DONE]")
    assert refused.status_code in (400, 422) and "x-contextforge-fallback" not in refused.headers
    assert anthropic.status_code == 200 and "Try again soon." in anthropic.text
    assert "event: message_stop" in anthropic.text and "event: error" not in anthropic.text
    log = TrafficLog(f"sqlite:///{tmp_path / 't.sqlite3'}")
    try:
        logged = {row.id: row for row in log.records()}
    finally:
        log.close()
    for reply in (r, s):
        row = logged[reply.headers["x-contextforge-request-id"]]
        assert row.error.startswith("static fallback response after:") and row.cost_usd == 0


def test_a_routes_fallback_response_overrides_the_gateways(engine):
    first = engine.decide(PROMPT["content"]).model
    own = FallbackResponse(content="The auto route is resting.")
    app = gateway(engine, models={first: {"deployments": [BROKEN]}},
                  routes={"auto": {"fallback_response": own}},
                  dispatch={"fallback_models": 0,
                            "fallback_response": FallbackResponse(content="generic")})
    with TestClient(app) as c:
        r = chat(c, "auto")
    assert r.json()["choices"][0]["message"]["content"] == "The auto route is resting."


def test_off_by_default_everything_failing_is_a_5xx(engine):
    with TestClient(gateway(engine, models={"gpt-4o": {"deployments": [BROKEN]}})) as c:
        r = chat(c, "gpt-4o")
    assert r.status_code == 502 and "x-contextforge-fallback" not in r.headers
