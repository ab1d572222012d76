"""Accounting end to end: traffic-log rows, feedback and metrics, through the app."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient

from router.config import Deployment, SimulatedSettings, load_config
from router.traffic import TrafficLog
from service.app import create_app

PROMPT = "Write a haiku about routers, then explain its meter."
BODY = {"model": "auto", "messages": [{"role": "system", "content": "You are a poet."},
                                      {"role": "user", "content": PROMPT}], "user": "ada"}



def configured(tmp_path, **traffic):
    cfg = load_config()
    log = msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{tmp_path / 't.sqlite3'}",
                                  **traffic)
    return msgspec.structs.replace(cfg, traffic=log)


def rows(tmp_path):
    log = TrafficLog(f"sqlite:///{tmp_path / 't.sqlite3'}")
    try:
        return {r.id: r for r in log.records()}, log.feedback()
    finally:
        log.close()


def test_every_request_is_logged_with_its_decision(tmp_path, engine):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        r = c.post("/v1/chat/completions", json=BODY)
        s = c.post("/v1/chat/completions", json={**BODY, "stream": True,
                                                 "stream_options": {"include_usage": True}})
        concrete = c.post("/v1/chat/completions", json={**BODY, "model": "gpt-4o-mini"})
    assert r.status_code == s.status_code == concrete.status_code == 200
    logged, _ = rows(tmp_path)
    assert len(logged) == 3
    rid = r.headers["x-contextforge-request-id"]
    assert r.json()["id"] == rid  # the client's handle for feedback
    row = logged[rid]
    usage = r.json()["usage"]
    assert (row.status, row.route, row.model, row.user_id) == (200, "auto",
                                                                r.json()["model"], "ada")
    assert (row.input_tokens, row.output_tokens) == (usage["prompt_tokens"],
                                                      usage["completion_tokens"])
    assert row.cost_usd == pytest.approx(float(r.headers["x-contextforge-cost-usd"]), rel=1e-6)
    assert row.deployment.startswith("simulated:") and not row.stream
    assert PROMPT in row.prompt and row.prompt.startswith("You are a poet.")
    assert row.embedding.shape == (384,) and abs(np.linalg.norm(row.embedding) - 1) < 1e-4
    assert {c.model for c in row.candidates} == {m.name for m in engine.routes["auto"].models}
    assert row.model in {c.model for c in row.candidates}
    # The logged embedding is the sentence embedding the router read first (the head of what
    # it reads, beside its layers'): re-embedding the logged prompt gives it back.
    routed = engine.embed(row.prompt)
    assert routed.shape == (384 * (1 + len(engine.router.layers)),)
    assert float(routed[:384] @ row.embedding) > 0.999

    sid = s.headers["x-contextforge-request-id"]
    events = [line[6:] for line in s.text.splitlines() if line.startswith("data: {")]
    assert all(msgspec.json.decode(e)["id"] == sid for e in events)
    srow = logged[sid]
    assert srow.stream and srow.ttft_ms is not None and srow.ttft_ms <= srow.latency_ms
    assert srow.output_tokens == msgspec.json.decode(events[-1])["usage"]["completion_tokens"]

    crow = logged[concrete.headers["x-contextforge-request-id"]]
    assert crow.route == "none" and crow.candidates is None and crow.embedding is None

    # The answers are kept for scoring, streamed or not; with the deciding policy and the
    # propensity (1.0: the default routes do not explore; a named model is the caller's).
    assert row.answer == r.json()["choices"][0]["message"]["content"]
    streamed = "".join(msgspec.json.decode(e)["choices"][0]["delta"].get("content") or ""
                       for e in events if msgspec.json.decode(e)["choices"])
    assert srow.answer == streamed and streamed
    assert (row.policy, row.propensity) == ("tradeoff(willingness_to_pay=0.02)", 1.0)
    assert row.router == engine.router.spec.name
    assert (crow.policy, crow.propensity, crow.answer) == (
        "pinned", 1.0, concrete.json()["choices"][0]["message"]["content"])


def test_answers_are_not_kept_when_log_answers_is_off(tmp_path, engine):
    with TestClient(create_app(configured(tmp_path, log_answers=False), engine=engine)) as c:
        assert c.post("/v1/chat/completions", json=BODY).status_code == 200
    (row,) = rows(tmp_path)[0].values()
    assert row.answer is None and row.tool_calls is None and row.propensity == 1.0


def test_an_exploring_route_logs_the_probability_of_each_choice(tmp_path):
    from router.policy import Exploration

    cfg = configured(tmp_path)
    auto = next(r for r in cfg.routes if r.name == "auto")
    exploring = msgspec.structs.replace(
        auto, exploration=Exploration(rate=0.5, margin=1.0, seed=7))
    cfg = msgspec.structs.replace(cfg, routes=[exploring if r.name == "auto" else r
                                               for r in cfg.routes])
    with TestClient(create_app(cfg)) as c:
        for _ in range(40):
            assert c.post("/v1/chat/completions", json=BODY).status_code == 200
    logged = list(rows(tmp_path)[0].values())
    n = len(logged[0].candidates)  # margin 1.0: every eligible candidate may be drawn
    greedy = max(set(r.model for r in logged), key=[r.model for r in logged].count)
    for r in logged:
        expected = 0.5 / n + (0.5 if r.model == greedy else 0.0)
        assert r.propensity == pytest.approx(expected)
    assert len({r.model for r in logged}) > 3  # exploration reached other models


def test_failed_requests_are_logged_with_their_error(tmp_path, engine):
    cfg = configured(tmp_path)
    cfg = msgspec.structs.replace(cfg, default_deployment=Deployment(
        provider="simulated", simulated=SimulatedSettings(failure_rate=1.0)))
    with TestClient(create_app(cfg, engine=engine)) as c:
        assert c.post("/v1/chat/completions", json=BODY).status_code == 502
    (row,) = rows(tmp_path)[0].values()
    assert row.status == 502 and "simulated upstream failure" in row.error
    assert row.cost_usd == 0.0


def test_prompt_logging_can_be_turned_off(tmp_path, engine):
    cfg = configured(tmp_path, log_prompts=False, log_embeddings=False)
    with TestClient(create_app(cfg, engine=engine)) as c:
        assert c.post("/v1/chat/completions", json=BODY).status_code == 200
    (row,) = rows(tmp_path)[0].values()
    assert row.prompt is None and row.embedding is None and row.candidates


def test_with_redaction_on_the_log_holds_placeholders_and_the_client_the_answer(tmp_path,
                                                                                 engine):
    pii = "Call +44 20 7946 0958 or mail ada@example.com about routers."
    body = {**BODY, "messages": [{"role": "user", "content": pii}]}
    cfg = configured(tmp_path, redact=("email", "phone", "card"))
    with TestClient(create_app(cfg, engine=engine)) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        c.post("/v1/feedback", json={"request_id": r.json()["id"], "rating": 0.1,
                                     "comment": "it ignored ada@example.com"})
    answer = r.json()["choices"][0]["message"]["content"]
    assert "ada@example.com" in answer  # the simulated model echoes the prompt's start
    logged, feedback = rows(tmp_path)
    (row,) = logged.values()
    assert row.prompt == "Call [PHONE] or mail [EMAIL] about routers."
    assert row.answer == answer.replace("ada@example.com", "[EMAIL]").replace(
        "+44 20 7946 0958", "[PHONE]")
    assert row.embedding is not None  # embedded from the prompt as sent
    assert [f.comment for f in feedback] == ["it ignored [EMAIL]"]


def test_feedback_attaches_to_the_request(tmp_path, engine):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        rid = c.post("/v1/chat/completions", json=BODY).json()["id"]
        ok = c.post("/v1/feedback", json={"request_id": rid, "rating": 0.8, "comment": "nice"})
        assert ok.status_code == 201 and ok.json() == {"request_id": rid, "status": "recorded"}
        missing = c.post("/v1/feedback", json={"request_id": "chatcmpl-nope", "rating": 1})
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "request_id"
        bad = c.post("/v1/feedback", json={"request_id": rid, "rating": 7})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "rating"
        extra = c.post("/v1/feedback", json={"request_id": rid, "rating": 1, "stars": 5})
        assert extra.status_code == 400
    _, feedback = rows(tmp_path)
    assert [(f.request_id, f.rating, f.comment) for f in feedback] == [(rid, 0.8, "nice")]


def test_feedback_without_a_traffic_log_is_409(tmp_path, engine):
    with TestClient(create_app(configured(tmp_path, enabled=False), engine=engine)) as c:
        rid = c.post("/v1/chat/completions", json=BODY).json()["id"]
        r = c.post("/v1/feedback", json={"request_id": rid, "rating": 1})
        assert r.status_code == 409 and "traffic" in r.json()["error"]["message"]


def test_metrics_count_requests_tokens_cost_and_decisions(tmp_path, engine):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        for _ in range(3):
            model = c.post("/v1/chat/completions", json=BODY).json()["model"]
        c.post("/v1/chat/completions", json={**BODY, "model": "no-such-model"})
        text = c.get("/metrics").text
    assert (f'contextforge_requests_total{{endpoint="chat",model="{model}",'
            f'provider="simulated",status="200"}} 3.0') in text
    assert f'contextforge_routing_decisions_total{{model="{model}",route="auto"}} 3.0' in text
    assert f'contextforge_tokens_total{{kind="output",model="{model}",tenant="default"}}' in text
    assert 'contextforge_cost_usd_total{model="' in text
    assert "contextforge_routing_decision_seconds_count 3.0" in text
    assert 'contextforge_cache_requests_total{outcome="bypass"} 3.0' in text


def test_postgresql_traffic_log_through_the_gateway(tmp_path, engine):
    """Several replicas share one PostgreSQL log: rows and feedback land there."""
    psycopg = pytest.importorskip("psycopg")
    import uuid

    pg = "postgresql://postgres@127.0.0.1:5432/test"
    schema = f"cf_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    dsn = f"{pg}?options=-csearch_path%3D{schema}"
    try:
        cfg = configured(tmp_path)
        cfg = msgspec.structs.replace(cfg, traffic=msgspec.structs.replace(cfg.traffic, dsn=dsn))
        with TestClient(create_app(cfg, engine=engine)) as a, \
                TestClient(create_app(cfg, engine=engine)) as b:
            ra = a.post("/v1/chat/completions", json=BODY).json()["id"]
            rb = b.post("/v1/chat/completions", json=BODY).json()["id"]
            # Feedback through replica a for the request replica b answered.
            assert a.post("/v1/feedback", json={"request_id": rb, "rating": 0.5}).status_code \
                == 201
        log = TrafficLog(dsn)
        try:
            assert {r.id for r in log.records()} == {ra, rb}
            assert log.get(ra).embedding.shape == (384,)
            assert [f.request_id for f in log.feedback()] == [rb]
        finally:
            log.close()
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
