"""The config's ``dispatch`` section: balancing strategy, retries, circuit breakers, timeouts,
active health probes, hedging and region requirements (decoded by ``router.config``; read by
``router.dispatch``).

Its own module so that ``router.dispatch`` and ``router.config`` both import it without a
cycle. The flat keys of earlier versions (``max_attempts``, ``backoff_ms``,
``failure_threshold``, ``cooldown_s``) are still read and moved into ``retry`` / ``breaker``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from router.providers import Timeouts

# How a model's deployments are ordered for a call (``router.dispatch._strategies``).
Strategy = Literal["weighted", "least_busy", "lowest_latency", "lowest_cost", "usage_based"]
STRATEGIES: tuple[str, ...] = Strategy.__args__  # type: ignore[attr-defined]

Region = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")]


class RetryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which calls are retried, how often and how long a request may take in all.

    Only failures another attempt may survive are retried (429, 5xx, connection errors,
    timeouts); a request the upstream refused as invalid goes straight back. Moving to another
    deployment is immediate; calling one already tried waits a full-jitter backoff,
    ``uniform(0, min(backoff_max_ms, backoff_base_ms * 2**retry))``, so clients that failed
    together do not come back together."""

    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3  # calls per request, in all
    backoff_base_ms: Annotated[float, msgspec.Meta(ge=0, le=60_000)] = 50.0
    backoff_max_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] = 2_000.0
    # Every attempt and wait of one request ends by then (per model: a route-level fallback to
    # another model starts its own).
    deadline_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 120.0
    # A deployment that answered 429 with Retry-After is not called again before then; the
    # request waits for it only when that is at most this long (else it fails over, or the
    # client gets the 429 and its Retry-After).
    max_wait_s: Annotated[float, msgspec.Meta(ge=0, le=3_600)] = 1.0


class BreakerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When a deployment's circuit opens: after ``consecutive_failures`` failures in a row, or
    when at least ``min_requests`` calls in the last ``window_s`` failed at ``failure_rate`` or
    more. Open, it is skipped for ``cooldown_s``; then trial calls go through one at a time
    (half-open): a failure reopens it, ``half_open_calls`` successes in a row close it. A
    request the upstream refused as invalid (400, 422, a content policy) is the request's
    fault and never counts against the deployment."""

    consecutive_failures: Annotated[int, msgspec.Meta(ge=1)] = 5
    failure_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    window_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    min_requests: Annotated[int, msgspec.Meta(ge=1)] = 20
    cooldown_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 30.0
    # Successes in a row that close a half-open breaker: one lucky call is no proof of health.
    half_open_calls: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    # A closed deployment shows as "degraded" (admin API, metrics) from this error rate on.
    degraded_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1


class ProbeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Active health checks: every ``interval_s`` each deployment is sent one tiny chat call
    (``max_tokens: 1``), whose outcome counts like real traffic's. Off by default: probes cost
    tokens, and passive health (real traffic's errors and latency) needs none."""

    enabled: bool = False
    interval_s: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 30.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    # Only deployments whose circuit is not closed (a faster way back after an outage);
    # false probes every deployment.
    only_unhealthy: bool = True
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "ping"


class HedgeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Hedged requests: when a call's first token is late — later than ``percentile`` of that
    deployment's recent times to first token (a whole answer's time, unstreamed), and at
    least ``min_delay_ms`` — a second call goes to another eligible deployment of the model
    (same region rules, breaker closed, not tried yet); the first to produce a first token
    answers and the other is cancelled, its cost (the prompt) added to the request's.

    ``max_share`` caps the hedged share of the requests a route (``routes[].hedge``, else
    this) sent in the last ``window_s``: a slow provider must not double the traffic. A
    deployment with fewer than ``min_samples`` recent timings is never the first call of a
    hedge (no percentile to trust yet). Off by default: a hedge may pay for a second prompt.
    """

    enabled: bool = False
    percentile: Annotated[float, msgspec.Meta(ge=50, le=99.9)] = 95.0
    min_delay_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] = 20.0
    max_share: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.1
    window_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    min_samples: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20


class FallbackResponse(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The answer a chat request gets when every deployment and every fallback model failed
    (instead of the 5xx): a normal completion or stream with this text, marked by the
    response header ``x-contextforge-fallback: static`` and the traffic log's error; never
    cached, never charged."""

    content: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]


class DispatchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Balancing, retries, failover, circuit breaking and timeouts (``dispatch``)."""

    # The default balancing strategy; a model (``models[].strategy``) or a route
    # (``routes[].strategy``, for the requests it routes) may set its own.
    strategy: Strategy = "weighted"
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    # Every deployment's, unless it sets its own (``deployments[].timeouts``). Unset: a
    # deployment's ``timeout_s``, else ``server.upstream_timeout_s`` (10 s for connect).
    timeouts: Timeouts = Timeouts()
    probes: ProbeConfig = ProbeConfig()
    hedge: HedgeConfig = HedgeConfig()  # a route may set its own (``routes[].hedge``)
    # Smoothing of the latency averages that ``lowest_latency`` reads (weight of a new call).
    latency_alpha: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.2
    # Routed requests only: when every deployment of the chosen model failed, how many other
    # candidates (next best by the route's policy) to try before answering with the error.
    fallback_models: Annotated[int, msgspec.Meta(ge=0, le=20)] = 1
    # An upstream refusing a request on its content policy (a 400): off, the client gets the
    # refusal; on, the request moves along its fallbacks (chain, then next-best) to a model
    # none of whose deployments is that provider's. A refusal never opens a breaker.
    content_policy_failover: bool = False
    # Answer with this when everything failed (a route may set its own); None: the error.
    fallback_response: FallbackResponse | None = None
    # Organisations whose requests may only reach deployments in these regions (each
    # deployment's ``residency``), e.g. ``{acme: [eu]}``.
    tenant_regions: dict[str, list[Region]] = {}
    # Before issue 16: read, moved into retry / breaker, and left None.
    max_attempts: int | None = None
    backoff_ms: float | None = None
    failure_threshold: int | None = None
    cooldown_s: float | None = None

    def __post_init__(self) -> None:
        legacy_retry = {k: v for k, v in (("max_attempts", self.max_attempts),
                                           ("backoff_base_ms", self.backoff_ms))
                        if v is not None}
        legacy_breaker = {k: v for k, v in (("consecutive_failures", self.failure_threshold),
                                             ("cooldown_s", self.cooldown_s)) if v is not None}
        if legacy_retry:
            _set(self, "retry", _merged(self.retry, legacy_retry))
        if legacy_breaker:
            _set(self, "breaker", _merged(self.breaker, legacy_breaker))
        for name in ("max_attempts", "backoff_ms", "failure_threshold", "cooldown_s"):
            _set(self, name, None)
        if self.retry.backoff_max_ms < self.retry.backoff_base_ms:
            raise ValueError("retry.backoff_max_ms must be >= retry.backoff_base_ms")


_LEGACY = {"backoff_base_ms": "backoff_ms", "consecutive_failures": "failure_threshold"}


def _merged(section: msgspec.Struct, legacy: dict[str, float]) -> msgspec.Struct:
    """``section`` with the legacy flat keys' values; a bad value names its flat key."""
    try:
        return msgspec.convert({**msgspec.structs.asdict(section), **legacy}, type(section))
    except msgspec.ValidationError as exc:
        msg, _, where = str(exc).partition(" - at `$.")
        key = where.rstrip("`")
        raise ValueError(f"{_LEGACY.get(key, key)}: {msg}") from None


def _set(struct: msgspec.Struct, name: str, value: object) -> None:
    # Decoding finished: the struct is frozen, and this is the one place it is normalised.
    msgspec.structs.force_setattr(struct, name, value)


def parse_regions(text: str) -> frozenset[str]:
    """``"eu, uk"`` -> ``{"eu", "uk"}`` (the ``x-contextforge-regions`` header); ``ValueError``
    naming a value that is not a region label."""
    out = set()
    for part in text.split(","):
        label = part.strip().lower()
        if not label:
            continue
        if len(label) > 64 or not all(c.isalnum() or c in "-_" for c in label):
            raise ValueError(f"{part.strip()[:64]!r} is not a region label (letters, digits, "
                             "'-' and '_')")
        out.add(label)
    if not out:
        raise ValueError("names no region")
    return frozenset(out)
