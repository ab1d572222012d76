"""Budgets: concurrent requests never overspend, in-process or across replicas on Redis;
reservations of dead requests expire; alerts fire once per threshold."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from router.limits.budgets import Budget, MemoryBudgets, period_key

pytestmark = pytest.mark.anyio
DOLLAR = Budget("org:acme", "month", 1.00)


@pytest.fixture(params=["memory", "redis"])
def budgets_pair(request, redis_clients):
    """Two handles on one set of budgets (two replicas on Redis; one process in memory)."""
    if request.param == "memory":
        b = MemoryBudgets()
        return b, b
    from router.limits.redis_budgets import RedisBudgets

    prefix = f"cf-test-{uuid.uuid4().hex[:8]}:"
    return tuple(RedisBudgets(c, prefix) for c in redis_clients)


async def test_fifty_concurrent_requests_never_overspend(budgets_pair):
    a, b = budgets_pair

    async def request(i: int) -> float:
        side = a if i % 2 else b
        verdict = await side.reserve(f"r{i}", [DOLLAR], 0.05)  # the most it can cost
        if not verdict.allowed:
            return 0.0
        await asyncio.sleep(0.01)  # the provider answers
        cost = 0.04 if i % 3 else 0.05
        await side.settle(verdict.hold, cost)
        return cost

    costs = await asyncio.gather(*(request(i) for i in range(50)))
    spent, reserved = await a.standing(DOLLAR)
    assert spent == pytest.approx(sum(costs)) and reserved == pytest.approx(0.0)
    assert spent <= 1.00 + 1e-9
    assert sum(c > 0 for c in costs) >= 20  # 20 holds of 0.05 fill it (more once some settle)


async def test_a_refusal_names_the_budget_and_holds_nothing(budgets_pair):
    a, _ = budgets_pair
    key = Budget("key:k1", "day", 0.10)
    assert (await a.reserve("r1", [key, DOLLAR], 0.08)).allowed
    refused = await a.reserve("r2", [DOLLAR, key], 0.05)
    assert not refused.allowed and refused.refused_by == 1
    assert refused.spent_usd == 0 and refused.reserved_usd == pytest.approx(0.08)
    assert (await a.standing(DOLLAR)) == pytest.approx((0.0, 0.08))  # r2 left nothing


async def test_release_and_alert_thresholds(budgets_pair):
    a, _ = budgets_pair
    small = Budget(f"user:{uuid.uuid4().hex[:6]}", "total", 1.0)
    hold = (await a.reserve("r1", [small], 0.6)).hold
    await a.release(hold)
    assert (await a.standing(small)) == pytest.approx((0.0, 0.0))
    crossed = await a.settle((await a.reserve("r2", [small], 0.6)).hold, 0.55)
    assert [c.threshold for c in crossed] == [0.5]
    crossed = await a.settle((await a.reserve("r3", [small], 0.45)).hold, 0.45)
    assert [c.threshold for c in crossed] == [0.8, 1.0] and crossed[-1].spent_usd == 1.0
    assert not (await a.reserve("r4", [small], 0.01)).allowed


async def test_a_dead_requests_reservation_expires():
    now = [1000.0]
    b = MemoryBudgets(reservation_ttl_s=60, clock=lambda: now[0])
    assert (await b.reserve("dies", [DOLLAR], 1.0)).allowed
    assert not (await b.reserve("waits", [DOLLAR], 0.1)).allowed
    now[0] += 61
    assert (await b.reserve("next", [DOLLAR], 0.1)).allowed


async def test_a_dead_requests_redis_reservation_expires(redis_clients):
    from router.limits.redis_budgets import RedisBudgets

    b = RedisBudgets(redis_clients[0], f"cf-test-{uuid.uuid4().hex[:8]}:",
                     reservation_ttl_s=0.2)
    assert (await b.reserve("dies", [DOLLAR], 1.0)).allowed
    assert not (await b.reserve("waits", [DOLLAR], 0.1)).allowed
    await asyncio.sleep(0.3)
    assert (await b.reserve("next", [DOLLAR], 0.1)).allowed


def test_periods_are_utc_calendar_periods():
    t = 1796428800.0  # 2026-12-05T00:00:00Z
    assert period_key("day", t) == "2026-12-05" and period_key("day", t - 1) == "2026-12-04"
    assert period_key("month", t) == "2026-12" and period_key("total", t) == "total"
