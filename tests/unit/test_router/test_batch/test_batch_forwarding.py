"""Forwarded lines and native batches on SQLite and PostgreSQL: gathering, one native batch
per line, take-over of an orphaned submission, results committed once, failover to live,
and batches that wait for their forwarded lines before they end."""

from __future__ import annotations

import time

from router.batch.forwarding import ForwardStore
from router.batch.store import BatchStore
from tests.unit.test_router.test_batch.test_batch_store import new_batch, result

MODEL, DEP = "gpt-4o-mini", "openai:gpt-4o-mini@x"


def forwarded(db, n: int = 3):
    store, fwd = BatchStore(db), ForwardStore(db)
    batch = new_batch(store, n)
    store.start()
    for c in store.claim("r1", 10, 600):
        assert fwd.forward("r1", c.batch_id, c.line, MODEL, DEP, b'{"id": "x"}')
    return store, fwd, batch


def test_a_batch_is_ready_once_every_line_is_admitted(governance_db):
    store, fwd = BatchStore(governance_db), ForwardStore(governance_db)
    batch = new_batch(store, 2)
    store.start()
    first = store.claim("r1", 1, 600)[0]
    assert fwd.forward("r1", batch.id, first.line, MODEL, DEP, b"{}")
    assert fwd.ready(collect_s=60) == []  # a line is still pending
    assert fwd.ready(collect_s=0) == [(batch.id, MODEL, DEP)]  # unless it waited long enough
    assert not fwd.forward("r2", batch.id, first.line, MODEL, DEP, b"{}")  # not r2's line


def test_a_line_goes_into_one_native_batch_and_is_answered_once(governance_db):
    store, fwd, batch = forwarded(governance_db)
    assert fwd.ready(60) == [(batch.id, MODEL, DEP)]
    job = fwd.assemble(batch.id, MODEL, DEP, "r1", 600)
    assert job is not None and fwd.assemble(batch.id, MODEL, DEP, "r2", 600) is None
    assert fwd.ready(60) == [] and len(fwd.lines(job.id)) == 3
    fwd.submitted(job.id, "batch_provider")
    assert [j.provider_id for j in fwd.active()] == ["batch_provider"]
    held = fwd.lines(job.id)
    assert fwd.finish(job.id, batch.id, held[0].line, True, result("c0"), (3, 4))
    assert not fwd.finish(job.id, batch.id, held[0].line, True, result("c0"), (3, 4))
    assert store.finalize() == []  # two lines still wait on the provider
    assert fwd.close(job, skip=False) == 2  # the provider did not answer them: run live
    assert fwd.active() == []
    again = store.claim("r1", 10, 600)
    assert sorted(c.line for c in again) == [held[1].line, held[2].line]
    assert all(c.live for c in again)
    for c in again:
        assert store.finish("r1", c.batch_id, c.line, True, result(c.custom_id))
    assert store.finalize() == [batch.id]
    done = store.get_batch("alice", batch.id)
    assert done.request_counts.completed == 3 and done.usage.input_tokens == 3


def test_an_orphaned_submission_is_taken_over_and_cancelled_lines_skipped(governance_db):
    store, fwd, batch = forwarded(governance_db)
    job = fwd.assemble(batch.id, MODEL, DEP, "r1", lease_s=0.01)
    time.sleep(0.02)
    assert fwd.orphans("r1", 600, everyone=False)[0].id == job.id  # its lease ended
    assert fwd.orphans("r2", 600, everyone=False) == []  # and r1 holds it again
    assert [j.id for j in fwd.orphans("r3", 600, everyone=True)] == [job.id]
    fwd.submitted(job.id, "batch_p")
    store.cancel("alice", batch.id)
    assert fwd.active()[0].batch_status == "cancelling"
    assert store.finalize() == []  # its forwarded lines hold it
    assert fwd.close(fwd.active()[0], skip=True) == 3
    assert store.finalize() == [batch.id]
    assert store.get_batch("alice", batch.id).status == "cancelled"


def test_held_lines_of_a_cancelled_batch_are_never_sent(governance_db):
    store, fwd, batch = forwarded(governance_db)
    store.cancel("alice", batch.id)
    assert fwd.skip_unsubmitted() == 3
    assert fwd.ready(0) == [] and store.finalize() == [batch.id]


def test_a_native_batch_holds_at_most_the_providers_bound(governance_db, monkeypatch):
    monkeypatch.setattr("router.batch.forwarding.MAX_LINES", 2)
    _, fwd, batch = forwarded(governance_db, 3)
    first = fwd.assemble(batch.id, MODEL, DEP, "r1", 600)
    assert len(fwd.lines(first.id)) == 2 and fwd.ready(60) == [(batch.id, MODEL, DEP)]
    second = fwd.assemble(batch.id, MODEL, DEP, "r1", 600)
    assert len(fwd.lines(second.id)) == 1 and fwd.ready(60) == []


def test_idle_until_a_line_is_held(governance_db):
    fwd = ForwardStore(governance_db)
    BatchStore(governance_db)
    assert fwd.idle()
    forwarded(governance_db, 1)
    assert not fwd.idle()
