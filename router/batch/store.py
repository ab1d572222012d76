"""Batch files, jobs and per-line results, durable in the governance database (SQLite by
default, PostgreSQL by DSN: ``router.governance.db``).

Files live in the database, not on disk: a PostgreSQL deployment's replicas all read them
with no shared folder to mount, and one backup holds jobs and their inputs together. An
output or error file is not a copy: it is read from the job's line results when downloaded.

A line moves ``pending -> running -> done`` (or ``skipped`` when its batch is cancelled);
a line held for a provider's batch API goes ``running -> forwarded -> done`` (or back to
``pending``, to run live, when that batch fails it: ``router.batch.forwarding``).
``finish`` writes a line's result and the batch's count in one transaction, and only while
the line is still ``running`` under the runner that claimed it: a result is either committed
and counted, or neither, and a line never gets two. A line left ``running`` by a runner that
died is ``pending`` again once its lease ends (``release`` frees every line at start-up when
one process owns the database, as with SQLite). Every call blocks: callers run it off the
event loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from router.batch.lines import Request
from router.batch.wire import (
    Batch,
    BatchErrors,
    BatchUsage,
    FileObject,
    LineError,
    OutputLine,
    RequestCounts,
)
from router.governance.db import Database

COMPONENT = "batch"
MIGRATIONS = [
    (1, [
        "CREATE TABLE IF NOT EXISTS batch_files (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
        "purpose TEXT NOT NULL, filename TEXT NOT NULL, bytes BIGINT NOT NULL, "
        "created {float} NOT NULL, expires_at BIGINT, content {blob}, batch_id TEXT, "
        "kind TEXT)",
        "CREATE INDEX IF NOT EXISTS batch_files_tenant ON batch_files (tenant, created)",
        "CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
        "principal TEXT NOT NULL, endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL, "
        "completion_window TEXT NOT NULL, status TEXT NOT NULL, created {float} NOT NULL, "
        "expires_at BIGINT NOT NULL, in_progress_at BIGINT, finalizing_at BIGINT, "
        "completed_at BIGINT, failed_at BIGINT, expired_at BIGINT, cancelling_at BIGINT, "
        "cancelled_at BIGINT, output_file_id TEXT, error_file_id TEXT, errors {json}, "
        "metadata {json}, total INTEGER NOT NULL, completed INTEGER NOT NULL DEFAULT 0, "
        "failed INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX IF NOT EXISTS batches_tenant ON batches (tenant, created)",
        "CREATE INDEX IF NOT EXISTS batches_status ON batches (status)",
        "CREATE TABLE IF NOT EXISTS batch_lines (batch_id TEXT NOT NULL, line INTEGER NOT NULL, "
        "custom_id TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL, owner TEXT, "
        "lease_until {float}, ok INTEGER, result TEXT, PRIMARY KEY (batch_id, line))",
        "CREATE INDEX IF NOT EXISTS batch_lines_state ON batch_lines (batch_id, state)",
    ]),
    (2, [
        "ALTER TABLE batches ADD COLUMN input_tokens BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE batches ADD COLUMN output_tokens BIGINT NOT NULL DEFAULT 0",
    ]),
    (3, [  # provider batch APIs (``router.batch.forwarding``)
        "ALTER TABLE batch_lines ADD COLUMN fwd_model TEXT",
        "ALTER TABLE batch_lines ADD COLUMN fwd_deployment TEXT",
        "ALTER TABLE batch_lines ADD COLUMN fwd_batch TEXT",
        "ALTER TABLE batch_lines ADD COLUMN fwd_at {float}",
        "ALTER TABLE batch_lines ADD COLUMN routed TEXT",
        "ALTER TABLE batch_lines ADD COLUMN live INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX IF NOT EXISTS batch_lines_fwd ON batch_lines (fwd_batch)",
        "CREATE TABLE IF NOT EXISTS native_batches (id TEXT PRIMARY KEY, batch_id TEXT NOT "
        "NULL, model TEXT NOT NULL, deployment TEXT NOT NULL, status TEXT NOT NULL, "
        "provider_id TEXT, owner TEXT, lease_until {float}, cancel_sent INTEGER NOT NULL "
        "DEFAULT 0, created {float} NOT NULL)",
        "CREATE INDEX IF NOT EXISTS native_batches_status ON native_batches (status)",
    ]),
]
FILE_COLUMNS = "id, bytes, created, filename, purpose, expires_at"
BATCH_COLUMNS = ("id, endpoint, input_file_id, completion_window, status, created, total, "
                 "completed, failed, output_file_id, error_file_id, errors, in_progress_at, "
                 "expires_at, finalizing_at, completed_at, failed_at, expired_at, "
                 "cancelling_at, cancelled_at, metadata, input_tokens, output_tokens")
WINDOW_S = 24 * 3600


class NotCancellable(ValueError):
    """The batch already ended."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A line a runner took: what to run, and as whom (the batch creator's principal)."""

    batch_id: str
    line: int
    custom_id: str
    body: bytes
    endpoint: str
    principal: bytes
    live: bool = False  # its provider batch failed it: run it live, never forward it again


