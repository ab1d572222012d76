"""The budgets of ``router.limits.budgets`` in Redis, for several replicas.

Per budget and period: a hash of ``spent`` and ``reserved``, a sorted set of live
reservations by expiry and a hash of their amounts. Reserving is one Lua script over every
budget of the request (expired reservations dropped, then all checked, then all held), settling
another; Redis runs each alone, so replicas cannot both take the last dollar. Redis is then the
record of spend: run it with persistence (AOF) so a restart keeps the month's spend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from router.limits.budgets import THRESHOLDS, Budget, Crossing, Hold, Verdict, period_key

_CLEAN = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function clean(ledger, res, amt, now)
  local dead = redis.call('ZRANGEBYSCORE', res, '-inf', now)
  for _, rid in ipairs(dead) do
    local a = tonumber(redis.call('HGET', amt, rid) or '0')
    redis.call('HINCRBYFLOAT', ledger, 'reserved', -a)
    redis.call('HDEL', amt, rid)
  end
  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', res, '-inf', now) end
end
"""

# KEYS: per budget: ledger, reservations, amounts. ARGV: rid, amount, ttl_ms, limits...
_RESERVE = _CLEAN + """
local now = now_ms()
local rid, amount, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS / 3
for i = 1, n do clean(KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i], now) end
for i = 1, n do
  local spent = tonumber(redis.call('HGET', KEYS[3*i-2], 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', KEYS[3*i-2], 'reserved') or '0')
  if spent + reserved + amount > tonumber(ARGV[3+i]) + 1e-12 then
    return {tostring(i), tostring(spent), tostring(reserved)}
  end
end
for i = 1, n do
  redis.call('HINCRBYFLOAT', KEYS[3*i-2], 'reserved', amount)
  redis.call('ZADD', KEYS[3*i-1], now + ttl, rid)
  redis.call('HSET', KEYS[3*i], rid, tostring(amount))
end
return {'0'}
"""

# KEYS: as for reserve. ARGV: rid, cost (-1: release without cost). Returns spent before and
# after per budget.
_SETTLE = _CLEAN + """
local now = now_ms()
local rid, cost = ARGV[1], tonumber(ARGV[2])
local n = #KEYS / 3
local out = {}
for i = 1, n do
  local ledger, res, amt = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local a = redis.call('HGET', amt, rid)
  if a then
    redis.call('HINCRBYFLOAT', ledger, 'reserved', -tonumber(a))
    redis.call('HDEL', amt, rid)
    redis.call('ZREM', res, rid)
  end
  local before = tonumber(redis.call('HGET', ledger, 'spent') or '0')
  local after = before
  if cost >= 0 then after = tonumber(redis.call('HINCRBYFLOAT', ledger, 'spent', cost)) end
  table.insert(out, tostring(before))
  table.insert(out, tostring(after))
  clean(ledger, res, amt, now)
end
return out
"""


class RedisBudgets:
    """Budgets shared through ``client`` (a ``redis.asyncio.Redis``)."""

    def __init__(self, client: Any, prefix: str = "contextforge:", *,
                 reservation_ttl_s: float = 600.0, thresholds: Sequence[float] = THRESHOLDS):
        self._client, self._prefix = client, prefix + "budget:"
        self._ttl_ms, self._thresholds = int(reservation_ttl_s * 1000), tuple(thresholds)
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def _keys(self, budget: Budget, period: str) -> list[str]:
        base = f"{self._prefix}{budget.bucket}:{period}"
        return [base, base + ":res", base + ":amt"]

    async def reserve(self, request_id: str, budgets: Sequence[Budget],
                      amount_usd: float) -> Verdict:
        """Hold ``amount_usd`` against every budget, or against none (one atomic script)."""
        import time

        now = time.time()
        periods = tuple(period_key(b.period, now) for b in budgets)
        keys = [k for b, p in zip(budgets, periods, strict=True) for k in self._keys(b, p)]
        args = [request_id, repr(float(amount_usd)), self._ttl_ms,
                *(repr(float(b.limit_usd)) for b in budgets)]
        reply = [x.decode() if isinstance(x, bytes) else str(x)
                 for x in await self._reserve(keys=keys, args=args)]
        if reply[0] == "0":
            return Verdict(True, Hold(request_id, tuple(budgets), periods, amount_usd))
        return Verdict(False, None, int(reply[0]) - 1, float(reply[1]), float(reply[2]))

    async def _finish(self, hold: Hold, cost: float) -> list[float]:
        keys = [k for b, p in zip(hold.budgets, hold.periods, strict=True)
                for k in self._keys(b, p)]
        reply = await self._settle(keys=keys, args=[hold.request_id, repr(float(cost))])
        return [float(x) for x in reply]

    async def settle(self, hold: Hold, cost_usd: float) -> list[Crossing]:
        """Replace the reservation by the real cost; the alert thresholds it crossed."""
        values = await self._finish(hold, cost_usd)
        out = []
        for i, (budget, period) in enumerate(zip(hold.budgets, hold.periods, strict=True)):
            before, after = values[2 * i], values[2 * i + 1]
            out += [Crossing(budget, period, t, after) for t in self._thresholds
                    if before < t * budget.limit_usd <= after]
        return out

    async def release(self, hold: Hold) -> None:
        """Drop the reservation (the request failed before costing anything)."""
        await self._finish(hold, -1.0)

    async def standing(self, budget: Budget) -> tuple[float, float]:
        """``(spent, reserved)`` of ``budget`` in the current period."""
        import time

        ledger = self._keys(budget, period_key(budget.period, time.time()))[0]
        spent, reserved = await self._client.hmget(ledger, ["spent", "reserved"])
        return float(spent or 0), float(reserved or 0)
