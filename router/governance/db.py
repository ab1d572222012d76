"""Where keys, tenants, budgets and the audit log live: a SQLite file (the embedded default) or
a PostgreSQL database (several replicas), behind one small face, with numbered migrations.

Both are plain DB-API drivers, so every call here blocks: the serving path calls them off the
event loop (``asyncio.to_thread``) and keeps what it reads hot in memory. One connection per
``Database``, guarded by a lock: governance writes are rare (an admin's action, a key's
creation), and a transaction is a few statements.

Migrations are ``(version, statements)`` pairs per component, applied in order inside one
transaction each and recorded in ``schema_migrations``; a database written by an earlier
version gains the later steps when it is opened, and replicas starting together serialise on a
lock (PostgreSQL: an advisory lock; SQLite: ``BEGIN IMMEDIATE``). Statements use ``{float}``,
``{blob}`` and ``{json}`` for the types the two dialects spell differently.

Alembic was not chosen: it needs SQLAlchemy, which nothing else here uses; the migrations are
short DDL lists that read the same in both dialects.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_TYPES = {
    "sqlite": {"float": "REAL", "blob": "BLOB", "json": "TEXT"},
    "postgresql": {"float": "DOUBLE PRECISION", "blob": "BYTEA", "json": "TEXT"},
}

Migration = tuple[int, Sequence[str]]


def sqlite_path(dsn: str, base_dir: Path | None) -> Path:
    """The file a ``sqlite:///PATH`` DSN names (relative to ``base_dir``)."""
    path = Path(dsn.removeprefix("sqlite:///").removeprefix("sqlite://"))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


class Database:
    """One connection to ``dsn`` (``sqlite:///PATH`` or ``postgresql://...``); thread-safe."""

    def __init__(self, dsn: str, *, base_dir: Path | None = None):
        self.dsn = dsn
        if dsn.startswith("sqlite:"):
            self.kind = "sqlite"
            self.path: Path | None = sqlite_path(dsn, base_dir)
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif dsn.startswith(("postgresql://", "postgres://")):
            self.kind, self.path = "postgresql", None
        else:
            raise ValueError(f"DSN {dsn!r}: use sqlite:///PATH or postgresql://...")
        self.mark = "?" if self.kind == "sqlite" else "%s"
        self._lock = threading.RLock()
        self._conn = self._connect()

    def _connect(self) -> Any:
        if self.kind == "sqlite":
            assert self.path is not None
            # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE takes
            # the write lock up front, so two processes never both read-then-write).
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30,
                                   isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def sql(self, statement: str) -> str:
        """``statement`` with ``?`` placeholders in this database's style."""
        return statement if self.kind == "sqlite" else statement.replace("?", "%s")

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[Cursor]:
        """One transaction: committed when the block ends, rolled back if it raises. It holds
        the database's write lock from the start (SQLite), or ``lock``, an advisory lock by
        name that serialises writers of one thing across processes (PostgreSQL)."""
        with self._lock:
            conn = self._conn
            if self.kind == "sqlite":
                conn.execute("BEGIN IMMEDIATE")
            else:
                conn.execute("BEGIN")
                if lock is not None:
                    key = int.from_bytes(hashlib.blake2b(lock.encode(), digest_size=8).digest(),
                                         "big", signed=True)
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            try:
                yield Cursor(self, conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read (its own short transaction)."""
        with self._lock:
            return list(self._conn.execute(self.sql(statement), tuple(params)).fetchall())

    def migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        """Apply ``component``'s migrations this database has not seen, in order; how many."""
        applied = 0
        with self.transaction(lock=f"migrate:{component}") as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, "
                        "version INTEGER NOT NULL, PRIMARY KEY (component, version))")
            done = {v for (v,) in cur.fetch("SELECT version FROM schema_migrations "
                                            "WHERE component = ?", (component,))}
            for version, statements in sorted(migrations, key=lambda m: m[0]):
                if version in done:
                    continue
                for statement in statements:
                    cur.execute(statement.format(**_TYPES[self.kind]))
                cur.execute("INSERT INTO schema_migrations (component, version) VALUES (?, ?)",
                            (component, version))
                applied += 1
        return applied


class Cursor:
    """Statements inside one ``Database.transaction``, with ``?`` placeholders."""

    def __init__(self, db: Database, conn: Any):
        self._db, self._conn = db, conn

    def execute(self, statement: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; how many rows it changed."""
        return self._conn.execute(self._db.sql(statement), tuple(params)).rowcount

    def execute_many(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows`` (a batch's lines: one call, not thousands)."""
        if self._db.kind == "sqlite":
            self._conn.executemany(statement, rows)
        else:
            with self._conn.cursor() as cur:
                cur.executemany(self._db.sql(statement), rows)

    def fetch(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query."""
        return list(self._conn.execute(self._db.sql(statement), tuple(params)).fetchall())
