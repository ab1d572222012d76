"""The traffic log: one row per request, and users' feedback on them.

What retraining reads: each request's prompt (the text the router embedded), its embedding,
every candidate's predicted quality and estimated cost, the chosen model, the router version
and policy that chose it and the probability it did (``propensity``), the answer, what it cost
and how it went; ``feedback`` rows attach users' ratings to request ids, and ``scores`` rows
attach scorers' verdicts (``contextforge eval score``), one per (request, scorer).

Older logs are upgraded in place when opened (``_upgrade``: columns added, never dropped), so a
log written by an earlier version keeps its rows and gains the new columns as NULL.

Two backends behind one class, chosen by DSN: ``sqlite:///path`` (the default; WAL, nothing to
run) and ``postgresql://...`` (psycopg 3; shared by several gateway replicas). Both are plain
DB-API drivers, so writes run on one writer thread: the request path only enqueues a record
(microseconds, never blocks on disk), and the thread writes what has queued up in one
transaction. ``flush`` waits until everything enqueued so far is committed; ``close`` drains the
queue, so a graceful shutdown loses nothing. A crash loses at most the rows of the last few
milliseconds (the write window), never a committed one.

Redaction (``traffic.redact``, off by default): given a ``router.redact.Redactor``, the writer
thread replaces emails, phone numbers and card numbers in each row's prompt, answer and tool
calls before it writes them, so the request path pays nothing; feedback comments are redacted
on the thread that adds them. A text whose redaction fails is not written at all.

The write window (``window_s``, 20 ms): after the first row of a batch, the writer collects
more for up to that long (or until ``batch_max`` rows, or a ``flush``) before it commits. A
commit per row costs SQLite ~4x the CPU per row of a commit per 64 rows, on a thread that
shares the interpreter (and the two cores) with the event loop: under load, a row each
commit added ~170 µs of gateway CPU per request (benchmarks/README.md, "Gateway overhead").
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from router.redact import Redactor

log = logging.getLogger("contextforge.traffic")

_COLUMNS = (
    "id", "ts", "tenant", "user_id", "route", "model", "deployment", "cache", "input_tokens",
    "output_tokens", "cost_usd", "latency_ms", "ttft_ms", "status", "error", "stream",
    "candidates", "router", "encoder", "prompt", "embedding", "policy", "propensity", "answer",
    "tool_calls", "arm", "cache_entry", "project", "credential",
)
# Columns added after the first schema: (name, SQL type with {float}/{blob} placeholders).
_ADDED = (
    ("policy", "TEXT"),
    ("propensity", "{float}"),
    ("answer", "TEXT"),
    ("tool_calls", "TEXT"),
    ("arm", "TEXT"),
    ("cache_entry", "TEXT"),
    ("project", "TEXT"),
    ("credential", "TEXT"),
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    tenant TEXT,
    user_id TEXT,
    route TEXT,
    model TEXT,
    deployment TEXT,
    cache TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost_usd DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION,
    ttft_ms DOUBLE PRECISION,
    status INTEGER NOT NULL,
    error TEXT,
    stream INTEGER NOT NULL DEFAULT 0,
    candidates TEXT,
    router TEXT,
    encoder TEXT,
    prompt TEXT,
    embedding {blob}
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    rating DOUBLE PRECISION NOT NULL,
    user_id TEXT,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id);
CREATE TABLE IF NOT EXISTS scores (
    request_id TEXT NOT NULL,
    scorer TEXT NOT NULL,
    score DOUBLE PRECISION,
    detail TEXT,
    cost_usd DOUBLE PRECISION,
    ts DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (request_id, scorer)
);
"""


class CandidateLog(msgspec.Struct, frozen=True, array_like=True):
    """One candidate as the router saw it: [model, predicted quality, estimated cost]."""

    model: str
    predicted_quality: float | None
    estimated_cost_usd: float


class TrafficRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One request, as logged."""

    id: str
    ts: float
    status: int  # the HTTP status the client got
    tenant: str | None = None
    user_id: str | None = None
    route: str | None = None
    model: str | None = None
    deployment: str | None = None  # "provider:endpoint-or-model", never a key
    cache: str | None = None  # hit-exact, hit-semantic, miss, bypass
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    error: str | None = None
    stream: bool = False
    candidates: list[CandidateLog] | None = None
    router: str | None = None
    encoder: str | None = None
    prompt: str | None = None
    embedding: np.ndarray | None = None  # float32, L2-normalised
    policy: str | None = None  # router.policy.describe of the deciding policy
    propensity: float | None = None  # P(this model | prompt) under the logging policy
    answer: str | None = None  # the answer's text (traffic.log_answers)
    tool_calls: str | None = None  # its tool calls, a JSON list of {id, name, arguments}
    arm: str | None = None  # the online A/B arm (router version) that decided
    cache_entry: str | None = None  # the cache entry that answered a hit
    project: str | None = None  # the caller's project (from its key)
    credential: str | None = None  # the key id (or token subject) that called


class ScoreRow(msgspec.Struct, frozen=True):
    """One scorer's verdict on one logged answer; ``score`` None: the scorer could not score
    it (e.g. a judge's unparseable reply), recorded so a rerun does not ask again."""

    request_id: str
    scorer: str
    score: float | None
    detail: str = ""
    cost_usd: float = 0.0  # what scoring cost (a judge's calls)
    ts: float = 0.0


class Feedback(msgspec.Struct, frozen=True):
    request_id: str
    rating: float
    ts: float
    user_id: str | None = None
    comment: str | None = None


class UnknownRequest(KeyError):
    """Feedback for a request id the log does not hold."""


_CANDIDATES = msgspec.json.Encoder()
_CANDIDATES_DECODER = msgspec.json.Decoder(list[CandidateLog])
_STOP = object()


def sqlite_path(dsn: str, base_dir: Path | None) -> Path:
    """The file a ``sqlite:///PATH`` DSN names (a relative PATH is under ``base_dir``)."""
    path = Path(dsn.removeprefix("sqlite:///").removeprefix("sqlite://"))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


class TrafficLog:
    """The request log behind a DSN; thread-safe; writes off the caller's thread.

    ``redactor``: PII to replace in the texts written (``traffic.redact``); None writes them
    as given."""

    def __init__(self, dsn: str, *, base_dir: Path | None = None, batch_max: int = 512,
                 window_s: float = 0.02, redactor: Redactor | None = None):
        self.dsn = dsn
        self._redactor = redactor
        if dsn.startswith("sqlite:"):
            self.kind = "sqlite"
            self._path = sqlite_path(dsn, base_dir)
            self._path.parent.mkdir(parents=True, exist_ok=True)
        elif dsn.startswith(("postgresql://", "postgres://")):
            self.kind = "postgresql"
        else:
            raise ValueError(f"traffic DSN {dsn!r}: use sqlite:///PATH or postgresql://...")
        self._mark = "?" if self.kind == "sqlite" else "%s"
        self._batch_max = batch_max
        self._window_s = window_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the reader connection
        self._reader = self._connect()
        self._init_schema(self._reader)
        self._writer_conn = self._connect()
        self._thread = threading.Thread(target=self._run, name="traffic-writer", daemon=True)
        self._closed = False
        self._thread.start()

    # --- connections ---------------------------------------------------------------------

    def _connect(self) -> Any:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self._path, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable against process crashes (not power loss), and
            # spares an fsync per transaction.
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn
        import psycopg  # only PostgreSQL deployments pay for the import

        return psycopg.connect(self.dsn, autocommit=False)

    def _init_schema(self, conn: Any) -> None:
        blob = "BLOB" if self.kind == "sqlite" else "BYTEA"
        for statement in _SCHEMA.format(blob=blob).split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.commit()
        self._upgrade(conn)

    def _upgrade(self, conn: Any) -> None:
        """Add the columns a log from an earlier version lacks (idempotent; replicas starting
        together may race, so PostgreSQL uses IF NOT EXISTS and SQLite re-checks)."""
        sql_types = {"float": "DOUBLE PRECISION",
                     "blob": "BLOB" if self.kind == "sqlite" else "BYTEA"}
        if self.kind == "sqlite":
            have = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
        else:
            have = {row[0] for row in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'requests' AND table_schema = current_schema()")}
        for name, sql_type in _ADDED:
            if name in have:
                continue
            guard = "IF NOT EXISTS " if self.kind == "postgresql" else ""
            try:
                conn.execute(f"ALTER TABLE requests ADD COLUMN {guard}{name} "
                             f"{sql_type.format(**sql_types)}")
                conn.commit()
            except sqlite3.OperationalError as exc:  # another process added it first
                conn.rollback()
                if "duplicate column" not in str(exc):
                    raise

    # --- writing -------------------------------------------------------------------------

    def write(self, record: TrafficRecord) -> None:
        """Enqueue one record (never blocks); the writer thread commits it shortly."""
        if self._closed:
            raise RuntimeError("the traffic log is closed")
        self._queue.put(record)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every record enqueued before this call is committed."""
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(timeout):
            raise TimeoutError("the traffic log did not commit in time")

    def close(self) -> None:
        """Commit everything queued, then stop the writer and close connections."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        self._writer_conn.close()
        with self._lock:
            self._reader.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            batch: list[TrafficRecord] = []
            waiters: list[threading.Event] = []
            deadline = time.monotonic() + self._window_s
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    batch.append(item)
                # A flush (or close) is waiting: commit now, not at the window's end.
                if stop or waiters or len(batch) >= self._batch_max:
                    break
                remaining = deadline - time.monotonic()
                try:
                    item = (self._queue.get(timeout=remaining) if remaining > 0
                            else self._queue.get_nowait())
                except queue.Empty:
                    break
            if batch:
                self._insert(batch)
            for w in waiters:
                w.set()

    def _insert(self, batch: list[TrafficRecord]) -> None:
        marks = ", ".join([self._mark] * len(_COLUMNS))
        sql = (f"INSERT INTO requests ({', '.join(_COLUMNS)}) VALUES ({marks}) "
               "ON CONFLICT (id) DO NOTHING")
        rows = [self._row(r) for r in batch]
        for attempt in range(3):
            try:
                cur = self._writer_conn.cursor()
                cur.executemany(sql, rows)
                self._writer_conn.commit()
                return
            except Exception:  # a lost database must not kill the writer thread
                log.exception("traffic log: writing %d rows failed (attempt %d)", len(rows),
                              attempt + 1)
                try:
                    self._writer_conn.rollback()
                except Exception:
                    self._writer_conn = self._reconnect()
                time.sleep(0.2 * (attempt + 1))
        log.error("traffic log: dropped %d rows after 3 attempts", len(rows))

    def _reconnect(self) -> Any:
        try:
            return self._connect()
        except Exception:
            log.exception("traffic log: reconnect failed")
            return self._writer_conn

    def _row(self, r: TrafficRecord) -> tuple[Any, ...]:
        emb = None
        if r.embedding is not None:
            emb = np.ascontiguousarray(r.embedding, dtype="<f4").tobytes()
        candidates = _CANDIDATES.encode(r.candidates).decode() if r.candidates else None
        prompt, answer, tool_calls = r.prompt, r.answer, r.tool_calls
        if self._redactor is not None:
            prompt, answer, tool_calls = self._redacted(r, self._redactor)
        return (r.id, r.ts, r.tenant, r.user_id, r.route, r.model, r.deployment, r.cache,
                r.input_tokens, r.output_tokens, r.cost_usd, r.latency_ms, r.ttft_ms, r.status,
                r.error, int(r.stream), candidates, r.router, r.encoder, prompt, emb,
                r.policy, r.propensity, answer, tool_calls, r.arm, r.cache_entry,
                r.project, r.credential)

    @staticmethod
    def _redacted(r: TrafficRecord, redactor: Redactor,
                  ) -> tuple[str | None, str | None, str | None]:
        """The record's prompt, answer and tool calls with PII replaced; if redaction fails
        (a bug on some odd input), none of them: never a text unredacted, and never an
        exception that would stop the writer thread."""
        try:
            return (redactor.redact(r.prompt) if r.prompt else r.prompt,
                    redactor.redact(r.answer) if r.answer else r.answer,
                    redactor.redact_json(r.tool_calls) if r.tool_calls else r.tool_calls)
        except Exception:
            log.exception("traffic log: redacting request %s failed; its texts are dropped",
                          r.id)
            return None, None, None

    # --- feedback and reading ------------------------------------------------------------

    def add_feedback(self, fb: Feedback, *, wait_s: float = 1.0,
                     tenant: str | None = None) -> None:
        """Attach a rating to a logged request (of ``tenant``, when given: no tenant rates
        another's), its comment redacted as the rows are; ``UnknownRequest`` if the log
        lacks it.

        A client may rate an answer the moment it arrives, before its row is committed: this
        flushes our own queue first and, if the row is still missing (another replica
        answered and its writer has not committed yet), looks again for up to ``wait_s``."""
        self.flush()
        if fb.comment and self._redactor is not None:
            fb = msgspec.structs.replace(fb, comment=self._redactor.redact(fb.comment))
        m = self._mark
        deadline = time.monotonic() + wait_s
        while True:
            with self._lock:
                conn = self._reader
                where, params = f"id = {m}", [fb.request_id]
                if tenant is not None:
                    where, params = where + f" AND tenant = {m}", [*params, tenant]
                found = conn.execute(f"SELECT 1 FROM requests WHERE {where}",
                                     tuple(params)).fetchone() is not None
                if found:
                    conn.execute(f"INSERT INTO feedback (request_id, ts, rating, user_id, "
                                 f"comment) VALUES ({m}, {m}, {m}, {m}, {m})",
                                 (fb.request_id, fb.ts, fb.rating, fb.user_id, fb.comment))
                    conn.commit()
                    return
                conn.rollback()
            if time.monotonic() >= deadline:
                raise UnknownRequest(fb.request_id)
            time.sleep(0.05)

    def get(self, request_id: str) -> TrafficRecord | None:
        """One logged request (after a ``flush`` if it was just written)."""
        rows = self._select(f"WHERE id = {self._mark}", (request_id,))
        return rows[0] if rows else None

    def records(self, *, since: float | None = None, limit: int | None = None,
                ) -> list[TrafficRecord]:
        """Logged requests, oldest first."""
        where, params = "", ()
        if since is not None:
            where, params = f"WHERE ts >= {self._mark}", (since,)
        tail = f" LIMIT {int(limit)}" if limit is not None else ""
        return self._select(f"{where} ORDER BY ts{tail}", params)

    def feedback(self, request_id: str | None = None) -> list[Feedback]:
        where, params = "", ()
        if request_id is not None:
            where, params = f"WHERE request_id = {self._mark}", (request_id,)
        with self._lock:
            rows = self._reader.execute(
                f"SELECT request_id, rating, ts, user_id, comment FROM feedback {where} "
                "ORDER BY ts", params).fetchall()
            self._reader.rollback()  # end the read transaction (PostgreSQL holds one open)
        return [Feedback(*row) for row in rows]

    # --- reading in batches (scoring, retraining) ----------------------------------------

    def batches(self, *, since: float | None = None, until: float | None = None,
                unscored_by: str | None = None, scored_by: str | None = None,
                answered: bool = False, batch_size: int = 1000,
                ) -> Iterator[list[tuple[TrafficRecord, float | None]]]:
        """Logged requests oldest first, ``batch_size`` at a time, each with its score.

        ``unscored_by``: only rows that scorer has not scored yet (what ``eval score`` reads:
        a rerun, or a run resumed after an interruption, skips what is done). ``scored_by``:
        only rows it scored with a value, paired with that value (what retraining reads).
        ``answered``: only successful requests with a logged answer. Reads on a connection of
        its own — on PostgreSQL a server-side cursor, so millions of rows stream through
        bounded memory — while other connections write scores beside them."""
        m, where, params = self._mark, [], []
        if since is not None:
            where.append(f"r.ts >= {m}")
            params.append(since)
        if until is not None:
            where.append(f"r.ts < {m}")
            params.append(until)
        if answered:
            # A cache hit's answer was made for another request: no sample of its model here.
            where.append("r.status = 200 AND (r.answer IS NOT NULL OR r.tool_calls IS NOT NULL) "
                         "AND (r.cache IS NULL OR SUBSTR(r.cache, 1, 3) <> 'hit')")
        join, score = "", "NULL"
        if unscored_by is not None:
            where.append(f"NOT EXISTS (SELECT 1 FROM scores s WHERE s.request_id = r.id "
                         f"AND s.scorer = {m})")
            params.append(unscored_by)
        if scored_by is not None:
            join = f" JOIN scores s ON s.request_id = r.id AND s.scorer = {m}"
            params.insert(0, scored_by)
            where.append("s.score IS NOT NULL")
            score = "s.score"
        cols = ", ".join(f"r.{c}" for c in _COLUMNS)
        sql = (f"SELECT {cols}, {score} FROM requests r{join}"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY r.ts, r.id")
        conn = self._connect()
        try:
            if self.kind == "postgresql":
                cur = conn.cursor(name="contextforge_batches")  # server-side
                cur.itersize = batch_size
            else:
                cur = conn.cursor()
            try:
                cur.execute(sql, params)
                while rows := cur.fetchmany(batch_size):
                    yield [(self._record(row[:-1]), row[-1]) for row in rows]
            finally:
                cur.close()
        finally:
            conn.close()

    def write_scores(self, rows: Sequence[ScoreRow]) -> int:
        """Record scorers' verdicts in one transaction; a (request, scorer) pair already
        scored is kept as it was (idempotent reruns). Returns how many were new."""
        if not rows:
            return 0
        m = self._mark
        sql = (f"INSERT INTO scores (request_id, scorer, score, detail, cost_usd, ts) VALUES "
               f"({m}, {m}, {m}, {m}, {m}, {m}) ON CONFLICT (request_id, scorer) DO NOTHING")
        values = [(r.request_id, r.scorer, r.score, r.detail, r.cost_usd, r.ts or time.time())
                  for r in rows]
        with self._lock:
            cur = self._reader.cursor()
            cur.executemany(sql, values)  # rowcount: the rows inserted, conflicts excluded
            self._reader.commit()
        return max(int(cur.rowcount), 0)

    def scores(self, request_id: str | None = None, scorer: str | None = None
               ) -> list[ScoreRow]:
        """Recorded verdicts, oldest first (filtered by request and/or scorer)."""
        m, where, params = self._mark, [], []
        if request_id is not None:
            where.append(f"request_id = {m}")
            params.append(request_id)
        if scorer is not None:
            where.append(f"scorer = {m}")
            params.append(scorer)
        tail = f" WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._reader.execute(
                "SELECT request_id, scorer, score, detail, cost_usd, ts FROM scores"
                f"{tail} ORDER BY ts, request_id", params).fetchall()
            self._reader.rollback()
        return [ScoreRow(*row) for row in rows]

    def count(self) -> int:
        with self._lock:
            n = self._reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
            self._reader.rollback()
        return int(n)

    def read(self, sql: str, params: Sequence[Any] = (), *, flush: bool = True
             ) -> list[tuple[Any, ...]]:
        """Rows of one read-only query (``?`` placeholders) on the log (``router.usage``),
        after the rows queued so far are written (``flush=False``: the caller flushed once
        before a series of reads, and each need not end the writer's window again)."""
        if flush:
            self.flush()
        with self._lock:
            rows = self._reader.execute(self._placeholders(sql), tuple(params)).fetchall()
            self._reader.rollback()
        return list(rows)

    def delete(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one ``DELETE`` (``?`` placeholders) now, committed; how many rows went (an
        erasure, the retention period). Rows still queued are flushed first."""
        self.flush()
        with self._lock:
            count = self._reader.execute(self._placeholders(sql), tuple(params)).rowcount
            self._reader.commit()
        return count

    def _placeholders(self, sql: str) -> str:
        """``?`` placeholders as the driver wants them; psycopg reads every ``%`` as one, so
        a literal one (``LIKE 'hit%'``) is doubled."""
        if self.kind == "sqlite":
            return sql
        return sql.replace("%", "%%").replace("?", self._mark)

    def _select(self, tail: str, params: Sequence[Any]) -> list[TrafficRecord]:
        with self._lock:
            rows = self._reader.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM requests {tail}", params).fetchall()
            self._reader.rollback()
        return [self._record(row) for row in rows]

    @staticmethod
    def _record(row: Sequence[Any]) -> TrafficRecord:
        values = dict(zip(_COLUMNS, row, strict=True))
        emb = values.pop("embedding")
        cands = values.pop("candidates")
        values["stream"] = bool(values["stream"])
        return TrafficRecord(
            **values,
            embedding=None if emb is None else np.frombuffer(bytes(emb), dtype="<f4").copy(),
            candidates=None if cands is None else _CANDIDATES_DECODER.decode(cands),
        )
