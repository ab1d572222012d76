"""The weighted sliding windows of ``router.limits.windows`` in Redis, for several replicas.

One Lua script admits a request against all of its charges: Redis runs a script alone, so two
replicas can never both see room for the last slot. Time is Redis's own (``TIME``), so replicas
whose clocks differ still share one window. Per bucket and window: a sorted set of request ids
by admission time, a hash of their weights and a running total, all expiring a little after
the window so idle buckets cost nothing. One script touches every bucket of a request, so
the buckets must live on one Redis server (a primary, with replicas for failover), not spread
over a cluster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from router.limits.windows import Admission, Charge

# KEYS: per charge, the sorted set, the weights hash, the total (3 keys each).
# ARGV: request id, then per charge: window (ms), limit, units.
# Returns {1, remaining..., reset_ms...} or {0, refused index (1-based), retry_ms (-1: never),
# remaining..., reset_ms...}; numbers as strings (Lua floats do not survive the reply).
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid = ARGV[1]
local n = #KEYS / 3
local totals, windows, limits, units = {}, {}, {}, {}
for i = 1, n do
  local z, w, s = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  windows[i] = tonumber(ARGV[3*i-1])
  limits[i] = tonumber(ARGV[3*i])
  units[i] = tonumber(ARGV[3*i+1])
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', now - windows[i])
  local total = tonumber(redis.call('GET', s) or '0')
  if #old > 0 then
    for _, m in ipairs(old) do total = total - tonumber(redis.call('HGET', w, m) or '0') end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now - windows[i])
    for _, m in ipairs(old) do redis.call('HDEL', w, m) end
  end
  if redis.call('ZCARD', z) == 0 then total = 0 end
  redis.call('SET', s, tostring(total), 'PX', windows[i] + 1000)
  totals[i] = total
end
local function reset(i)
  local first = redis.call('ZRANGE', KEYS[3*i-2], 0, 0, 'WITHSCORES')
  if #first == 0 then return 0 end
  return math.max(tonumber(first[2]) + windows[i] - now, 0)
end
local function report(head)
  for i = 1, n do table.insert(head, tostring(math.max(limits[i] - totals[i], 0))) end
  for i = 1, n do table.insert(head, tostring(reset(i))) end
  return head
end
for i = 1, n do
  if totals[i] + units[i] > limits[i] + 1e-9 then
    local retry = -1
    if units[i] <= limits[i] then
      local need, freed = totals[i] + units[i] - limits[i], 0
      local entries = redis.call('ZRANGE', KEYS[3*i-2], 0, -1, 'WITHSCORES')
      retry = windows[i]
      for j = 1, #entries, 2 do
        freed = freed + tonumber(redis.call('HGET', KEYS[3*i-1], entries[j]) or '0')
        if freed >= need - 1e-9 then
          retry = math.max(tonumber(entries[j+1]) + windows[i] - now, 0)
          break
        end
      end
    end
    return report({'0', tostring(i), tostring(retry)})
  end
end
for i = 1, n do
  local z, w, s = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  redis.call('ZADD', z, now, rid)
  redis.call('HINCRBYFLOAT', w, rid, units[i])
  totals[i] = totals[i] + units[i]
  redis.call('SET', s, tostring(totals[i]), 'PX', windows[i] + 1000)
  redis.call('PEXPIRE', z, windows[i] + 1000)
  redis.call('PEXPIRE', w, windows[i] + 1000)
end
return report({'1'})
"""

# KEYS: the weights hash, the total. ARGV: request id, new units.
_ADJUST = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('INCRBYFLOAT', KEYS[2], tonumber(ARGV[2]) - tonumber(old))
end
return 1
"""


class RedisWindows:
    """Weighted sliding windows shared through ``client`` (a ``redis.asyncio.Redis``)."""

    def __init__(self, client: Any, prefix: str = "contextforge:"):
        self._client, self._prefix = client, prefix + "rl:"
        self._admit = client.register_script(_ADMIT)
        self._adjust = client.register_script(_ADJUST)

    def _keys(self, c: Charge) -> list[str]:
        base = f"{self._prefix}{{{c.bucket}:{int(c.window_s * 1000)}}}"
        return [base + ":z", base + ":w", base + ":s"]

    async def admit(self, request_id: str, charges: Sequence[Charge]) -> Admission:
        """Admit ``request_id`` against every charge, or against none (one atomic script)."""
        keys: list[str] = []
        args: list[Any] = [request_id]
        for c in charges:
            keys += self._keys(c)
            args += [int(c.window_s * 1000), repr(float(c.limit)), repr(float(c.units))]
        reply = [x.decode() if isinstance(x, bytes) else str(x)
                 for x in await self._admit(keys=keys, args=args)]
        n = len(charges)
        if reply[0] == "1":
            values = [float(x) for x in reply[1:]]
            return Admission(True, tuple(values[:n]), tuple(v / 1000 for v in values[n:]))
        refused, retry = int(reply[1]) - 1, float(reply[2])
        values = [float(x) for x in reply[3:]]
        return Admission(False, tuple(values[:n]), tuple(v / 1000 for v in values[n:]),
                         refused_by=refused,
                         retry_after_s=math.inf if retry < 0 else retry / 1000)

    async def adjust(self, request_id: str, charge: Charge) -> None:
        """Set ``request_id``'s weight in ``charge``'s window to ``charge.units``."""
        _, weights, total = self._keys(charge)
        await self._adjust(keys=[weights, total], args=[request_id, repr(float(charge.units))])
