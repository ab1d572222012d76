"""Retry policy: what is retried, how long to wait, and when a request has run out of time.

Retried: failures another attempt may survive (``ProviderError.retryable``: 429, 5xx,
unreachable, timeouts). Not retried: a request the upstream refused as invalid, which every
deployment would refuse too. The wait before calling a deployment again is full jitter,
``uniform(0, min(cap, base * 2**retry))`` (AWS's "Exponential Backoff and Jitter": clients
that failed together spread out instead of returning in step). A Retry-After is honoured by
the circuit breaker (the deployment is not called before it); ``Deadline`` bounds every
attempt and wait of one request.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from router.dispatch_config import RetryConfig
from router.providers import ProviderError


@dataclass(slots=True)
class RetryPolicy:
    config: RetryConfig
    rng: random.Random

    def backoff_s(self, retry: int) -> float:
        """Seconds to wait before the ``retry``-th call of a deployment already tried (0 for
        the first retry's base), full jitter."""
        cfg = self.config
        cap = min(cfg.backoff_max_ms, cfg.backoff_base_ms * 2.0 ** min(retry, 62))
        return self.rng.uniform(0.0, cap) / 1e3 if cap > 0 else 0.0

    @staticmethod
    def retryable(exc: ProviderError) -> bool:
        return exc.retryable


@dataclass(slots=True)
class Deadline:
    """When one request's attempts must have ended."""

    at: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        return self.at - self.clock()
