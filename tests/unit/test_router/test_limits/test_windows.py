"""Sliding-window rate limits, in-process and in Redis: never more than the limit in any
window, all-or-nothing across buckets, corrected token counts, and a retry time that works."""

from __future__ import annotations

import asyncio
import math
import uuid

import pytest

from router.limits.windows import Charge, MemoryWindows

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture()
def redis_client(redis_clients):
    return redis_clients[0]


@pytest.fixture(params=["memory", "redis"])
async def windows(request, redis_client):
    if request.param == "memory":
        return MemoryWindows()
    from router.limits.redis_windows import RedisWindows

    return RedisWindows(redis_client, prefix=f"cf-test-{uuid.uuid4().hex[:8]}:")


def rpm(bucket: str, limit: float, units: float = 1, window_s: float = 60) -> Charge:
    return Charge(bucket, window_s, limit, units)


async def test_never_more_than_the_limit_even_at_once(windows):
    results = await asyncio.gather(*(windows.admit(f"r{i}", [rpm("key:a", 10)])
                                     for i in range(25)))
    assert sum(r.allowed for r in results) == 10
    refused = next(r for r in results if not r.allowed)
    assert refused.refused_by == 0 and 0 < refused.retry_after_s <= 60
    assert refused.remaining == (0.0,)


async def test_a_request_refused_by_one_bucket_uses_none_of_the_others(windows):
    assert (await windows.admit("r1", [rpm("user:u", 5), rpm("org:o", 1)])).allowed
    refused = await windows.admit("r2", [rpm("user:u", 5), rpm("org:o", 1)])
    assert not refused.allowed and refused.refused_by == 1
    ok = await windows.admit("r3", [rpm("user:u", 5)])
    assert ok.allowed and ok.remaining == (3.0,)  # r1 and r3: r2 left no trace


async def test_tokens_are_corrected_after_the_answer(windows):
    tpm = [rpm("key:t:tokens", 1000, units=800)]
    assert (await windows.admit("r1", tpm)).allowed  # 300 in + at most 500 out
    assert not (await windows.admit("r2", [rpm("key:t:tokens", 1000, units=300)])).allowed
    await windows.adjust("r1", rpm("key:t:tokens", 1000, units=350))  # it wrote 50
    assert (await windows.admit("r3", [rpm("key:t:tokens", 1000, units=600)])).allowed
    huge = await windows.admit("r4", [rpm("key:t:tokens", 1000, units=5000)])
    assert not huge.allowed and math.isinf(huge.retry_after_s)


async def test_the_window_slides():
    clock = Clock()
    w = MemoryWindows(clock)
    for i in range(3):
        clock.now = i * 10.0
        assert (await w.admit(f"r{i}", [rpm("k", 3)])).allowed
    clock.now = 30.0
    refused = await w.admit("r3", [rpm("k", 3)])
    assert not refused.allowed and refused.retry_after_s == pytest.approx(30.0)
    clock.now = 60.0  # r0 (at 0) has left the window
    assert (await w.admit("r4", [rpm("k", 3)])).allowed
    clock.now = 200.0
    assert w.forget_idle() == 1


async def test_a_short_redis_window_frees_up_by_itself(redis_client):
    from router.limits.redis_windows import RedisWindows

    w = RedisWindows(redis_client, prefix=f"cf-test-{uuid.uuid4().hex[:8]}:")
    burst = [rpm("b", 2, window_s=0.3)]
    assert (await w.admit("a", burst)).allowed and (await w.admit("b", burst)).allowed
    refused = await w.admit("c", burst)
    assert not refused.allowed and 0 < refused.retry_after_s <= 0.3
    await asyncio.sleep(refused.retry_after_s + 0.05)
    assert (await w.admit("d", burst)).allowed


async def test_two_replicas_share_one_window(redis_clients):
    from router.limits.redis_windows import RedisWindows

    prefix = f"cf-test-{uuid.uuid4().hex[:8]}:"
    a, b = (RedisWindows(c, prefix) for c in redis_clients)
    results = await asyncio.gather(*((a if i % 2 else b).admit(f"r{i}", [rpm("k", 7)])
                                     for i in range(30)))
    assert sum(r.allowed for r in results) == 7
