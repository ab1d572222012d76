"""The routing choice: best predicted quality per unit of cost within the caller's constraints.

The policy sees, for each candidate model, a predicted quality in [0, 1] and an estimated cost in
USD for this request, plus a mask of the candidates that pass the hard constraints (allowed
models, context window, required capabilities). It returns the index it chose and a sentence
saying why. Modes:

- ``tradeoff``: argmax ``quality - cost / willingness_to_pay``, where ``willingness_to_pay`` is
  the USD the caller would pay per request to go from a surely wrong to a surely right answer;
- ``target_quality``: the cheapest candidate predicted to reach ``target_quality`` (else the best);
- ``max_cost``: the best candidate costing at most ``max_cost_usd`` (else the cheapest);
- ``strong_share``: RouteLLM's two-tier rule. The strongest candidate is called when its
  predicted lead over the best other candidate exceeds a threshold calibrated so that the route
  sends ``strong_share`` of typical traffic to it; otherwise the others compete by ``tradeoff``.
"""

from __future__ import annotations

import random
from typing import Literal

import msgspec
import numpy as np

Mode = Literal["tradeoff", "target_quality", "max_cost", "strong_share"]


class PolicySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a route chooses. Only the field its ``mode`` names is read (``strong_share`` also
    uses ``willingness_to_pay`` among the non-strong candidates)."""

    mode: Mode = "tradeoff"
    willingness_to_pay: float = 0.05
    target_quality: float = 0.8
    max_cost_usd: float = 0.01
    strong_share: float = 0.5

    def __post_init__(self) -> None:
        if self.willingness_to_pay <= 0:
            raise ValueError("willingness_to_pay must be > 0 (USD per request per quality unit)")
        if not 0.0 <= self.target_quality <= 1.0:
            raise ValueError("target_quality must be in [0, 1]")
        if self.max_cost_usd < 0:
            raise ValueError("max_cost_usd must be >= 0")
        if not 0.0 <= self.strong_share <= 1.0:
            raise ValueError("strong_share must be in [0, 1]")


class Exploration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A route's exploration: with probability ``rate`` the choice is drawn uniformly among the
    eligible candidates predicted within ``margin`` quality of the policy's own choice (which
    is one of them). Without it, logged traffic only shows the models the router already
    picks; with it, every log row records the probability its model was picked (``explore``),
    which off-policy estimates and retraining need."""

    rate: float = 0.0
    margin: float = 0.05
    seed: int | None = None  # a fixed seed repeats the draws (tests, replays)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be in [0, 1]")
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError("margin must be in [0, 1] (a difference of predicted quality)")


def explore(chosen: int, quality: np.ndarray, eligible: np.ndarray, spec: Exploration,
            rng: random.Random) -> tuple[int, float]:
    """The exploring choice and its propensity: the probability that this policy, exploration
    included, picks that candidate for this request (1.0 when the route does not explore)."""
    if spec.rate <= 0.0:
        return chosen, 1.0
    q = np.asarray(quality, float)
    pool = np.flatnonzero(np.asarray(eligible, bool) & (q >= q[chosen] - spec.margin))
    pick = int(pool[rng.randrange(len(pool))]) if rng.random() < spec.rate else chosen
    share = spec.rate / len(pool)
    return pick, share + (1.0 - spec.rate if pick == chosen else 0.0)


def describe(spec: PolicySpec) -> str:
    """The policy as one short, stable string for the traffic log: its mode and the one
    setting that mode reads (``tradeoff(willingness_to_pay=0.02)``)."""
    setting = {"tradeoff": "willingness_to_pay", "target_quality": "target_quality",
               "max_cost": "max_cost_usd", "strong_share": "strong_share"}[spec.mode]
    return f"{spec.mode}({setting}={getattr(spec, setting):g})"


class NoEligibleModel(ValueError):
    """Every candidate was excluded by a hard constraint."""


def strong_lead(quality: np.ndarray, strong: int) -> np.ndarray:
    """Predicted quality of the strong candidate minus the best other, per row of (n, m)."""
    q = np.atleast_2d(quality)
    others = np.delete(q, strong, axis=1)
    return q[:, strong] - others.max(axis=1)


def calibrate_threshold(quality: np.ndarray, strong: int, share: float) -> float:
    """The lead above which ``share`` of the given (calibration) prompts go to ``strong``."""
    if share <= 0.0:
        return float("inf")
    if share >= 1.0:
        return float("-inf")
    return float(np.quantile(strong_lead(quality, strong), 1.0 - share))


def choose(
    quality: np.ndarray,
    cost: np.ndarray,
    eligible: np.ndarray,
    spec: PolicySpec,
    *,
    strong: int | None = None,
    threshold: float | None = None,
) -> tuple[int, str]:
    """Index of the chosen candidate and the reason, for one request's (m,) vectors."""
    q, c = np.asarray(quality, float), np.asarray(cost, float)
    ok = np.asarray(eligible, bool)
    if not ok.any():
        raise NoEligibleModel("no candidate model satisfies the request's constraints")
    idx = np.flatnonzero(ok)

    def best_tradeoff(pool: np.ndarray) -> int:
        value = q[pool] - c[pool] / spec.willingness_to_pay
        return int(pool[np.lexsort((c[pool], -value))[0]])  # ties: cheaper wins

    def cheapest(pool: np.ndarray) -> int:
        return int(pool[np.lexsort((-q[pool], c[pool]))[0]])

    def best(pool: np.ndarray) -> int:
        return int(pool[np.lexsort((c[pool], -q[pool]))[0]])

    if spec.mode == "tradeoff":
        i = best_tradeoff(idx)
        return i, f"highest quality - cost/{spec.willingness_to_pay:g} USD"
    if spec.mode == "target_quality":
        reach = idx[q[idx] >= spec.target_quality]
        if len(reach):
            return cheapest(reach), f"cheapest predicted to reach quality {spec.target_quality:g}"
        return best(idx), f"none predicted to reach {spec.target_quality:g}: best predicted"
    if spec.mode == "max_cost":
        within = idx[c[idx] <= spec.max_cost_usd]
        if len(within):
            return best(within), f"best predicted within {spec.max_cost_usd:g} USD"
        return cheapest(idx), f"none within {spec.max_cost_usd:g} USD: cheapest"
    # strong_share
    if strong is None or threshold is None:
        raise ValueError("strong_share needs the strong candidate and a calibrated threshold")
    others = idx[idx != strong]
    if ok[strong] and (not len(others) or strong_lead(q[None, :], strong)[0] > threshold):
        return strong, f"strong model's predicted lead exceeds threshold {threshold:.3f}"
    if not len(others):
        raise NoEligibleModel("no candidate model satisfies the request's constraints")
    return best_tradeoff(others), f"predicted lead below threshold {threshold:.3f}"
