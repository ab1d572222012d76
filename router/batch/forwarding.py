"""Batch lines held for a provider's own batch API, durable beside the batch store's lines
(the same database and tables: ``router.batch.store`` migration 3).

A forwarded line is ``forwarded`` with the model and deployment its admission chose
(``fwd_model``, ``fwd_deployment``) and what the answer's accounting needs (``routed``).
Lines are gathered into a *native batch* (a ``native_batches`` row) in one transaction that
also marks each line with its id (``fwd_batch``): a line is in at most one provider batch.
The row is ``submitting`` until the provider's batch id is recorded (``submitted``), then
``done`` once every line of it got its result or was sent back:

- a ``submitting`` row whose lease ran out (its runner died mid-upload) is taken over; the
  provider is first asked for a batch tagged with the row's id (``router.providers.
  openai_batches.TAG``), and only when there is none is the batch submitted again;
- a line's result is committed only while the line is still ``forwarded`` in that native
  batch (``finish``): two replicas polling the same batch never answer a line twice;
- lines a provider batch did not answer go back to ``pending`` with ``live`` set (they run
  through the live pipeline), or are ``skipped`` when their gateway batch is cancelling.

Every call blocks: callers run it off the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from router.batch.store import finish_line, new_id
from router.governance.db import Database


@dataclass(frozen=True, slots=True)
class NativeJob:
    """One provider batch, as the gateway keeps it."""

    id: str
    batch_id: str  # the gateway batch its lines belong to
    model: str
    deployment: str
    provider_id: str | None
    created: float = 0.0  # when its lines were gathered (before the submission began)
    cancel_sent: bool = False
    batch_status: str = "in_progress"  # the gateway batch's


@dataclass(frozen=True, slots=True)
class HeldLine:
    line: int
    custom_id: str
    routed: bytes
    principal: bytes


# OpenAI's bound on the requests of one batch: a larger group goes out in several.
MAX_LINES = 50_000
_JOB = ("n.id, n.batch_id, n.model, n.deployment, n.provider_id, n.created, n.cancel_sent, "
        "b.status "
        "FROM native_batches n JOIN batches b ON b.id = n.batch_id")


def _job(row: tuple) -> NativeJob:
    nid, bid, model, deployment, pid, created, sent, status = row
    return NativeJob(nid, bid, model, deployment, pid, float(created), bool(sent), status)


class ForwardStore:
    """The forwarded lines and native batches on ``db`` (migrated by ``BatchStore``)."""

    def __init__(self, db: Database):
        self.db = db

    def idle(self) -> bool:
        """No line is held and no native batch open (one read, no write lock)."""
        return not self.db.query(
            "SELECT 1 FROM native_batches WHERE status <> 'done' UNION ALL SELECT 1 FROM "
            "batch_lines WHERE state = 'forwarded' LIMIT 1")

    def forward(self, owner: str, batch_id: str, line: int, model: str, deployment: str,
                routed: bytes) -> bool:
        """A claimed line, admitted and routed, now held for ``deployment``'s batch API;
        False when the line is no longer ``owner``'s."""
        with self.db.transaction(lock=f"batch:{batch_id}") as cur:
            return cur.execute(
                "UPDATE batch_lines SET state = 'forwarded', fwd_model = ?, fwd_deployment = ?, "
                "fwd_at = ?, routed = ?, owner = NULL WHERE batch_id = ? AND line = ? AND "
                "state = 'running' AND owner = ?",
                (model, deployment, time.time(), routed.decode(), batch_id, line, owner)) > 0

    def ready(self, collect_s: float) -> list[tuple[str, str, str]]:
        """(batch, model, deployment) groups of held lines to submit now: their gateway batch
        has no line left to admit, or its oldest held line waited ``collect_s``."""
        return [tuple(r) for r in self.db.query(
            "SELECT l.batch_id, l.fwd_model, l.fwd_deployment FROM batch_lines l JOIN batches b "
            "ON b.id = l.batch_id WHERE b.status = 'in_progress' AND l.state = 'forwarded' AND "
            "l.fwd_batch IS NULL GROUP BY l.batch_id, l.fwd_model, l.fwd_deployment HAVING "
            "MIN(l.fwd_at) < ? OR NOT EXISTS (SELECT 1 FROM batch_lines p WHERE p.batch_id = "
            "l.batch_id AND p.state IN ('pending', 'running'))",
            (time.time() - collect_s,))]

    def assemble(self, batch_id: str, model: str, deployment: str, owner: str,
                 lease_s: float) -> NativeJob | None:
        """A new native batch of the group's held, unsubmitted lines (at most ``MAX_LINES``:
        the rest stay ready for the next), ``owner``'s to submit within ``lease_s``; None
        when another replica took them first."""
        nid, now = new_id("nbatch_"), time.time()
        with self.db.transaction(lock="batch:claim") as cur:
            cur.execute("INSERT INTO native_batches (id, batch_id, model, deployment, status, "
                        "owner, lease_until, created) VALUES (?, ?, ?, ?, 'submitting', ?, ?, ?)",
                        (nid, batch_id, model, deployment, owner, now + lease_s, now))
            held = ("batch_id = ? AND state = 'forwarded' AND fwd_batch IS NULL AND "
                    "fwd_model = ? AND fwd_deployment = ?")
            taken = cur.execute(f"UPDATE batch_lines SET fwd_batch = ? WHERE {held} AND line IN "
                                f"(SELECT line FROM batch_lines WHERE {held} ORDER BY line "
                                "LIMIT ?)", (nid, batch_id, model, deployment, batch_id, model,
                                             deployment, MAX_LINES))
            if not taken:
                cur.execute("DELETE FROM native_batches WHERE id = ?", (nid,))
                return None
        return NativeJob(nid, batch_id, model, deployment, None, now)

    def lines(self, nid: str) -> list[HeldLine]:
        """The lines of a native batch still waiting for their results."""
        rows = self.db.query("SELECT l.line, l.custom_id, l.routed, b.principal FROM "
                             "batch_lines l JOIN batches b ON b.id = l.batch_id WHERE "
                             "l.fwd_batch = ? AND l.state = 'forwarded' ORDER BY l.line",
                             (nid,))
        return [HeldLine(int(n), c, r.encode(), p.encode()) for n, c, r, p in rows]

    def submitted(self, nid: str, provider_id: str) -> None:
        with self.db.transaction(lock=f"native:{nid}") as cur:
            cur.execute("UPDATE native_batches SET status = 'submitted', provider_id = ?, "
                        "owner = NULL WHERE id = ?", (provider_id, nid))

    def unclaim(self, nid: str, *, retry_at: float = 0.0) -> None:
        """Give a native batch whose submission failed for now back, to try again from
        ``retry_at`` (not at every tick: each try uploads the whole file again)."""
        with self.db.transaction(lock=f"native:{nid}") as cur:
            cur.execute("UPDATE native_batches SET owner = NULL, lease_until = ? WHERE id = ? "
                        "AND status = 'submitting'", (retry_at, nid))

    def orphans(self, owner: str, lease_s: float, *, everyone: bool) -> list[NativeJob]:
        """``submitting`` native batches whose runner is gone (its lease ended; with
        ``everyone``, all of them: this process is the database's only runner, just
        started), now ``owner``'s."""
        with self.db.transaction(lock="batch:claim") as cur:
            where = "" if everyone else " AND (lease_until IS NULL OR lease_until < ?)"
            params = () if everyone else (time.time(),)
            ids = [r[0] for r in cur.fetch("SELECT id FROM native_batches WHERE status = "
                                           f"'submitting'{where}", params)]
            for nid in ids:
                cur.execute("UPDATE native_batches SET owner = ?, lease_until = ? WHERE id = ?",
                            (owner, time.time() + lease_s, nid))
        return [j for j in self.active("submitting") if j.id in ids]

    def active(self, status: str = "submitted") -> list[NativeJob]:
        return [_job(r) for r in self.db.query(f"SELECT {_JOB} WHERE n.status = ? ORDER BY "
                                               "n.created", (status,))]

    def cancel_sent(self, nid: str) -> None:
        with self.db.transaction(lock=f"native:{nid}") as cur:
            cur.execute("UPDATE native_batches SET cancel_sent = 1 WHERE id = ?", (nid,))

    def finish(self, nid: str, batch_id: str, line: int, ok: bool, result: bytes,
               tokens: tuple[int, int]) -> bool:
        """Commit a forwarded line's result and count it, together; False when the line is
        not (any more) waiting in ``nid``."""
        return finish_line(self.db, batch_id, line, ok, result, tokens,
                           held="state = 'forwarded' AND fwd_batch = ?", holder=nid)

    def close(self, job: NativeJob, *, skip: bool) -> int:
        """End a native batch: its lines still waiting are ``skipped`` (``skip``: their
        gateway batch is cancelling) or go back to ``pending`` to run live. How many."""
        with self.db.transaction(lock=f"batch:{job.batch_id}") as cur:
            if skip:
                n = cur.execute("UPDATE batch_lines SET state = 'skipped' WHERE fwd_batch = ? "
                                "AND state = 'forwarded'", (job.id,))
            else:
                n = cur.execute("UPDATE batch_lines SET state = 'pending', live = 1, "
                                "fwd_batch = NULL WHERE fwd_batch = ? AND state = 'forwarded'",
                                (job.id,))
            cur.execute("UPDATE native_batches SET status = 'done', owner = NULL WHERE id = ?",
                        (job.id,))
        return n

    def skip_unsubmitted(self) -> int:
        """Held lines of cancelling batches that no provider batch has yet: never sent."""
        with self.db.transaction(lock="batch:claim") as cur:
            return cur.execute("UPDATE batch_lines SET state = 'skipped' WHERE state = "
                               "'forwarded' AND fwd_batch IS NULL AND batch_id IN (SELECT id "
                               "FROM batches WHERE status = 'cancelling')")
