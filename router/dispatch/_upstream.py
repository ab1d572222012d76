"""One deployment as dispatch holds it: its adapter, its breaker and health, its timeouts."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from router.dispatch._health import CircuitBreaker, Health
from router.dispatch_config import DispatchConfig
from router.providers import (
    Deployment,
    Provider,
    ProviderError,
    Timeouts,
    UpstreamError,
)
from router.secrets import Scrubber, deployment_secrets, mask_url

log = logging.getLogger("contextforge.dispatch")


@dataclass(slots=True)
class Upstream:
    """One deployment of a model, with its adapter and health.

    ``timeout_s`` is the fallback of every phase ``timeouts`` leaves unset (the deployment's
    ``timeout_s``, else ``server.upstream_timeout_s``)."""

    label: str  # what logs and metrics name it by: never a key
    deployment: Deployment
    provider: Provider
    breaker: CircuitBreaker
    timeout_s: float
    timeouts: Timeouts = field(default_factory=Timeouts)
    health: Health = field(default_factory=Health)
    price: float = 0.0  # input + output USD per million tokens (``lowest_cost``)
    calls: int = field(default=0)
    scrub: Scrubber = field(default_factory=lambda: Scrubber(()))
    inv_weight: float = 1.0  # 1 / weight, for the weighted order's sort key

    def __post_init__(self) -> None:
        self.inv_weight = 1.0 / self.deployment.weight

    @property
    def region(self) -> str:
        return self.deployment.residency

    def total_s(self) -> float:
        return self.timeouts.total_s or self.timeout_s

    def first_token_s(self) -> float:
        return self.timeouts.first_token_s or self.timeout_s

    def idle_s(self) -> float:
        return self.timeouts.stream_idle_s or self.timeout_s

    def unexpected(self, exc: Exception) -> ProviderError:
        """An ``UpstreamError`` for anything but a ``ProviderError`` an adapter raised (a bug,
        or the HTTP client refusing a request), logged with where it came from; the message
        is scrubbed of this deployment's secrets, and the client sees the type alone."""
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f" at {frame.filename}:{frame.lineno}" if frame else ""
        log.error("deployment %s raised %s%s: %s", self.label, type(exc).__name__, where,
                  self.scrub(str(exc)))
        return UpstreamError(f"{self.deployment.provider} adapter failed "
                             f"({type(exc).__name__})")

    def clean(self, exc: ProviderError) -> ProviderError:
        """``exc`` with this deployment's secrets masked in its message (it reaches clients
        and the log)."""
        if self.scrub and exc.args:
            exc.args = (self.scrub(str(exc.args[0])), *exc.args[1:])
        return exc


def deployment_label(d: Deployment, model: str) -> str:
    where = mask_url(d.endpoint) if d.endpoint else d.region or d.residency or "default"
    return f"{d.provider}:{d.upstream_model(model)}@{where}"


def upstream_for(d: Deployment, model: str, provider: Provider, dispatch: DispatchConfig,
                 timeout_s: float, *, price: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> Upstream:
    """A deployment's ``Upstream``: its label, secret scrubber, breaker and timeouts (its own
    over ``dispatch.timeouts``)."""
    return Upstream(deployment_label(d, model), d, provider,
                    CircuitBreaker(dispatch.breaker, clock),
                    d.timeout_s or timeout_s,
                    timeouts=d.timeouts.over(dispatch.timeouts),
                    health=Health(dispatch.latency_alpha, clock),
                    price=price,
                    scrub=Scrubber(deployment_secrets(d.api_key, d.api_key_env, d.headers,
                                                      d.endpoint)))