def new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def _file(row: Sequence[Any]) -> FileObject:
    fid, size, created, filename, purpose, expires = row
    return FileObject(id=fid, bytes=int(size), created_at=int(created), filename=filename,
                      purpose=purpose, expires_at=expires)


def _batch(row: Sequence[Any]) -> Batch:
    (bid, endpoint, file_id, window, status, created, total, completed, failed, out, err,
     errors, *stamps, metadata, input_tokens, output_tokens) = row
    return Batch(id=bid, endpoint=endpoint, input_file_id=file_id, completion_window=window,
                 status=status, created_at=int(created),
                 request_counts=RequestCounts(total=total, completed=completed, failed=failed),
                 output_file_id=out, error_file_id=err,
                 errors=msgspec.json.decode(errors, type=BatchErrors) if errors else None,
                 in_progress_at=stamps[0], expires_at=stamps[1], finalizing_at=stamps[2],
                 completed_at=stamps[3], failed_at=stamps[4], expired_at=stamps[5],
                 cancelling_at=stamps[6], cancelled_at=stamps[7],
                 metadata=msgspec.json.decode(metadata) if metadata else None,
                 usage=BatchUsage(input_tokens=int(input_tokens),
                                  output_tokens=int(output_tokens),
                                  total_tokens=int(input_tokens) + int(output_tokens)))


