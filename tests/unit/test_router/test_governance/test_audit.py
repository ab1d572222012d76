"""The audit log: append-only, hash-chained, and every kind of tampering is found."""

from __future__ import annotations

import threading

import pytest

from router.governance.audit import GENESIS, AuditLog
from router.governance.db import Database


def test_records_chain_and_verify(governance_db):
    log = AuditLog(governance_db)
    assert log.verify().ok and log.verify().head == GENESIS  # empty: nothing to break
    a = log.append("master", "keys.create", target="cfk_1", source="10.0.0.1",
                   detail={"org": "acme"})
    b = log.append("anonymous", "auth.failed", source="10.0.0.9", outcome="denied")
    assert (a.seq, b.seq, b.prev) == (1, 2, a.hash)
    assert [r.action for r in log.records(action="keys.")] == ["keys.create"]
    assert [r.seq for r in log.records(actor="anonymous")] == [2]
    check = log.verify()
    assert check.ok and check.checked == 2 and check.head == b.hash
    AuditLog(governance_db)  # reopening migrates nothing twice
    assert log.verify().checked == 2


@pytest.mark.parametrize("tamper, reason", [
    ("UPDATE audit SET actor = 'someone-else' WHERE seq = 2", "edited"),
    ("UPDATE audit SET detail = '{}' WHERE seq = 1", "edited"),
    ("DELETE FROM audit WHERE seq = 2", "missing"),
    ("UPDATE audit SET prev = hash WHERE seq = 3", "link"),
])
def test_tampering_is_found_at_the_first_broken_record(governance_db, tamper, reason):
    log = AuditLog(governance_db)
    for i in range(4):
        log.append("master", "routes.update", target=f"r{i}", detail={"i": i})
    with governance_db.transaction() as cur:
        cur.execute(tamper)
    check = log.verify()
    assert not check.ok and reason in check.reason
    assert check.first_bad in (1, 2, 3)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_concurrent_writers_form_one_chain(tmp_path, request, store):
    # Two connections (as two replicas would have) appending at once.
    dsn = (f"sqlite:///{tmp_path / 'a.sqlite3'}" if store == "sqlite"
           else request.getfixturevalue("pg_dsn"))
    logs = [AuditLog(Database(dsn)), AuditLog(Database(dsn))]

    def write(log: AuditLog) -> None:
        for _ in range(20):
            log.append("master", "keys.list")

    threads = [threading.Thread(target=write, args=(log,)) for log in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    checks = [log.verify() for log in logs]
    for log in logs:
        log.db.close()
    assert checks[0].ok and checks[0].checked == 40 and checks[1].ok
