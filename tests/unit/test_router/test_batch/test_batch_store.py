"""The batch store on SQLite and PostgreSQL: tenant scoping, claiming, exactly-once results
across crashes, cancellation, expiry."""

from __future__ import annotations

import json

import msgspec
import pytest

from router.batch.lines import parse
from router.batch.store import COMPONENT, MIGRATIONS, BatchStore, NotCancellable
from router.governance.principal import Principal

ALICE = Principal(tenant="alice", via="key", credential="k1")


def requests(n: int):
    text = "".join(json.dumps({"custom_id": f"c{i}", "method": "POST",
                               "url": "/v1/chat/completions",
                               "body": {"model": "auto", "messages": []}}) + "\n"
                   for i in range(n))
    return parse(text.encode(), max_lines=100)[1]


@pytest.fixture()
def store(governance_db):
    return BatchStore(governance_db)


def new_batch(store: BatchStore, n: int = 3, tenant: str = "alice"):
    f = store.add_file(tenant, "in.jsonl", "batch", b"x")
    return store.create_batch(tenant, msgspec.json.encode(ALICE), "/v1/chat/completions", f.id,
                              requests(n))


def result(custom_id: str) -> bytes:
    return json.dumps({"custom_id": custom_id}).encode()


def run_all(store: BatchStore, owner: str = "r1", ok: bool = True) -> None:
    while claimed := store.claim(owner, 10, 600):
        for c in claimed:
            assert store.finish(owner, c.batch_id, c.line, ok, result(c.custom_id))


def test_a_tenant_sees_only_its_own(store):
    batch = new_batch(store)
    f = store.add_file("alice", "a.jsonl", "batch", b"abc")
    assert store.get_file("bob", f.id) is None and store.file_content("bob", f.id) is None
    assert store.get_batch("bob", batch.id) is None and store.get_batch("alice", batch.id)
    assert store.list_batches("bob") == [] and store.list_files("bob") == []
    assert store.cancel("bob", batch.id) is None
    assert not store.delete_file("bob", f.id) and store.file_content("alice", f.id) == b"abc"
    assert [t for t, _ in store.list_batches(None)] == ["alice"]


def test_a_batch_runs_to_completed_with_one_result_per_line(store):
    batch = new_batch(store, 5)
    assert batch.status == "validating" and batch.request_counts.total == 5
    assert store.claim("r1", 10, 600) == []  # not started yet
    assert store.start() == 1
    run_all(store)
    assert store.finalize() == [batch.id]
    done = store.get_batch("alice", batch.id)
    assert done.status == "completed" and done.completed_at and done.finalizing_at
    assert (done.request_counts.completed, done.request_counts.failed) == (5, 0)
    assert done.error_file_id is None
    out = store.file_content("alice", done.output_file_id).decode().splitlines()
    assert [json.loads(x)["custom_id"] for x in out] == [f"c{i}" for i in range(5)]
    assert store.get_file("alice", done.output_file_id).bytes == sum(len(x) + 1 for x in out)


def test_a_line_whose_runner_died_runs_again_but_is_reported_once(store):
    batch = new_batch(store, 4)
    store.start()
    first = store.claim("dead", 2, 600)
    assert store.finish("dead", first[0].batch_id, first[0].line, True, result("c0"))
    # The runner dies with line 2 in flight, its answer never committed. A new process:
    assert store.release(everyone=True) == 1
    assert not store.finish("dead", first[1].batch_id, first[1].line, True, result("late"))
    again = store.claim("r2", 10, 600)
    assert sorted(c.custom_id for c in again) == ["c1", "c2", "c3"]  # not c0: committed
    for c in again:
        assert store.finish("r2", c.batch_id, c.line, True, result(c.custom_id))
    store.finalize()
    done = store.get_batch("alice", batch.id)
    assert done.request_counts.completed == 4
    out = store.file_content("alice", done.output_file_id).decode().splitlines()
    assert sorted(json.loads(x)["custom_id"] for x in out) == ["c0", "c1", "c2", "c3"]


def test_only_expired_leases_are_released_without_exclusive(store):
    new_batch(store, 2)
    store.start()
    store.claim("a", 1, 600)
    store.claim("b", 1, -1)  # a lease already over
    assert store.release(everyone=False) == 1
    assert [c.custom_id for c in store.claim("c", 5, 600)] == ["c1"]


def test_a_result_is_committed_once_even_when_two_runners_hold_the_line(store):
    new_batch(store, 1)
    store.start()
    [c] = store.claim("a", 1, -1)
    store.release(everyone=False)
    [c2] = store.claim("b", 1, 600)
    assert store.finish("b", c2.batch_id, c2.line, True, result("b"))
    assert not store.finish("a", c.batch_id, c.line, True, result("a"))
    store.finalize()
    batch = store.list_batches("alice")[0][1]
    assert batch.request_counts.completed == 1


def test_cancel_lets_lines_in_flight_finish_and_skips_the_rest(store):
    batch = new_batch(store, 5)
    store.start()
    [c] = store.claim("r", 1, 600)
    assert store.cancel("alice", batch.id).status == "cancelling"
    assert store.claim("r", 5, 600) == []  # nothing more starts
    assert store.finalize() == []  # one line still in flight
    assert store.finish("r", c.batch_id, c.line, True, result(c.custom_id))
    assert store.finalize() == [batch.id]
    done = store.get_batch("alice", batch.id)
    assert done.status == "cancelled" and done.cancelling_at and done.cancelled_at
    assert done.request_counts.completed == 1 and done.request_counts.total == 5
    assert store.line_states(batch.id) == {"done": 1, "skipped": 4}
    with pytest.raises(NotCancellable):
        store.cancel("alice", new_batch_done(store).id)


def new_batch_done(store):
    batch = new_batch(store, 1)
    store.start()
    run_all(store)
    store.finalize()
    return batch


def test_an_expired_batch_reports_what_never_ran(store):
    batch = new_batch(store, 3)
    store.start()
    [c] = store.claim("r", 1, 600)
    store.finish("r", c.batch_id, c.line, True, result(c.custom_id))
    with store.db.transaction() as cur:
        cur.execute("UPDATE batches SET expires_at = 0 WHERE id = ?", (batch.id,))
    assert store.finalize() == [batch.id]
    done = store.get_batch("alice", batch.id)
    assert done.status == "expired" and done.expired_at
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 2)
    errors = [json.loads(x) for x in
              store.file_content("alice", done.error_file_id).decode().splitlines()]
    assert {e["custom_id"] for e in errors} == {"c1", "c2"}
    assert errors[0]["error"]["code"] == "batch_expired" and errors[0]["response"] is None


def test_pages_newest_first(store):
    ids = [new_batch(store, 1).id for _ in range(3)]
    page = [b.id for _, b in store.list_batches("alice", limit=2)]
    assert page == ids[::-1][:2]
    assert [b.id for _, b in store.list_batches("alice", after=page[-1])] == [ids[0]]


def test_a_store_of_the_first_version_gains_token_counts(governance_db):
    governance_db.migrate(COMPONENT, MIGRATIONS[:1])
    store = BatchStore(governance_db)
    batch = new_batch(store, 1)
    store.start()
    [c] = store.claim("r", 1, 600)
    assert store.finish("r", c.batch_id, c.line, True, result("c0"), (7, 3))
    usage = store.get_batch("alice", batch.id).usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (7, 3, 10)
