"""A deployment's health as real traffic (and, when on, active probes) shows it.

``CircuitBreaker``: whether calls may go through. It opens on ``consecutive_failures`` in a
row, or on a failure rate of at least ``failure_rate`` over the last ``window_s`` once
``min_requests`` calls fell in it; open, it skips its deployment for ``cooldown_s``, then lets
trial calls through one at a time (half-open): a failure reopens it, ``half_open_calls``
successes in a row close it. (One lucky success is no evidence against a deployment failing
half its calls; a call that started before the breaker opened and succeeds late is none
either, and leaves an open breaker open.) A 429's Retry-After
cools it for as long as the upstream asked, whatever the counts say. Outcomes the request
itself caused (the upstream refused it as invalid) are recorded as ``answered``: the
deployment is alive, so they close a half-open breaker and never count as failures.

``Health``: what balancing reads: calls in flight, latency averages (EWMA of whole answers and
of streams' first chunks) and the last minute's requests and tokens (against RPM/TPM quotas);
and what hedging reads: the recent timings' percentiles (``Recent``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from router.dispatch_config import BreakerConfig

State = Literal["healthy", "degraded", "open"]
_USAGE_WINDOW_S = 60.0  # RPM and TPM are per minute


@dataclass(slots=True)
class Window:
    """Two running sums over the last ``span_s`` seconds, kept in ``slots`` buckets so memory
    and time stay bounded whatever the traffic (a bucket leaves whole: the span is exact to
    ``span_s / slots``)."""

    span_s: float
    slots: int = 20
    a: float = 0.0
    b: float = 0.0
    _buckets: deque[list[float]] = field(default_factory=deque)  # [start, a, b], oldest first

    def add(self, now: float, a: float = 0.0, b: float = 0.0) -> None:
        width = self.span_s / self.slots
        start = now - now % width
        buckets = self._buckets
        if buckets and buckets[-1][0] == start:
            last = buckets[-1]
            last[1] += a
            last[2] += b
        else:
            buckets.append([start, a, b])
        self.a += a
        self.b += b
        self.trim(now)

    def trim(self, now: float) -> None:
        horizon = now - self.span_s - self.span_s / self.slots
        buckets = self._buckets
        while buckets and buckets[0][0] <= horizon:
            _, a, b = buckets.popleft()
            self.a -= a
            self.b -= b
        if not buckets:  # no float drift left behind
            self.a = self.b = 0.0


@dataclass(slots=True)
class CircuitBreaker:
    config: BreakerConfig
    clock: Callable[[], float] = time.monotonic
    failures: int = 0  # consecutive
    open_until: float = 0.0
    probing: bool = False
    trials: int = 0  # successful calls since it went half-open
    # calls (a) and failures (b) of the last window_s
    _window: Window = field(init=False)

    def __post_init__(self) -> None:
        self._window = Window(self.config.window_s)

    @property
    def state(self) -> str:
        """``closed``, ``open`` (skipped) or ``half-open`` (one probe call may go through)."""
        if self.open_until == 0.0:
            return "closed"
        return "open" if self.clock() < self.open_until else "half-open"

    def allows(self) -> bool:
        """Whether a call may go through now (one probe at a time when half-open)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        """A call answered."""
        self._note(False)
        self.failures = 0
        state = self.state
        if state == "open":  # a call from before it opened: the trials decide
            return
        if state == "half-open":
            self.trials += 1
            self.probing = False
            if self.trials < self.config.half_open_calls:
                return
        self.open_until, self.probing, self.trials = 0.0, False, 0

    answered = success  # the upstream refused the request as invalid: alive all the same

    def probed(self) -> None:
        """An active health probe answered: a trial call, even before the cooldown ended
        (probes are the faster way back after an outage)."""
        if self.state == "open":
            self.open_until = self.clock()  # half-open from now on
        self.success()

    def failure(self, cool_for: float | None = None) -> None:
        """A call failed in a way the deployment is to blame for (5xx, 429, timeout,
        unreachable); ``cool_for``: the upstream's Retry-After."""
        now = self.clock()
        self._note(True, now)
        self.failures += 1
        self.probing = False
        self.trials = 0
        if cool_for is not None:
            self.open_until = max(self.open_until, now + cool_for)
        elif (self.open_until or self.failures >= self.config.consecutive_failures
              or self._rate_tripped()):
            self.open_until = now + self.config.cooldown_s

    def error_rate(self) -> tuple[float, int]:
        """The share of failed calls in the last ``window_s``, and how many calls that is."""
        window = self._window
        window.trim(self.clock())
        n = round(window.a)
        return (window.b / n if n else 0.0), n

    def _rate_tripped(self) -> bool:
        rate, n = self.error_rate()
        return n >= self.config.min_requests and rate >= self.config.failure_rate

    def _note(self, failed: bool, now: float | None = None) -> None:
        self._window.add(self.clock() if now is None else now, 1.0, float(failed))


