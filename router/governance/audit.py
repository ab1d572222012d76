"""The audit log: who did what, when, from where — admin actions and failed authentications.

Append-only and hash-chained: each record's ``hash`` is SHA-256 over the previous record's hash
and this record's fields (canonical JSON), so editing, deleting or reordering any record breaks
every hash after it, and ``verify`` (``contextforge audit verify``) names the first record that
does not match. Records are appended in one transaction under a lock (``Database.transaction``),
so replicas writing at once still form one chain. What a chain cannot show by itself is the
loss of its newest records; ``verify`` returns the head hash, which an operator can keep
elsewhere (a ticket, a log shipper) to catch that too.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator

import msgspec

from router.governance.db import Database

GENESIS = "0" * 64
COMPONENT = "audit"
MIGRATIONS = [
    (1, ["CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, ts {float} NOT NULL, "
         "actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT, source TEXT, "
         "outcome TEXT NOT NULL, detail {json} NOT NULL, prev TEXT NOT NULL, "
         "hash TEXT NOT NULL)",
         "CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts)"]),
]
_COLUMNS = "seq, ts, actor, action, target, source, outcome, detail, prev, hash"


class AuditRecord(msgspec.Struct, frozen=True):
    """One audited event. ``actor``: a key id, ``master``, a JWT subject or ``anonymous``;
    ``action``: e.g. ``keys.create``, ``auth.failed``; ``outcome``: ``ok``, ``denied``,
    ``failed``; ``detail``: JSON text."""

    seq: int
    ts: float
    actor: str
    action: str
    target: str | None
    source: str | None
    outcome: str
    detail: str
    prev: str
    hash: str


class Verification(msgspec.Struct, frozen=True):
    """What ``AuditLog.verify`` found: how many records it checked, the first that breaks
    the chain (and why) or None, and the head hash of the intact chain."""

    ok: bool
    checked: int
    head: str
    first_bad: int | None = None
    reason: str | None = None


def chain_hash(prev: str, seq: int, ts: float, actor: str, action: str, target: str | None,
               source: str | None, outcome: str, detail: str) -> str:
    """The hash of one record given the previous record's."""
    body = json.dumps([seq, repr(ts), actor, action, target, source, outcome, detail],
                      separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()


class AuditLog:
    """The audit records in ``db`` (created or upgraded on open)."""

    def __init__(self, db: Database):
        self.db = db
        db.migrate(COMPONENT, MIGRATIONS)

    def append(self, actor: str, action: str, *, target: str | None = None,
               source: str | None = None, outcome: str = "ok",
               detail: dict | None = None) -> AuditRecord:
        """Add one record at the head of the chain (blocking: call it off the event loop)."""
        text = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"))
        with self.db.transaction(lock="audit") as cur:
            last = cur.fetch("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            seq, prev = (last[0][0] + 1, last[0][1]) if last else (1, GENESIS)
            ts = time.time()
            digest = chain_hash(prev, seq, ts, actor, action, target, source, outcome, text)
            cur.execute(f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (seq, ts, actor, action, target, source, outcome, text, prev, digest))
        return AuditRecord(seq, ts, actor, action, target, source, outcome, text, prev, digest)

    def records(self, *, since: float | None = None, actor: str | None = None,
                action: str | None = None, after_seq: int = 0, limit: int = 1000
                ) -> list[AuditRecord]:
        """Records oldest first, filtered (``action`` matches a prefix: ``keys.``)."""
        where, params = ["seq > ?"], [after_seq]
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if actor is not None:
            where.append("actor = ?")
            params.append(actor)
        if action is not None:
            where.append("action LIKE ?")
            params.append(action.replace("%", "") + "%")
        rows = self.db.query(f"SELECT {_COLUMNS} FROM audit WHERE {' AND '.join(where)} "
                             f"ORDER BY seq LIMIT {int(limit)}", params)
        return [AuditRecord(*row) for row in rows]

    def _all(self, batch: int = 5000) -> Iterator[AuditRecord]:
        after = 0
        while True:
            page = self.records(after_seq=after, limit=batch)
            yield from page
            if len(page) < batch:
                return
            after = page[-1].seq

    def verify(self) -> Verification:
        """Recompute the chain from the first record; the first that does not match."""
        prev, expected_seq, checked = GENESIS, 1, 0
        for r in self._all():
            if r.seq != expected_seq:
                return Verification(False, checked, prev, r.seq,
                                    f"record {expected_seq} is missing (next is {r.seq})")
            if r.prev != prev:
                return Verification(False, checked, prev, r.seq,
                                    "its link to the record before does not match")
            digest = chain_hash(r.prev, r.seq, r.ts, r.actor, r.action, r.target, r.source,
                                r.outcome, r.detail)
            if digest != r.hash:
                return Verification(False, checked, prev, r.seq,
                                    "its content does not match its hash (edited)")
            prev, expected_seq, checked = r.hash, r.seq + 1, checked + 1
        return Verification(True, checked, prev)
