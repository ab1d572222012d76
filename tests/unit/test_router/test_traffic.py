"""The traffic log on both backends: SQLite (embedded default) and the local PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from router.traffic import CandidateLog, Feedback, TrafficLog, TrafficRecord, UnknownRequest

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'traffic.sqlite3'}"
        return
    psycopg = pytest.importorskip("psycopg")
    schema = f"cf_test_{uuid.uuid4().hex[:12]}"  # CI and sessions share the server
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{PG}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def record(i: int, **kw) -> TrafficRecord:
    rng = np.random.default_rng(i)
    emb = rng.standard_normal(384).astype(np.float32)
    emb /= np.linalg.norm(emb)
    base = dict(id=f"req-{i}", ts=1000.0 + i, status=200, tenant="t1", route="auto",
                model="gpt-4o", deployment="simulated", cache="bypass", input_tokens=10 + i,
                output_tokens=20, cost_usd=1e-5 * i, latency_ms=3.5, ttft_ms=None,
                stream=bool(i % 2), prompt=f"prompt {i}", router="default", encoder="minilm",
                candidates=[CandidateLog("gpt-4o", 0.9, 1e-4), CandidateLog("llama", None, 1e-6)],
                embedding=emb)
    base.update(kw)
    return TrafficRecord(**base)


def test_records_round_trip_with_embeddings_and_candidates(dsn):
    log = TrafficLog(dsn)
    try:
        sent = [record(i) for i in range(5)]
        for r in sent:
            log.write(r)
        log.flush()
        got = log.records()
        assert [r.id for r in got] == [r.id for r in sent]
        for a, b in zip(sent, got, strict=True):
            assert np.array_equal(a.embedding, b.embedding)
            assert b.candidates == a.candidates
            assert (b.stream, b.prompt, b.input_tokens) == (a.stream, a.prompt, a.input_tokens)
        assert log.records(since=1003.0)[0].id == "req-3"
        assert len(log.records(limit=2)) == 2
    finally:
        log.close()


def test_rows_survive_close_and_reopen(dsn):
    log = TrafficLog(dsn)
    for i in range(50):
        log.write(record(i, embedding=None, candidates=None, prompt=None))
    log.close()  # no flush: close must drain the queue
    reopened = TrafficLog(dsn)
    try:
        assert reopened.count() == 50
        r = reopened.get("req-7")
        assert r is not None and r.embedding is None and r.candidates is None
    finally:
        reopened.close()


def test_concurrent_writers_lose_nothing(dsn):
    log = TrafficLog(dsn, batch_max=16)
    try:
        def burst(k: int) -> None:
            for i in range(100):
                log.write(record(k * 1000 + i, embedding=None))
        threads = [threading.Thread(target=burst, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log.flush()
        assert log.count() == 400
    finally:
        log.close()


def test_feedback_attaches_to_a_request_just_written(dsn):
    log = TrafficLog(dsn)
    try:
        log.write(record(1))
        # No explicit flush: feedback must see the row still in the queue.
        log.add_feedback(Feedback("req-1", 0.75, time.time(), "u1", "good"))
        assert [(f.rating, f.comment) for f in log.feedback("req-1")] == [(0.75, "good")]
        with pytest.raises(UnknownRequest):
            log.add_feedback(Feedback("nope", 1.0, time.time()))
        assert len(log.feedback()) == 1
    finally:
        log.close()


def test_bad_dsn_names_the_accepted_forms(tmp_path):
    with pytest.raises(ValueError, match="sqlite:///PATH or postgresql://"):
        TrafficLog("mysql://x")


def test_write_after_close_is_refused(tmp_path):
    log = TrafficLog(f"sqlite:///{tmp_path / 'x.db'}")
    log.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.write(record(0))


def test_rows_within_the_write_window_commit_together_and_flush_does_not_wait(tmp_path):
    log = TrafficLog(f"sqlite:///{tmp_path / 'w.db'}", window_s=0.3)
    batches: list[int] = []
    insert = log._insert
    log._insert = lambda batch: (batches.append(len(batch)), insert(batch))  # type: ignore
    try:
        for i in range(10):
            log.write(record(i))
        time.sleep(0.6)  # the window closes: one commit for the ten rows
        assert batches == [10] and log.count() == 10
        log.write(record(10))
        t0 = time.perf_counter()
        log.flush()  # a waiting flush commits at once, not at the window's end
        assert time.perf_counter() - t0 < 0.25 and log.count() == 11
    finally:
        log.close()


def test_answers_policy_and_propensity_round_trip(dsn):
    log = TrafficLog(dsn)
    try:
        log.write(record(1, answer="C", tool_calls='[{"id": "t", "name": "f"}]',
                         policy="tradeoff(willingness_to_pay=0.02)", propensity=0.25, arm="v2"))
        log.flush()
        (got,) = log.records()
        assert (got.answer, got.tool_calls, got.policy, got.propensity, got.arm) == (
            "C", '[{"id": "t", "name": "f"}]', "tradeoff(willingness_to_pay=0.02)", 0.25, "v2")
    finally:
        log.close()


def test_scores_are_written_once_per_request_and_scorer(dsn):
    from router.traffic import ScoreRow

    log = TrafficLog(dsn)
    try:
        for i in range(4):
            log.write(record(i, answer=f"answer {i}"))
        log.flush()
        first = [ScoreRow(f"req-{i}", "reference", 1.0, "ok") for i in range(2)]
        assert log.write_scores(first) == 2
        # A rerun that scores an overlapping set adds only the new pairs; the old stay as-is.
        again = [ScoreRow(f"req-{i}", "reference", 0.0, "changed") for i in range(3)]
        assert log.write_scores(again) == 1
        assert [(s.request_id, s.score) for s in log.scores(scorer="reference")] == [
            ("req-0", 1.0), ("req-1", 1.0), ("req-2", 0.0)]
        assert log.write_scores([ScoreRow("req-0", "judge", None, "unparseable")]) == 1

        unscored = [r.id for batch in log.batches(unscored_by="reference", batch_size=1)
                    for r, _ in batch]
        assert unscored == ["req-3"]
        scored = [(r.id, s) for batch in log.batches(scored_by="reference", batch_size=2)
                  for r, s in batch]
        assert scored == [("req-0", 1.0), ("req-1", 1.0), ("req-2", 0.0)]
        # A judge's None (could not score) counts as done, but is no training value.
        assert [r.id for b in log.batches(unscored_by="judge") for r, _ in b] == [
            "req-1", "req-2", "req-3"]
        assert list(log.batches(scored_by="judge")) == []
        assert [r.id for b in log.batches(since=1002.0) for r, _ in b] == ["req-2", "req-3"]
    finally:
        log.close()


def test_answered_rows_leave_out_failures_and_cache_hits(dsn):
    # (PostgreSQL once refused this query: a LIKE pattern's % beside the driver's parameters)
    log = TrafficLog(dsn)
    try:
        log.write(record(0, answer="made"))
        log.write(record(1, answer="replayed", cache="hit-semantic"))
        log.write(record(2, answer=None))
        log.write(record(3, answer="failed", status=502))
        log.flush()
        answered = [r.id for b in log.batches(answered=True, since=0.0) for r, _ in b]
        assert answered == ["req-0"]
    finally:
        log.close()


def test_a_log_from_an_earlier_version_gains_the_new_columns(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE requests (id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, "
                 "tenant TEXT, user_id TEXT, route TEXT, model TEXT, deployment TEXT, "
                 "cache TEXT, input_tokens INTEGER, output_tokens INTEGER, cost_usd DOUBLE "
                 "PRECISION, latency_ms DOUBLE PRECISION, ttft_ms DOUBLE PRECISION, status "
                 "INTEGER NOT NULL, error TEXT, stream INTEGER NOT NULL DEFAULT 0, candidates "
                 "TEXT, router TEXT, encoder TEXT, prompt TEXT, embedding BLOB)")
    conn.execute("INSERT INTO requests (id, ts, status, prompt) VALUES ('old-1', 1.0, 200, 'p')")
    conn.commit()
    conn.close()
    for _ in range(2):  # opening twice is idempotent
        log = TrafficLog(f"sqlite:///{path}")
        (old,) = log.records()
        assert (old.id, old.prompt, old.answer, old.propensity) == ("old-1", "p", None, None)
        log.close()


PII = dict(prompt="I'm ada@example.com, call +44 20 7946 0958",
           answer="Charged card 4111 1111 1111 1111; we will call (415) 555-0132.",
           tool_calls=('[{"id": "c1", "name": "mail", '
                       '"arguments": "{\\"to\\": \\"ada@example.com\\"}"}]'))


def test_with_redaction_on_the_rows_hold_placeholders(dsn):
    import json

    from router.redact import Redactor

    log = TrafficLog(dsn, redactor=Redactor(["email", "phone", "card"]))
    try:
        log.write(record(1, **PII))
        log.flush()
        row = log.get("req-1")
        assert row.prompt == "I'm [EMAIL], call [PHONE]"
        assert row.answer == "Charged card [CARD]; we will call [PHONE]."
        (call,) = json.loads(row.tool_calls)
        assert json.loads(call["arguments"]) == {"to": "[EMAIL]"}
        assert row.embedding is not None and row.model == "gpt-4o"  # the rest as written
        log.add_feedback(Feedback("req-1", 0.0, time.time(), "u1", "wrong, mail bob@example.org"))
        assert [f.comment for f in log.feedback("req-1")] == ["wrong, mail [EMAIL]"]
    finally:
        log.close()


def test_without_redaction_the_rows_hold_the_texts_as_sent(tmp_path):
    log = TrafficLog(f"sqlite:///{tmp_path / 'plain.sqlite3'}")
    try:
        log.write(record(1, **PII))
        log.flush()
        row = log.get("req-1")
        assert (row.prompt, row.answer, row.tool_calls) == (
            PII["prompt"], PII["answer"], PII["tool_calls"])
    finally:
        log.close()


def test_a_failing_redaction_drops_the_texts_and_keeps_the_writer(tmp_path, caplog):
    from router.redact import Redactor

    class Broken(Redactor):
        def redact(self, text: str) -> str:
            raise RuntimeError("boom")

    log = TrafficLog(f"sqlite:///{tmp_path / 'broken.sqlite3'}", redactor=Broken(["email"]))
    try:
        log.write(record(1, **PII))
        log.flush()
        row = log.get("req-1")
        assert (row.prompt, row.answer, row.tool_calls) == (None, None, None)
        assert row.model == "gpt-4o" and "redacting request req-1 failed" in caplog.text
        log.write(record(2))  # the writer thread still runs
        log.flush()
        assert log.count() == 2
    finally:
        log.close()
