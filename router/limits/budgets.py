"""Spend budgets that concurrent requests cannot overspend: reserve first, settle after.

Before a request reaches a provider, the most it can cost (its input tokens plus the most the
model may write, at the chosen model's prices) is *reserved* against every budget it falls
under — its key, user, project, organisation — and only if each budget's ``spent + reserved +
amount`` stays within its limit. When the answer is in, the reservation is replaced by the real
cost (*settled*); a failed request releases it. The check and the reservation are one atomic
step (the event loop here; one Lua script in ``router.limits.redis_budgets``), so fifty
requests racing for the last dollar cannot all pass the check before any is recorded — the bug
of checking spend before recording it. A reservation whose request died (a crashed replica)
expires after ``reservation_ttl_s`` and stops holding money.

Periods: ``day`` and ``month`` (UTC calendar; the spend starts from zero in the next one) or
``total``. Settling reports the alert thresholds (50%, 80%, 100% by default) it crossed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

Period = Literal["day", "month", "total"]
THRESHOLDS = (0.5, 0.8, 1.0)


def period_key(period: Period, now: float) -> str:
    """The calendar period ``now`` falls in: ``2026-12-05``, ``2026-12`` or ``total``."""
    if period == "total":
        return "total"
    day = datetime.fromtimestamp(now, UTC)
    return day.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``limit_usd`` spent by ``bucket`` (``org:acme``, ``key:...``) per ``period``."""

    bucket: str
    period: Period
    limit_usd: float


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation: what ``settle`` or ``release`` needs (the period keys are those of the
    moment it was made, so a request that straddles midnight settles where it reserved)."""

    request_id: str
    budgets: tuple[Budget, ...]
    periods: tuple[str, ...]
    amount_usd: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """A reservation's outcome: the hold, or which budget refused and where it stood."""

    allowed: bool
    hold: Hold | None = None
    refused_by: int | None = None
    spent_usd: float = 0.0
    reserved_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Crossing:
    """A budget's spend passed ``threshold`` (a share of its limit) on settling."""

    budget: Budget
    period: str
    threshold: float
    spent_usd: float


@dataclass(slots=True)
class _Ledger:
    spent: float = 0.0
    reserved: float = 0.0


@dataclass(slots=True)
class _Reservation:
    slots: list[tuple[Budget, str]]
    amount: float
    expires: float
    ledgers: list[_Ledger] = field(default_factory=list)


class MemoryBudgets:
    """Budgets in this process. ``spent`` seeds what was spent before (from the store), keyed
    by ``(bucket, period key)``."""

    def __init__(self, *, reservation_ttl_s: float = 600.0,
                 clock: Callable[[], float] = time.time,
                 spent: dict[tuple[str, str], float] | None = None,
                 thresholds: Sequence[float] = THRESHOLDS):
        self._ttl, self._clock, self._thresholds = reservation_ttl_s, clock, tuple(thresholds)
        self._ledgers: dict[tuple[str, str], _Ledger] = {
            k: _Ledger(spent=v) for k, v in (spent or {}).items()}
        self._reservations: dict[str, _Reservation] = {}

    def _expire(self, now: float) -> None:
        dead = [rid for rid, r in self._reservations.items() if r.expires <= now]
        for rid in dead:
            self._drop(self._reservations.pop(rid))

    @staticmethod
    def _drop(r: _Reservation) -> None:
        for ledger in r.ledgers:
            ledger.reserved = max(ledger.reserved - r.amount, 0.0)

    async def reserve(self, request_id: str, budgets: Sequence[Budget],
                      amount_usd: float) -> Verdict:
        """Hold ``amount_usd`` against every budget, or against none."""
        now = self._clock()
        self._expire(now)
        slots = [(b, period_key(b.period, now)) for b in budgets]
        ledgers = [self._ledgers.setdefault((b.bucket, p), _Ledger()) for b, p in slots]
        for i, ((b, _), ledger) in enumerate(zip(slots, ledgers, strict=True)):
            if ledger.spent + ledger.reserved + amount_usd > b.limit_usd + 1e-12:
                return Verdict(False, None, i, ledger.spent, ledger.reserved)
        for ledger in ledgers:
            ledger.reserved += amount_usd
        self._reservations[request_id] = _Reservation(slots, amount_usd, now + self._ttl,
                                                      ledgers)
        return Verdict(True, Hold(request_id, tuple(budgets), tuple(p for _, p in slots),
                                  amount_usd))

    async def settle(self, hold: Hold, cost_usd: float) -> list[Crossing]:
        """Replace the reservation by what the request really cost; the thresholds this
        crossed. The cost is recorded even if the reservation had expired meanwhile."""
        r = self._reservations.pop(hold.request_id, None)
        if r is not None:
            self._drop(r)
        out = []
        for budget, period in zip(hold.budgets, hold.periods, strict=True):
            ledger = self._ledgers.setdefault((budget.bucket, period), _Ledger())
            before = ledger.spent
            ledger.spent += cost_usd
            out += [Crossing(budget, period, t, ledger.spent) for t in self._thresholds
                    if before < t * budget.limit_usd <= ledger.spent]
        return out

    async def release(self, hold: Hold) -> None:
        """Drop the reservation (the request failed before costing anything)."""
        r = self._reservations.pop(hold.request_id, None)
        if r is not None:
            self._drop(r)

    def seed(self, spent: dict[tuple[str, str], float]) -> None:
        """Start from what was spent before (``(bucket, period key)`` -> USD), e.g. read back
        from the store after a restart."""
        for key, usd in spent.items():
            self._ledgers.setdefault(key, _Ledger()).spent = usd

    async def standing(self, budget: Budget) -> tuple[float, float]:
        """``(spent, reserved)`` of ``budget`` in the current period."""
        now = self._clock()
        self._expire(now)
        ledger = self._ledgers.get((budget.bucket, period_key(budget.period, now)), _Ledger())
        return ledger.spent, ledger.reserved
