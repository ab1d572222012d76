"""Concurrency caps: all-or-nothing slots, given back at the end; Redis leases lapse."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from router.limits.concurrency import MemoryConcurrency

pytestmark = pytest.mark.anyio


@pytest.fixture()
def client(redis_clients):
    return redis_clients[0]


@pytest.fixture(params=["memory", "redis"])
def slots(request, client):
    if request.param == "memory":
        return MemoryConcurrency()
    from router.limits.concurrency import RedisConcurrency

    return RedisConcurrency(client, f"cf-test-{uuid.uuid4().hex[:8]}:")


async def test_at_most_cap_at_once_and_slots_come_back(slots):
    caps = [("key:k", 3), ("org:o", 10)]
    taken = await asyncio.gather(*(slots.acquire(f"r{i}", caps) for i in range(8)))
    assert sum(t is None for t in taken) == 3 and set(taken) == {None, 0}
    assert await slots.in_use("key:k") == 3 and await slots.in_use("org:o") == 3
    winners = [f"r{i}" for i, t in enumerate(taken) if t is None]
    for rid in winners:
        await slots.release(rid, caps)
    assert await slots.in_use("key:k") == 0 and await slots.in_use("org:o") == 0
    assert await slots.acquire("again", caps) is None


async def test_a_dead_replicas_lease_lapses(client):
    from router.limits.concurrency import RedisConcurrency

    slots = RedisConcurrency(client, f"cf-test-{uuid.uuid4().hex[:8]}:")
    assert await slots.acquire("dies", [("k", 1)], lease_s=0.2) is None
    assert await slots.acquire("waits", [("k", 1)], lease_s=0.2) == 0
    await asyncio.sleep(0.3)
    assert await slots.acquire("next", [("k", 1)], lease_s=0.2) is None