class BatchStore:
    """Files, batches and line results on ``db`` (created or upgraded when opened)."""

    def __init__(self, db: Database):
        self.db = db
        db.migrate(COMPONENT, MIGRATIONS)
        # A file's size is in bytes; both dialects' LENGTH of text counts characters.
        self._octets = ("OCTET_LENGTH(result)" if db.kind == "postgresql"
                        else "LENGTH(CAST(result AS BLOB))")

    # files

    def add_file(self, tenant: str, filename: str, purpose: str, content: bytes,
                 expires_at: int | None = None) -> FileObject:
        """Keep an uploaded file of ``tenant``."""
        fid, now = new_id("file-"), time.time()
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO batch_files (id, tenant, purpose, filename, bytes, created, "
                        "expires_at, content) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (fid, tenant, purpose, filename, len(content), now, expires_at,
                         content))
        return FileObject(id=fid, bytes=len(content), created_at=int(now), filename=filename,
                          purpose=purpose, expires_at=expires_at)

    def get_file(self, tenant: str, file_id: str) -> FileObject | None:
        """``tenant``'s file ``file_id``; None when there is none (or it is another's)."""
        rows = self.db.query(f"SELECT {FILE_COLUMNS} FROM batch_files WHERE id = ? AND "
                             "tenant = ?", (file_id, tenant))
        return _file(rows[0]) if rows else None

    def list_files(self, tenant: str, *, purpose: str | None = None, after: str | None = None,
                   limit: int = 100) -> list[FileObject]:
        """``tenant``'s files, newest first, after the file ``after``."""
        where, params = "tenant = ?", [tenant]
        if purpose:
            where, params = where + " AND purpose = ?", [*params, purpose]
        where, params = _after(self.db, "batch_files", where, params, tenant, after)
        rows = self.db.query(f"SELECT {FILE_COLUMNS} FROM batch_files WHERE {where} "
                             f"ORDER BY created DESC, id DESC LIMIT ?", (*params, limit))
        return [_file(r) for r in rows]

    def file_content(self, tenant: str, file_id: str) -> bytes | None:
        """A file's bytes: as uploaded, or a batch's results read from its lines."""
        rows = self.db.query("SELECT content, batch_id, kind FROM batch_files WHERE id = ? "
                             "AND tenant = ?", (file_id, tenant))
        if not rows:
            return None
        content, batch_id, kind = rows[0]
        if batch_id is None:
            return bytes(content)
        results = self.db.query("SELECT result FROM batch_lines WHERE batch_id = ? AND "
                                "state = 'done' AND ok = ? ORDER BY line",
                                (batch_id, 1 if kind == "output" else 0))
        return b"".join(r.encode() + b"\n" for (r,) in results)

    def delete_file(self, tenant: str, file_id: str) -> bool:
        with self.db.transaction() as cur:
            return cur.execute("DELETE FROM batch_files WHERE id = ? AND tenant = ?",
                               (file_id, tenant)) > 0

    # batches

    def create_batch(self, tenant: str, principal: bytes, endpoint: str, input_file_id: str,
                     requests: Sequence[Request], metadata: dict[str, str] | None = None
                     ) -> Batch:
        """A new batch of ``requests`` (``validating`` until a runner takes it), its lines
        written in the same transaction: a batch never exists with part of its lines."""
        bid, now = new_id("batch_"), time.time()
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO batches (id, tenant, principal, endpoint, input_file_id, "
                        "completion_window, status, created, expires_at, metadata, total) "
                        "VALUES (?, ?, ?, ?, ?, '24h', 'validating', ?, ?, ?, ?)",
                        (bid, tenant, principal.decode(), endpoint, input_file_id, now,
                         int(now) + WINDOW_S,
                         msgspec.json.encode(metadata).decode() if metadata else None,
                         len(requests)))
            cur.execute_many("INSERT INTO batch_lines (batch_id, line, custom_id, body, state) "
                             "VALUES (?, ?, ?, ?, 'pending')",
                             [(bid, r.line, r.custom_id, r.body.decode()) for r in requests])
        found = self.get_batch(tenant, bid)
        assert found is not None
        return found

    def get_batch(self, tenant: str | None, batch_id: str) -> Batch | None:
        """The batch ``batch_id`` of ``tenant`` (any tenant's with None)."""
        where, params = "id = ?", [batch_id]
        if tenant is not None:
            where, params = where + " AND tenant = ?", [*params, tenant]
        rows = self.db.query(f"SELECT {BATCH_COLUMNS} FROM batches WHERE {where}", params)
        return _batch(rows[0]) if rows else None

    def tenant_of(self, batch_id: str) -> str | None:
        rows = self.db.query("SELECT tenant FROM batches WHERE id = ?", (batch_id,))
        return rows[0][0] if rows else None

    def list_batches(self, tenant: str | None, *, after: str | None = None, limit: int = 20,
                     status: str | None = None) -> list[tuple[str, Batch]]:
        """(tenant, batch) pairs, newest first, after the batch ``after``."""
        where, params = "1 = 1", []
        if tenant is not None:
            where, params = "tenant = ?", [tenant]
        if status is not None:
            where, params = where + " AND status = ?", [*params, status]
        where, params = _after(self.db, "batches", where, params, tenant, after)
        rows = self.db.query(f"SELECT tenant, {BATCH_COLUMNS} FROM batches WHERE {where} "
                             "ORDER BY created DESC, id DESC LIMIT ?", (*params, limit))
        return [(r[0], _batch(r[1:])) for r in rows]

    def cancel(self, tenant: str, batch_id: str) -> Batch | None:
        """Ask ``batch_id`` to stop: ``cancelling`` until its lines in flight end (the runner
        then makes it ``cancelled``). ``NotCancellable`` when it already ended."""
        now = int(time.time())
        with self.db.transaction(lock=f"batch:{batch_id}") as cur:
            rows = cur.fetch("SELECT status FROM batches WHERE id = ? AND tenant = ?",
                             (batch_id, tenant))
            if not rows:
                return None
            if rows[0][0] in ("validating", "in_progress"):
                cur.execute("UPDATE batches SET status = 'cancelling', cancelling_at = ? "
                            "WHERE id = ?", (now, batch_id))
            elif rows[0][0] not in ("cancelling", "cancelled"):
                raise NotCancellable(f"batch {batch_id} is {rows[0][0]}: it cannot be "
                                     "cancelled")
        return self.get_batch(tenant, batch_id)

    def line_states(self, batch_id: str) -> dict[str, int]:
        """How many of a batch's lines are in each state (the admin API's progress)."""
        rows = self.db.query("SELECT state, COUNT(*) FROM batch_lines WHERE batch_id = ? "
                             "GROUP BY state", (batch_id,))
        return {s: int(n) for s, n in rows}

    # the runner's side

    def start(self) -> int:
        """``validating`` batches (their lines are checked and written) go ``in_progress``."""
        with self.db.transaction() as cur:
            return cur.execute("UPDATE batches SET status = 'in_progress', in_progress_at = ? "
                               "WHERE status = 'validating'", (int(time.time()),))

    def release(self, *, everyone: bool) -> int:
        """Lines claimed by a runner that is gone go back to ``pending``: those whose lease
        ended, or (``everyone``: this process is the database's only runner, just started)
        every one. A line with a committed result is ``done`` and never comes back."""
        with self.db.transaction(lock="batch:claim") as cur:
            if everyone:
                return cur.execute("UPDATE batch_lines SET state = 'pending', owner = NULL "
                                   "WHERE state = 'running'")
            return cur.execute("UPDATE batch_lines SET state = 'pending', owner = NULL "
                               "WHERE state = 'running' AND lease_until < ?", (time.time(),))

    def claim(self, owner: str, n: int, lease_s: float, *, skip: Sequence[str] = ()
              ) -> list[Claimed]:
        """Up to ``n`` pending lines of ``in_progress`` batches (not those in ``skip``),
        oldest batch first, now ``running`` under ``owner`` until ``lease_s`` from now."""
        but = f"AND b.id NOT IN ({', '.join('?' * len(skip))}) " if skip else ""
        with self.db.transaction(lock="batch:claim") as cur:
            rows = cur.fetch(
                "SELECT l.batch_id, l.line, l.custom_id, l.body, b.endpoint, b.principal, "
                "l.live "
                "FROM batch_lines l JOIN batches b ON b.id = l.batch_id "
                f"WHERE b.status = 'in_progress' AND l.state = 'pending' {but}"
                "ORDER BY b.created, l.line LIMIT ?", (*skip, n))
            until = time.time() + lease_s
            for batch_id, line, *_ in rows:
                cur.execute("UPDATE batch_lines SET state = 'running', owner = ?, "
                            "lease_until = ? WHERE batch_id = ? AND line = ?",
                            (owner, until, batch_id, line))
        return [Claimed(b, int(n_), c, body.encode(), e, p.encode(), bool(live))
                for b, n_, c, body, e, p, live in rows]

    def finish(self, owner: str, batch_id: str, line: int, ok: bool, result: bytes,
               tokens: tuple[int, int] = (0, 0)) -> bool:
        """Commit a line's result and count it (and its input and output ``tokens``),
        together; False (nothing written) when the line is no longer ``owner``'s (its lease
        ended and another runner took it)."""
        return finish_line(self.db, batch_id, line, ok, result, tokens,
                           held="state = 'running' AND owner = ?", holder=owner)

    def requeue(self, owner: str, batch_id: str, line: int) -> bool:
        """Give a claimed line back unanswered (refused for now: a rate limit), to run later."""
        with self.db.transaction(lock=f"batch:{batch_id}") as cur:
            return cur.execute("UPDATE batch_lines SET state = 'pending', owner = NULL WHERE "
                               "batch_id = ? AND line = ? AND state = 'running' AND owner = ?",
                               (batch_id, line, owner)) > 0

    def finalize(self) -> list[str]:
        """End every batch with no line left to run: ``in_progress`` -> ``finalizing`` ->
        ``completed``, ``cancelling`` -> ``cancelled`` (lines not started are skipped: in
        neither file), past ``expires_at`` -> ``expired`` (lines not started go to the error
        file as ``batch_expired``); the output and error files are recorded. The ids ended."""
        now = int(time.time())
        with self.db.transaction() as cur:
            cur.execute("UPDATE batches SET status = 'finalizing', finalizing_at = ? "
                        "WHERE status = 'in_progress' AND NOT EXISTS (SELECT 1 FROM batch_lines "
                        "WHERE batch_id = batches.id AND state IN ('pending', 'running', "
                        "'forwarded'))",
                        (now,))
            expired = cur.fetch("SELECT id FROM batches WHERE status = 'in_progress' AND "
                                "expires_at < ?", (now,))
            cancelling = cur.fetch("SELECT id FROM batches WHERE status = 'cancelling' AND NOT "
                                   "EXISTS (SELECT 1 FROM batch_lines WHERE batch_id = "
                                   "batches.id AND state IN ('running', 'forwarded'))")
        ends = [(bid, "cancelling", "cancelled") for (bid,) in cancelling]
        ends += [(bid, "in_progress", "expired") for (bid,) in expired]
        ends += [(bid, "finalizing", "completed") for (bid,) in
                 self.db.query("SELECT id FROM batches WHERE status = 'finalizing'")]
        return [bid for bid, was, status in ends if self._end(bid, was, status, now)]

    def _end(self, batch_id: str, was: str, status: str, now: int) -> bool:
        """Move ``batch_id`` from ``was`` to ``status`` and record its files; False when it
        is no longer ``was`` (another replica ended it first)."""
        with self.db.transaction(lock=f"batch:{batch_id}") as cur:
            current = cur.fetch("SELECT status FROM batches WHERE id = ?", (batch_id,))
            if not current or current[0][0] != was:
                return False
            if status != "expired":
                cur.execute("UPDATE batch_lines SET state = 'skipped', owner = NULL WHERE "
                            "batch_id = ? AND state = 'pending'", (batch_id,))
            else:  # expired: what never ran is reported, as OpenAI does
                pending = cur.fetch("SELECT line, custom_id FROM batch_lines WHERE batch_id = ? "
                                    "AND state IN ('pending', 'running', 'forwarded')",
                                    (batch_id,))
                for line, custom_id in pending:
                    result = expired_line(custom_id)
                    cur.execute("UPDATE batch_lines SET state = 'done', ok = 0, result = ? "
                                "WHERE batch_id = ? AND line = ?",
                                (result.decode(), batch_id, line))
                cur.execute("UPDATE batches SET failed = failed + ? WHERE id = ?",
                            (len(pending), batch_id))
            tenant = cur.fetch("SELECT tenant FROM batches WHERE id = ?", (batch_id,))[0][0]
            sizes = dict(cur.fetch(
                f"SELECT ok, SUM({self._octets} + 1) FROM batch_lines WHERE batch_id = ? AND "
                "state = 'done' GROUP BY ok", (batch_id,)))
            files: dict[str, str | None] = {}
            for kind, ok in (("output", 1), ("error", 0)):
                files[kind] = None
                if sizes.get(ok):
                    files[kind] = fid = new_id("file-")
                    cur.execute("INSERT INTO batch_files (id, tenant, purpose, filename, bytes, "
                                "created, batch_id, kind) VALUES (?, ?, 'batch_output', ?, ?, "
                                "?, ?, ?)", (fid, tenant, f"{batch_id}_{kind}.jsonl",
                                             int(sizes[ok]), time.time(), batch_id, kind))
            cur.execute(f"UPDATE batches SET status = ?, {status}_at = ?, output_file_id = ?, "
                        "error_file_id = ? WHERE id = ?",
                        (status, now, files["output"], files["error"], batch_id))
        return True


