"""Caps on concurrent requests per bucket (a key, a user, an organisation).

A request takes a slot in every bucket it is capped by, or in none, and gives them back when
it ends. In Redis a slot is a lease with an expiry (a sorted set scored by it), so the slots of
a replica that died mid-request free themselves after ``lease_s``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

Cap = tuple[str, int]  # (bucket, most concurrent requests)


class MemoryConcurrency:
    """Slots in this process."""

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}

    async def acquire(self, request_id: str, caps: Sequence[Cap], lease_s: float = 0.0
                      ) -> int | None:
        """Take a slot in every capped bucket; None when taken, else the index of the cap
        that is full (nothing taken)."""
        for i, (bucket, cap) in enumerate(caps):
            if len(self._held.get(bucket, ())) >= cap:
                return i
        for bucket, _ in caps:
            self._held.setdefault(bucket, set()).add(request_id)
        return None

    async def release(self, request_id: str, caps: Sequence[Cap]) -> None:
        for bucket, _ in caps:
            held = self._held.get(bucket)
            if held is not None:
                held.discard(request_id)
                if not held:
                    del self._held[bucket]

    async def in_use(self, bucket: str) -> int:
        return len(self._held.get(bucket, ()))


_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid, lease = ARGV[1], tonumber(ARGV[2])
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[2 + i]) then return i end
end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, rid)
  redis.call('PEXPIRE', KEYS[i], lease + 1000)
end
return 0
"""


class RedisConcurrency:
    """Slots as expiring leases in Redis, shared by replicas."""

    def __init__(self, client: Any, prefix: str = "contextforge:"):
        self._client, self._prefix = client, prefix + "conc:"
        self._acquire = client.register_script(_ACQUIRE)

    async def acquire(self, request_id: str, caps: Sequence[Cap], lease_s: float = 600.0
                      ) -> int | None:
        """As ``MemoryConcurrency.acquire``; a slot not released lapses after ``lease_s``."""
        if not caps:
            return None
        full = await self._acquire(keys=[self._prefix + b for b, _ in caps],
                                   args=[request_id, int(lease_s * 1000), *(c for _, c in caps)])
        return None if int(full) == 0 else int(full) - 1

    async def release(self, request_id: str, caps: Sequence[Cap]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for bucket, _ in caps:
                pipe.zrem(self._prefix + bucket, request_id)
            await pipe.execute()

    async def in_use(self, bucket: str) -> int:
        now_ms = int(time.time() * 1000)
        return int(await self._client.zcount(self._prefix + bucket, now_ms, "+inf"))
