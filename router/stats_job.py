"""The dashboard's figures computed in a process of their own, at the lowest CPU priority.

    python -m router.stats_job     # JSON lines: one job in on stdin, one answer out on stdout

A worker thread in the gateway's process would share the interpreter's lock with the event
loop: each refresh's row decoding and aggregation (a few hundred ms on a busy hour's log)
delayed routed requests at every switch of the lock, and measured so (benchmarks/README.md,
"Dashboard overhead"). In a process of its own, niced to 19, the computation takes only CPU
the gateway leaves idle. The process is a plain module run with ``-m`` rather than a
multiprocessing worker, which would import the host's ``__main__`` again (a script that
starts a server without a ``__main__`` guard would start a second one).

A job (``Job``) names the log, the window and what only the gateway knows (catalog prices,
each model's provider, the budgets); the answer is ``{"figures": {...}}`` or ``{"error":
"..."}``. The process keeps its log connection and the budget charts' settled buckets between
jobs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from router.config import BudgetRule
from router.stats import traffic_stats
from router.stats_budgets import Memo, burndown
from router.traffic import TrafficLog


class Job(msgspec.Struct, frozen=True):
    """One computation: the figures of the last ``window_s`` seconds of ``dsn``'s log."""

    dsn: str
    base_dir: str | None
    window_s: float
    tenant: str | None
    prices: dict[str, tuple[float, float]]
    providers: dict[str, str]
    budgets: list[BudgetRule]


class Worker:
    """The process's state between jobs: open logs and settled budget buckets."""

    def __init__(self) -> None:
        self._logs: dict[tuple[str, str | None], TrafficLog] = {}
        self._settled: Memo = {}

    def compute(self, job: Job) -> dict[str, Any]:
        """Every figure of ``router.stats`` and ``router.stats_budgets`` for the job (the
        gateway flushed its log's queue first)."""
        key = (job.dsn, job.base_dir)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = TrafficLog(
                job.dsn, base_dir=Path(job.base_dir) if job.base_dir else None)
        now = time.time()
        figures = traffic_stats(log, since=now - job.window_s, until=now, tenant=job.tenant,
                                price=job.prices.get, providers=job.providers.get)
        figures["budgets"] = burndown(log, job.budgets, now=now, tenant=job.tenant,
                                      memo=self._settled)
        return figures


def main() -> None:
    os.nice(19)  # below every request-serving thread of the machine
    worker, decode, encode = Worker(), msgspec.json.Decoder(Job), msgspec.json.Encoder()
    for line in sys.stdin.buffer:
        try:
            answer: dict[str, Any] = {"figures": worker.compute(decode.decode(line))}
        except Exception as exc:  # one bad job must not end the process
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.buffer.write(encode.encode(answer) + b"\n")
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
