"""The dashboard's figures computed in a process of their own, at the lowest CPU priority.

A worker thread in the gateway's process would share the interpreter's lock with the event
loop: each refresh's row decoding and aggregation (a few hundred ms on a busy hour's log)
delayed routed requests by up to the lock's switch interval at every step, and measured so
(benchmarks/README.md, "Dashboard overhead"). In a process of its own, niced to 19, the
computation takes only CPU the gateway leaves idle. ``compute`` is that process's entry point
(``service.admin_stats.StatsWorker`` runs it); it keeps its log connection and the budget
charts' settled buckets between calls, so they are per process, not per request.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from router.config import BudgetRule
from router.stats import traffic_stats
from router.stats_budgets import Memo, burndown
from router.traffic import TrafficLog

_LOGS: dict[tuple[str, str | None], TrafficLog] = {}
_SETTLED: Memo = {}


def lower_priority() -> None:
    """The worker process's initializer: below every request-serving thread."""
    os.nice(19)


def compute(dsn: str, base_dir: str | None, window_s: float, tenant: str | None,
            prices: dict[str, tuple[float, float]], providers: dict[str, str],
            budgets: list[BudgetRule]) -> dict[str, Any]:
    """Every figure of ``router.stats`` and ``router.stats_budgets`` for the last
    ``window_s`` seconds (the caller flushed its log's queue first)."""
    key = (dsn, base_dir)
    log = _LOGS.get(key)
    if log is None:
        log = _LOGS[key] = TrafficLog(dsn, base_dir=Path(base_dir) if base_dir else None)
    now = time.time()
    figures = traffic_stats(log, since=now - window_s, until=now, tenant=tenant,
                            price=prices.get, providers=providers.get)
    figures["budgets"] = burndown(log, budgets, now=now, tenant=tenant, memo=_SETTLED)
    return figures
