"""Balancing strategies: the order in which a call tries a model's callable deployments.

Each is a function ``(upstreams, rng, stream) -> ordered list`` over the deployments the
dispatcher already filtered (circuit not open, in the request's regions). Every strategy
starts from a weighted-random order and sorts it stably by its own score, so ties (no data
yet, equal load) still share traffic by ``weight`` and the rest of the order is a failover
chain, not just a first pick:

- ``weighted``: weighted random (``weight: 3`` takes three times the traffic of ``weight: 1``).
- ``least_busy``: fewest calls in flight first.
- ``lowest_latency``: lowest latency average first (time to first chunk for streams, whole
  answer otherwise); a deployment without a sample yet goes first, so each one is measured,
  and one call in fifty takes the weighted order instead, so a slow deployment that recovered
  is measured again (else its old average would keep it out for good).
- ``lowest_cost``: cheapest first (the deployment's input + output price per million tokens,
  its own ``input_price`` / ``output_price`` or else the model's).
- ``usage_based``: most headroom under its ``rpm`` / ``tpm`` quotas first (the higher of the
  two shares used in the last minute; no quota counts as unused); one at or over a quota goes
  last, still there to fail over to.

Adding a strategy is a function here and a name in ``router.dispatch_config.Strategy``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.dispatch._upstream import Upstream

Order = Callable[[Sequence["Upstream"], random.Random, bool], list["Upstream"]]


def weighted(ups: Sequence[Upstream], rng: random.Random, stream: bool) -> list[Upstream]:
    # Weighted sampling without replacement in one sort (Efraimidis-Spirakis): key u**(1/w).
    if len(ups) == 1:
        return list(ups)
    rand = rng.random
    return sorted(ups, key=lambda u: rand() ** u.inv_weight, reverse=True)


def least_busy(ups: Sequence[Upstream], rng: random.Random, stream: bool) -> list[Upstream]:
    return sorted(weighted(ups, rng, stream), key=lambda u: u.health.inflight)


_EXPLORE = 0.02  # lowest_latency's share of calls in the weighted order


def lowest_latency(ups: Sequence[Upstream], rng: random.Random, stream: bool,
                   ) -> list[Upstream]:
    if rng.random() < _EXPLORE:
        return weighted(ups, rng, stream)

    def latency(u: Upstream) -> float:
        h = u.health
        ms = (h.ttft_ms if h.ttft_ms is not None else h.latency_ms) if stream else h.latency_ms
        return -1.0 if ms is None else ms

    return sorted(weighted(ups, rng, stream), key=latency)


def lowest_cost(ups: Sequence[Upstream], rng: random.Random, stream: bool) -> list[Upstream]:
    return sorted(weighted(ups, rng, stream), key=lambda u: u.price)


def usage_based(ups: Sequence[Upstream], rng: random.Random, stream: bool) -> list[Upstream]:
    def used(u: Upstream) -> float:
        d = u.deployment
        if d.rpm is None and d.tpm is None:
            return 0.0
        calls, tokens = u.health.minute()
        return max(calls / d.rpm if d.rpm else 0.0, tokens / d.tpm if d.tpm else 0.0)

    return sorted(weighted(ups, rng, stream), key=used)


STRATEGIES: dict[str, Order] = {
    "weighted": weighted,
    "least_busy": least_busy,
    "lowest_latency": lowest_latency,
    "lowest_cost": lowest_cost,
    "usage_based": usage_based,
}
