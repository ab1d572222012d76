"""Dispatch: pick a deployment of the chosen model, and fail over when it fails.

A model may be served by several deployments (regions, providers, keys). ``Dispatcher`` holds
one model's deployments and, per call:

1. keeps those the request may reach (``regions``: only deployments whose ``residency`` is
   among them, whatever fails later) and whose circuit breaker lets calls through, and orders
   them by the balancing strategy (``_strategies``: weighted, least busy, lowest latency,
   lowest cost, usage against RPM/TPM quotas) — this is the whole per-request decision;
2. calls them in that order, each attempt under its deployment's timeouts (connect, first
   chunk or whole answer) and the request's deadline, until one answers; a failure another
   deployment could survive (``ProviderError.retryable``: 5xx, 429, timeouts, unreachable)
   moves on, one it could not (the upstream refused the request as invalid) goes straight
   back to the client (``_retry``);
3. with fewer deployments than ``retry.max_attempts``, calls one again after a full-jitter
   backoff; a 429's ``Retry-After`` keeps that deployment out until then.

Every failed attempt is recorded once: the failure hook (metrics), the breaker, the health.
Streams fail over only until their first content (content-free chunks are held back until
then): after that the client has the answer's start and a switch would splice two answers; a
later failure counts in the deployment's breaker once, and a stream's success is its clean end.

Hedging (``_hedge``, off by default): when a call's first token is later than a percentile of
its deployment's recent ones, a second call goes to another eligible deployment and the first
to answer wins; the other is cancelled and its cost noted; a route caps its hedged share.

Health (``_health``) is passive by default — real traffic's errors and latency — and active
when ``dispatch.probes.enabled`` (``probe_forever``). The breaker opens on consecutive
failures or on a failure rate over a window; a request the upstream refused as invalid never
counts. When every deployment is open, a call fails fast with 503 and a Retry-After of the
soonest reopening: hammering a dead upstream only adds latency.

Module layout: ``_health`` (breaker, load and latency), ``_strategies`` (orderings),
``_retry`` (backoff, deadline), ``_hedge`` (hedging's budgets and record), ``_upstream`` (one
deployment), ``_stream`` (a started stream's rest), ``_dispatcher`` (the calls).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from router.config import Config, ModelEntry
from router.dispatch._dispatcher import (
    AttemptObserver,
    Dispatcher,
    FailureHook,
    NoDeploymentInRegion,
    Regions,
)
from router.dispatch._health import CircuitBreaker, Health, State, state_of
from router.dispatch._hedge import Hedge, HedgeBudget, HedgeBudgets, Waste
from router.dispatch._retry import Deadline, RetryPolicy
from router.dispatch._strategies import STRATEGIES
from router.dispatch._stream import carries_answer
from router.dispatch._upstream import Upstream, deployment_label, upstream_for
from router.dispatch_config import ProbeConfig
from router.providers import Deployment, ProviderContext, build_provider

log = logging.getLogger("contextforge.dispatch")


def _price(d: Deployment, m: ModelEntry) -> float:
    return ((d.input_price if d.input_price is not None else m.input_price)
            + (d.output_price if d.output_price is not None else m.output_price))


def build_dispatchers(config: Config, ctx: ProviderContext, on_failure: FailureHook | None = None,
                      *, reuse: dict[str, Dispatcher] | None = None,
                      clock: Callable[[], float] = time.monotonic,
                      observer: AttemptObserver | None = None) -> dict[str, Dispatcher]:
    """One dispatcher per catalog model over its deployments' adapters; ``observer`` is told
    of their attempts (tracing).

    ``reuse``: the dispatchers in service now; a model whose deployments did not change keeps
    its dispatcher, so a catalog edit resets no circuit breaker and drops no connection."""
    out = {}
    for m in config.models:
        deployments = config.deployments(m)
        strategy = m.strategy or config.dispatch.strategy
        old = (reuse or {}).get(m.name)
        if (old is not None and old.config == config.dispatch and old.strategy == strategy
                and [u.deployment for u in old.upstreams] == deployments
                and [u.price for u in old.upstreams] == [_price(d, m) for d in deployments]):
            out[m.name] = old
            continue
        upstreams = [
            upstream_for(d, m.name, build_provider(d, ctx), config.dispatch,
                         config.server.upstream_timeout_s, price=_price(d, m), clock=clock)
            for d in deployments
        ]
        out[m.name] = Dispatcher(m.name, upstreams, config.dispatch, strategy=strategy,
                                 on_failure=on_failure, clock=clock, observer=observer)
    return out


async def probe_once(dispatchers: Mapping[str, Dispatcher], config: ProbeConfig) -> int:
    """One round of active health checks (every deployment, or with ``only_unhealthy`` those
    whose circuit is not closed), concurrently; how many deployments were probed."""
    calls = [d.probe(u, config) for d in dispatchers.values() for u in d.upstreams
             if not config.only_unhealthy or u.breaker.state != "closed"]
    await asyncio.gather(*calls)
    return len(calls)


async def probe_forever(dispatchers: Callable[[], Mapping[str, Dispatcher]],
                        config: ProbeConfig) -> None:
    """Probe every ``interval_s`` until cancelled; ``dispatchers`` is read each round, so a
    reconfigured gateway's new deployments are probed too."""
    while True:
        await asyncio.sleep(config.interval_s)
        try:
            await probe_once(dispatchers(), config)
        except Exception:  # a probe round must never end the loop
            log.exception("health probe round failed")


__all__ = [
    "STRATEGIES",
    "AttemptObserver",
    "CircuitBreaker",
    "Deadline",
    "Dispatcher",
    "FailureHook",
    "Health",
    "Hedge",
    "HedgeBudget",
    "HedgeBudgets",
    "NoDeploymentInRegion",
    "Regions",
    "RetryPolicy",
    "State",
    "Upstream",
    "Waste",
    "build_dispatchers",
    "carries_answer",
    "deployment_label",
    "probe_forever",
    "probe_once",
    "state_of",
    "upstream_for",
]
