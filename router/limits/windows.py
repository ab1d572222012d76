"""Rate limits that hold exactly: weighted sliding windows.

A limit is "at most ``limit`` units in any ``window_s`` seconds" for one bucket (a key, a user,
an organisation, a model; units are requests or tokens). The limiter keeps, per bucket, the
admissions still inside the window with their weights; a request is admitted only when every
bucket it is charged to has room for it, and then it is charged to all of them at once — so a
request refused by one limit uses none of the others. A burst allowance is one more window
(e.g. at most 20 requests in any 1 s beside 100 in any 60 s).

Why not a token bucket or GCRA: both admit up to ``burst + rate`` in a window, so "100 a
minute" could admit 199 in some minute; the sliding log never admits more than the limit in
any window, which is the promise users read into a limit. It costs one entry per admission
while it is in the window: fine for per-minute limits.

Tokens are charged up front (input tokens plus the most the model may write) and corrected
when the answer's real count is known (``adjust``), so a long answer cannot slip through and
a short one does not waste the window.

``MemoryWindows`` is the in-process backend (one instance: every call runs on the event loop,
so each is atomic); ``router.limits.redis_windows`` holds the same algorithm as one Lua script
for several replicas.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Charge:
    """``units`` against at most ``limit`` in any ``window_s`` seconds of ``bucket``."""

    bucket: str
    window_s: float
    limit: float
    units: float


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict on one request. ``remaining`` and ``reset_s`` per charge, in order (for
    ``x-ratelimit-*`` headers); refused: which charge refused it and when to retry (``inf``
    when the request alone exceeds that limit: retrying cannot help)."""

    allowed: bool
    remaining: tuple[float, ...]
    reset_s: tuple[float, ...]
    refused_by: int | None = None
    retry_after_s: float = 0.0


@dataclass(slots=True)
class _Log:
    entries: deque[tuple[float, str]] = field(default_factory=deque)  # (time, request id)
    weights: dict[str, float] = field(default_factory=dict)
    total: float = 0.0

    def expire(self, before: float) -> None:
        while self.entries and self.entries[0][0] <= before:
            _, rid = self.entries.popleft()
            self.total -= self.weights.pop(rid, 0.0)
        if not self.entries:
            self.total = 0.0  # no float drift survives an empty window

    def retry_after(self, now: float, window_s: float, limit: float, units: float) -> float:
        """Seconds until enough of the window has expired for ``units`` more."""
        if units > limit:
            return math.inf
        need, freed = self.total + units - limit, 0.0
        for ts, rid in self.entries:
            freed += self.weights.get(rid, 0.0)
            if freed >= need - 1e-9:
                return max(ts + window_s - now, 0.0)
        return window_s

    def reset(self, now: float, window_s: float) -> float:
        """Seconds until the window has room for everything again (its oldest entry ends)."""
        return max(self.entries[0][0] + window_s - now, 0.0) if self.entries else 0.0


class MemoryWindows:
    """Weighted sliding windows in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._logs: dict[tuple[str, float], _Log] = {}

    async def admit(self, request_id: str, charges: Sequence[Charge]) -> Admission:
        """Admit ``request_id`` against every charge, or against none."""
        now = self._clock()
        logs = []
        for c in charges:
            log = self._logs.setdefault((c.bucket, c.window_s), _Log())
            log.expire(now - c.window_s)
            logs.append(log)
        for i, (c, log) in enumerate(zip(charges, logs, strict=True)):
            if log.total + c.units > c.limit + 1e-9:
                return Admission(
                    False, tuple(max(c.limit - lg.total, 0.0) for c, lg in zip(
                        charges, logs, strict=True)),
                    tuple(lg.reset(now, c.window_s) for c, lg in zip(charges, logs, strict=True)),
                    refused_by=i, retry_after_s=log.retry_after(now, c.window_s, c.limit,
                                                                c.units))
        for c, log in zip(charges, logs, strict=True):
            log.entries.append((now, request_id))
            log.weights[request_id] = log.weights.get(request_id, 0.0) + c.units
            log.total += c.units
        return Admission(True, tuple(c.limit - lg.total for c, lg in zip(charges, logs,
                                                                           strict=True)),
                         tuple(lg.reset(now, c.window_s) for c, lg in zip(charges, logs,
                                                                           strict=True)))

    async def adjust(self, request_id: str, charge: Charge) -> None:
        """Set ``request_id``'s weight in ``charge``'s window to ``charge.units`` (the real
        token count, known after the answer); nothing when it has left the window."""
        log = self._logs.get((charge.bucket, charge.window_s))
        if log is None or request_id not in log.weights:
            return
        log.total += charge.units - log.weights[request_id]
        log.weights[request_id] = charge.units

    def forget_idle(self) -> int:
        """Drop buckets whose windows are empty (bounded memory under many keys); how many."""
        now = self._clock()
        idle = []
        for (bucket, window), log in self._logs.items():
            log.expire(now - window)
            if not log.entries:
                idle.append((bucket, window))
        for k in idle:
            del self._logs[k]
        return len(idle)
