"""service.admin_stats: the shared, briefly kept computation and the window's validation."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from router.config import BudgetRule
from router.stats_job import Job
from router.traffic import TrafficLog, TrafficRecord
from service.admin_stats import (
    DEFAULT_WINDOW_S,
    StatsCache,
    StatsUnavailable,
    StatsWorker,
    ttl_for,
    window_of,
)
from service.errors import BadRequest


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_callers_share_one_computation_and_it_is_kept_for_the_ttl():
    clock, calls = Clock(), []

    async def compute() -> dict:
        calls.append(1)
        await asyncio.sleep(0.01)
        return {"n": len(calls)}

    async def scenario() -> None:
        cache = StatsCache(ttl_s=1.5, clock=clock)
        answers = await asyncio.gather(*(cache.get("k", compute) for _ in range(10)))
        assert answers == [{"n": 1}] * 10 and len(calls) == 1
        clock.now = 1.0
        assert await cache.get("k", compute) == {"n": 1}
        assert await cache.get("other", compute) == {"n": 2}  # another key computes
        clock.now = 2.6
        assert await cache.get("k", compute) == {"n": 3}  # stale: computed again

    asyncio.run(scenario())


def test_a_failure_is_not_kept():
    outcomes = [RuntimeError("database gone"), {"ok": True}]

    async def compute() -> dict:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def scenario() -> None:
        cache = StatsCache(clock=Clock())
        with pytest.raises(RuntimeError):
            await cache.get("k", compute)
        assert await cache.get("k", compute) == {"ok": True}

    asyncio.run(scenario())


def test_window_validation():
    assert window_of(None) == window_of("") == DEFAULT_WINDOW_S
    assert window_of("60") == 60 and window_of("2592000") == 2592000
    for bad in ("abc", "59", "2592001", "nan", "inf", "-1", "1e400"):
        with pytest.raises(BadRequest, match="window_s must be a number of seconds"):
            window_of(bad)


def test_long_windows_keep_answers_longer():
    assert ttl_for(300) == 1.5 and ttl_for(3600) == 5.0 and ttl_for(30 * 86400) == 15.0


def test_the_worker_process_computes_reports_errors_and_comes_back(tmp_path):
    log = TrafficLog(f"sqlite:///{tmp_path / 't.sqlite3'}")
    log.write(TrafficRecord(id="r1", ts=time.time() - 5, status=200, tenant="acme",
                            model="gpt-4o", cost_usd=0.5, latency_ms=12.0))
    log.close()
    job = Job(dsn="sqlite:///t.sqlite3", base_dir=str(tmp_path), window_s=600, tenant=None,
              prices={}, providers={},
              budgets=[BudgetRule(scope="org", usd=2.0, period="total")])

    async def scenario() -> None:
        worker = StatsWorker()
        try:
            figures = await worker.run(job)
            assert figures["requests"]["total"] == 1
            assert figures["budgets"][0]["remaining_usd"] == pytest.approx(1.5)
            with pytest.raises(StatsUnavailable, match="traffic DSN"):
                await worker.run(msgspec.structs.replace(job, dsn="mysql://nope"))
            proc = worker._proc
            proc.kill()  # out of memory, say
            await proc.wait()
            assert (await worker.run(job))["requests"]["total"] == 1  # a new process
            assert worker._proc is not proc
        finally:
            await worker.aclose()
        assert worker._proc is None and proc.returncode is not None

    asyncio.run(scenario())