@dataclass(slots=True)
class Recent:
    """The last ``size`` timings (ms) and their percentiles. The sorted copy is redone only
    after ``size // 16`` new samples: a hedge asks on every call, and a percentile of
    hundreds of samples barely moves with one more."""

    size: int = 256
    _samples: deque[float] = field(default_factory=deque)
    _sorted: list[float] = field(default_factory=list)
    _stale: int = 0

    def add(self, ms: float) -> None:
        if len(self._samples) == self.size:
            self._samples.popleft()
        self._samples.append(ms)
        self._stale += 1

    def __len__(self) -> int:
        return len(self._samples)

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (nearest rank) of the samples; ``None`` without any."""
        if not self._samples:
            return None
        if self._stale > max(1, self.size // 16) or not self._sorted:
            self._sorted, self._stale = sorted(self._samples), 0
        ranked = self._sorted
        return ranked[min(len(ranked) - 1, max(0, math.ceil(q / 100 * len(ranked)) - 1))]


@dataclass(slots=True)
class Health:
    """Load and latency of one deployment (see the module docstring)."""

    alpha: float = 0.2  # weight of the newest sample in the averages
    clock: Callable[[], float] = time.monotonic
    inflight: int = 0
    latency_ms: float | None = None  # EWMA of whole answers (non-streaming calls)
    ttft_ms: float | None = None  # EWMA of streams' time to first chunk
    # the last minute's calls (a) and tokens (b, counted when an answer says them)
    _usage: Window = field(default_factory=lambda: Window(_USAGE_WINDOW_S, slots=60))
    # recent timings of whole answers and of streams' first chunks (hedging's percentiles)
    recent_latency: Recent = field(default_factory=Recent)
    recent_ttft: Recent = field(default_factory=Recent)

    def latency(self, ms: float) -> None:
        self.latency_ms = ms if self.latency_ms is None else (
            self.latency_ms + self.alpha * (ms - self.latency_ms))
        self.recent_latency.add(ms)

    def first_token(self, ms: float) -> None:
        self.ttft_ms = ms if self.ttft_ms is None else (
            self.ttft_ms + self.alpha * (ms - self.ttft_ms))
        self.recent_ttft.add(ms)

    def late_after_ms(self, stream: bool, percentile: float, min_samples: int) -> float | None:
        """When a call's first token (a whole answer, unstreamed) is late: the ``percentile``
        of the recent ones; ``None`` with fewer than ``min_samples`` of them."""
        recent = self.recent_ttft if stream else self.recent_latency
        return recent.percentile(percentile) if len(recent) >= min_samples else None

    def started(self) -> None:
        """A call went out (counts against the deployment's RPM)."""
        self._usage.add(self.clock(), 1.0)

    def used(self, tokens: int) -> None:
        """An answer's tokens (counted against TPM from now, for a minute)."""
        if tokens > 0:
            self._usage.add(self.clock(), 0.0, float(tokens))

    def minute(self) -> tuple[int, int]:
        """Requests and tokens of the last minute."""
        usage = self._usage
        usage.trim(self.clock())
        return round(usage.a), round(usage.b)


def state_of(breaker: CircuitBreaker) -> State:
    """``open`` while the breaker skips the deployment (half-open included: it is being
    tested), ``degraded`` when closed but failing at ``degraded_rate`` or more (or its last
    call failed), else ``healthy``."""
    if breaker.state != "closed":
        return "open"
    rate, n = breaker.error_rate()
    if breaker.failures or (n and rate >= breaker.config.degraded_rate):
        return "degraded"
    return "healthy"
