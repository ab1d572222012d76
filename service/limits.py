"""The gateway's rate limits, concurrency caps and budgets: the config's rules over a backend.

One object per gateway (``Limits.build``): the sliding windows, the concurrency slots and the
budget ledger, in this process (``limits.backend: memory``) or in Redis (``redis``: shared by
replicas, exact across them). The stages call it — the guard before the cache (requests,
bursts, concurrency of the caller's key, user, project and organisation), the reserve stage
after routing (the model's limits, tokens, and the budget reservation) — and settle through it
when a request ends.

When Redis does not answer, ``limits.on_backend_error`` decides: ``closed`` (the default)
refuses with a 503 — a limit never silently lapses — and ``open`` admits under this process's
own windows and ledger (one replica's view, so up to N times the limit across N replicas),
with a log line and ``contextforge_limits_backend_errors`` either way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.exceptions import RedisError

from router.config import Config, LimitsConfig
from router.governance.spend import SpendStore
from router.limits.budgets import Budget, Crossing, Hold, MemoryBudgets, Verdict, period_key
from router.limits.concurrency import Cap, MemoryConcurrency
from router.limits.windows import Admission, Charge, MemoryWindows
from service.errors import APIError

log = logging.getLogger("contextforge.limits")
T = TypeVar("T")


class RateLimited(APIError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


class BudgetExhausted(APIError):
    status, type, code = 429, "insufficient_quota", "budget_exceeded"


class LimiterUnavailable(APIError):
    status, type, code = 503, "server_error", "limits_unavailable"


class Limits:
    """The backends and the rules; ``None`` from ``build`` when there are no rules."""

    def __init__(self, config: LimitsConfig, windows: Any, slots: Any, budgets: Any, *,
                 client: Any = None, on_error: Callable[[str], None] | None = None,
                 alert: Callable[[Crossing], Awaitable[None]] | None = None):
        # ``client``: the Redis client the backends share (closed with ``close``); None for
        # the in-process backends.
        self.config, self.shared, self._client = config, client is not None, client
        self.windows, self.slots, self.budgets = windows, slots, budgets
        # This process's own: what ``on_backend_error: open`` falls back to.
        self._local = (MemoryWindows(), MemoryConcurrency(),
                       MemoryBudgets(reservation_ttl_s=config.reservation_ttl_s))
        self._on_error, self._alert = on_error, alert
        self._logged_at = -1e18
        self._store: SpendStore | None = None  # where in-process spend is kept (``persist``)

    async def persist(self, store: SpendStore) -> None:
        """Keep the in-process budgets' settled spend in ``store`` and start from what it holds
        (a restart keeps this period's spend). Nothing to do with Redis, which keeps it."""
        if self.shared or not self.config.budgets:
            return
        now = time.time()
        periods = [period_key(p, now) for p in ("day", "month", "total")]
        self.budgets.seed(await asyncio.to_thread(store.load, periods))
        self._store = store

    async def close(self) -> None:
        """Close the Redis connections (at shutdown, after the drain)."""
        if self._client is not None:
            await self._client.aclose()

    @classmethod
    def build(cls, config: Config, *, on_error: Callable[[str], None] | None = None,
              alert: Callable[[Crossing], Awaitable[None]] | None = None) -> Limits | None:
        """The limits ``config`` asks for (nothing connects until first use)."""
        c = config.limits
        if not c.rules and not c.budgets:
            return None
        if c.backend == "redis":
            from router.limits.concurrency import RedisConcurrency
            from router.limits.redis_budgets import RedisBudgets
            from router.limits.redis_windows import RedisWindows
            from router.redis_client import connect

            client, prefix = connect(config.redis), config.redis.prefix
            return cls(c, RedisWindows(client, prefix), RedisConcurrency(client, prefix),
                       RedisBudgets(client, prefix, reservation_ttl_s=c.reservation_ttl_s),
                       client=client, on_error=on_error, alert=alert)
        return cls(c, MemoryWindows(), MemoryConcurrency(),
                   MemoryBudgets(reservation_ttl_s=c.reservation_ttl_s),
                   on_error=on_error, alert=alert)

    async def _call(self, op: str, shared: Callable[[], Awaitable[T]],
                    local: Callable[[], Awaitable[T]]) -> T:
        if not self.shared:
            return await shared()
        try:
            return await shared()
        except (RedisError, OSError, TimeoutError) as exc:
            failure = exc
        if self._on_error is not None:
            self._on_error(op)
        now = time.monotonic()
        if now - self._logged_at > 10:
            self._logged_at = now
            log.error("limits: Redis did not answer (%s: %s); %s", op, failure,
                      "refusing requests (on_backend_error: closed)"
                      if self.config.on_backend_error == "closed"
                      else "admitting under this replica's own limits (on_backend_error: open)")
        if self.config.on_backend_error == "closed":
            raise LimiterUnavailable("rate limits and budgets are unavailable (their store "
                                     "does not answer); retry shortly") from None
        return await local()

    async def admit(self, request_id: str, charges: Sequence[Charge]) -> Admission:
        """Admit against every window or refuse (``RateLimited`` with its retry time)."""
        adm = await self._call("admit", lambda: self.windows.admit(request_id, charges),
                               lambda: self._local[0].admit(request_id, charges))
        if adm.allowed:
            return adm
        c = charges[adm.refused_by or 0]
        what = "tokens" if c.bucket.endswith(":tok") else "requests"
        per = "second" if c.window_s < 60 else "minute"
        scope = c.bucket.rsplit(":", 1)[0]
        if math.isinf(adm.retry_after_s):
            raise RateLimited(f"this request needs {c.units:.0f} {what}, more than the "
                              f"{c.limit:.0f} {what} per {per} {scope} may use; ask for "
                              "fewer (lower max_tokens)", code="request_too_large")
        err = RateLimited(f"rate limit of {c.limit:.0f} {what} per {per} reached for {scope}; "
                          f"retry in {adm.retry_after_s:.1f} s")
        err.retry_after = max(adm.retry_after_s, 0.001)
        raise err

    async def adjust(self, request_id: str, charge: Charge) -> None:
        await self._call("adjust", lambda: self.windows.adjust(request_id, charge),
                         lambda: self._local[0].adjust(request_id, charge))

    async def acquire(self, request_id: str, caps: Sequence[Cap], lease_s: float) -> None:
        """Take a concurrency slot in every capped bucket, or refuse."""
        full = await self._call("acquire",
                                lambda: self.slots.acquire(request_id, caps, lease_s),
                                lambda: self._local[1].acquire(request_id, caps, lease_s))
        if full is not None:
            bucket, cap = caps[full]
            err = RateLimited(f"{cap} requests are already in flight for "
                              f"{bucket.rsplit(':', 1)[0]}; retry when one ends")
            err.retry_after = 1.0
            raise err

    async def release(self, request_id: str, caps: Sequence[Cap]) -> None:
        await self._call("release", lambda: self.slots.release(request_id, caps),
                         lambda: self._local[1].release(request_id, caps))

    async def reserve(self, request_id: str, budgets: Sequence[Budget],
                      amount_usd: float) -> Hold:
        """Hold ``amount_usd`` against every budget, or refuse naming the one exhausted."""
        verdict: Verdict = await self._call(
            "reserve", lambda: self.budgets.reserve(request_id, budgets, amount_usd),
            lambda: self._local[2].reserve(request_id, budgets, amount_usd))
        if verdict.allowed and verdict.hold is not None:
            return verdict.hold
        b = budgets[verdict.refused_by or 0]
        left = max(b.limit_usd - verdict.spent_usd - verdict.reserved_usd, 0.0)
        raise BudgetExhausted(
            f"the {b.period} budget of ${b.limit_usd:.2f} for {b.bucket} cannot cover this "
            f"request (up to ${amount_usd:.4f}; ${left:.4f} left after ${verdict.spent_usd:.4f}"
            f" spent and ${verdict.reserved_usd:.4f} held by requests in flight)")

    async def settle(self, hold: Hold, cost_usd: float, failed: bool) -> None:
        """Record what the request cost (release the hold when it failed without cost) and
        send the alerts of the thresholds it crossed."""
        if failed and cost_usd == 0:
            await self._call("settle", lambda: self.budgets.release(hold),
                             lambda: self._local[2].release(hold))
            return
        crossed = await self._call("settle", lambda: self.budgets.settle(hold, cost_usd),
                                   lambda: self._local[2].settle(hold, cost_usd))
        if self._store is not None and cost_usd:
            for budget, period in zip(hold.budgets, hold.periods, strict=True):
                try:
                    await asyncio.to_thread(self._store.add, budget.bucket, period, cost_usd)
                except Exception:  # the ledger in memory holds; a restart would forget it
                    log.exception("limits: could not record spend of %s", budget.bucket)
        for crossing in crossed:
            log.warning("budget %s (%s %s, $%.2f): %.0f%% reached ($%.4f spent)",
                        crossing.budget.bucket, crossing.budget.period, crossing.period,
                        crossing.budget.limit_usd, crossing.threshold * 100,
                        crossing.spent_usd)
            if self._alert is not None:
                await self._alert(crossing)
