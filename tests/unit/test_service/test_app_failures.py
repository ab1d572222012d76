"""The app in-process (Litestar's TestClient): auth, upstream failures, timeouts."""

from __future__ import annotations

import msgspec
import pytest
from litestar.testing import TestClient

from router.config import ConfigError, Deployment, SimulatedSettings, load_config
from router.engine import RoutingEngine
from service.app import create_app

BODY = {"model": "auto", "messages": [{"role": "user", "content": "Name three primes."}]}


@pytest.fixture(scope="module")
def engine():
    return RoutingEngine.from_config(load_config())


def configured(*, host="127.0.0.1", master_key="", timeout_s=60.0, **simulated):
    cfg = load_config()
    server = msgspec.structs.replace(cfg.server, host=host, master_key=master_key,
                                     upstream_timeout_s=timeout_s)
    deployment = Deployment(provider="simulated", simulated=SimulatedSettings(**simulated))
    traffic = msgspec.structs.replace(cfg.traffic, enabled=False)
    return msgspec.structs.replace(cfg, server=server, default_deployment=deployment,
                                   traffic=traffic)


def test_non_loopback_requires_the_master_key(engine, monkeypatch):
    monkeypatch.delenv("CONTEXTFORGE_MASTER_KEY", raising=False)
    with pytest.raises(ConfigError, match="master_key"):
        create_app(configured(host="0.0.0.0"), engine=engine)
    app = create_app(configured(host="0.0.0.0", master_key="s3cret"), engine=engine)
    with TestClient(app) as c:
        assert c.post("/v1/chat/completions", json=BODY).status_code == 401
        wrong = c.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer no"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        ok = c.post("/v1/chat/completions", json=BODY,
                    headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/v1/models").status_code == 401
        # Anthropic's SDK sends its key as x-api-key.
        assert c.get("/v1/models", headers={"x-api-key": "s3cret"}).status_code == 200
        assert c.get("/v1/models", headers={"x-api-key": "s3cre"}).status_code == 401
        assert c.get("/healthz").status_code == 200  # probes stay open


def test_master_key_from_environment(engine, monkeypatch):
    monkeypatch.setenv("CONTEXTFORGE_MASTER_KEY", "from-env")
    with TestClient(create_app(configured(host="10.0.0.5"), engine=engine)) as c:
        auth = {"authorization": "Bearer from-env"}
        assert c.post("/v1/chat/completions", json=BODY, headers=auth).status_code == 200


def test_loopback_needs_no_key(engine):
    with TestClient(create_app(configured(), engine=engine)) as c:
        assert c.post("/v1/chat/completions", json=BODY).status_code == 200


def test_failing_upstream_is_502_streamed_or_not(engine):
    with TestClient(create_app(configured(failure_rate=1.0), engine=engine)) as c:
        r = c.post("/v1/chat/completions", json=BODY)
        assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"
        s = c.post("/v1/chat/completions", json={**BODY, "stream": True})
        assert s.status_code == 502 and s.json()["error"]["code"] == "bad_gateway"
        assert c.get("/healthz").status_code == 200


def test_slow_upstream_is_504(engine):
    with TestClient(create_app(configured(ttft_ms=2000, timeout_s=0.05), engine=engine)) as c:
        r = c.post("/v1/chat/completions", json=BODY)
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


def test_stall_mid_stream_becomes_an_error_event(engine):
    # First token at once, then 1 token/s: the second chunk misses the 0.1 s timeout.
    app = create_app(configured(tokens_per_s=1.0, timeout_s=0.1), engine=engine)
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json={**BODY, "stream": True})
        assert r.status_code == 200
        events = [line for line in r.text.splitlines() if line.startswith("data: ")]
        assert '"code":"upstream_timeout"' in events[-2]
        assert events[-1] == "data: [DONE]"


def test_unknown_provider_is_a_config_error(engine):
    cfg = load_config()
    bad = msgspec.structs.replace(cfg, default_deployment=Deployment(provider="carrier-pigeon"))
    with pytest.raises(ConfigError, match="carrier-pigeon"):
        create_app(bad, engine=engine)


def test_readyz_before_the_lifespan_is_503(engine):
    app = create_app(configured(), engine=engine)
    with TestClient(app) as c:
        assert c.get("/readyz").json()["status"] == "ready"
    # After shutdown (and before start-up) the app is not ready.
    assert TestClient(app).get("/readyz").status_code == 503


def test_a_deployment_without_its_key_fails_at_start_up(engine, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = load_config()
    models = [msgspec.structs.replace(m, deployments=[Deployment(provider="openai")])
              if m.name == "gpt-4o" else m for m in cfg.models]
    with pytest.raises(ConfigError, match=r"models\[0\]\.deployments\[0\] \(gpt-4o\).*"
                                          "OPENAI_API_KEY"):
        create_app(msgspec.structs.replace(cfg, models=models), engine=engine)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    create_app(msgspec.structs.replace(cfg, models=models), engine=engine)  # now it builds
