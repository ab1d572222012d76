"""What budgets have spent, kept in the governance store so a restart of a single gateway (the
in-process budgets) does not forget this month's spend. With the Redis backend, Redis keeps it
(run it with persistence); this store is the embedded default's."""

from __future__ import annotations

from collections.abc import Iterable

from router.governance.db import Database

COMPONENT = "budget_spend"
MIGRATIONS = [
    (1, ["CREATE TABLE IF NOT EXISTS budget_spend (bucket TEXT NOT NULL, period TEXT NOT NULL, "
         "spent {float} NOT NULL, PRIMARY KEY (bucket, period))"]),
]


class SpendStore:
    """Settled spend per (budget bucket, period key)."""

    def __init__(self, db: Database):
        self.db = db
        db.migrate(COMPONENT, MIGRATIONS)

    def add(self, bucket: str, period: str, usd: float) -> None:
        """Add ``usd`` to the bucket's spend in ``period`` (blocking: off the event loop)."""
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO budget_spend (bucket, period, spent) VALUES (?, ?, ?) "
                        "ON CONFLICT (bucket, period) DO UPDATE SET "
                        "spent = budget_spend.spent + excluded.spent", (bucket, period, usd))

    def load(self, periods: Iterable[str]) -> dict[tuple[str, str], float]:
        """The spend of every bucket in the given period keys (today's, this month's, total)."""
        keys = sorted(set(periods))
        marks = ", ".join("?" * len(keys))
        rows = self.db.query(f"SELECT bucket, period, spent FROM budget_spend "
                             f"WHERE period IN ({marks})", keys)
        return {(b, p): float(s) for b, p, s in rows}
