"""service.admin_stats: the shared, briefly kept computation and the window's validation."""

from __future__ import annotations

import asyncio

import pytest

from service.admin_stats import DEFAULT_WINDOW_S, StatsCache, ttl_for, window_of
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