def finish_line(db: Database, batch_id: str, line: int, ok: bool, result: bytes,
                tokens: tuple[int, int], *, held: str, holder: str) -> bool:
    """Commit a line's result and count it in its batch, in one transaction, only while the
    line is still held as ``held`` (an SQL condition on the line with one parameter,
    ``holder``) says: a runner's lease, or a provider batch's assignment. False when it is not
    (someone else answers it), and nothing is written."""
    with db.transaction(lock=f"batch:{batch_id}") as cur:
        changed = cur.execute("UPDATE batch_lines SET state = 'done', ok = ?, result = ? "
                              f"WHERE batch_id = ? AND line = ? AND {held}",
                              (1 if ok else 0, result.decode(), batch_id, line, holder))
        if changed:
            column = "completed" if ok else "failed"
            cur.execute(f"UPDATE batches SET {column} = {column} + 1, input_tokens = "
                        "input_tokens + ?, output_tokens = output_tokens + ? WHERE id = ?",
                        (*tokens, batch_id))
    return changed > 0


def expired_line(custom_id: str) -> bytes:
    return msgspec.json.encode(OutputLine(
        id=new_id("batch_req_"), custom_id=custom_id, response=None,
        error=LineError(code="batch_expired", message="This request could not be executed "
                        "before the completion window expired.")))


def _after(db: Database, table: str, where: str, params: list[Any], tenant: str | None,
           after: str | None) -> tuple[str, list[Any]]:
    """``where`` narrowed to rows older than ``after`` (newest-first pages)."""
    if not after:
        return where, params
    rows = db.query(f"SELECT created FROM {table} WHERE id = ?", (after,))
    if not rows:
        return where, params
    return (where + " AND (created < ? OR (created = ? AND id < ?))",
            [*params, rows[0][0], rows[0][0], after])
