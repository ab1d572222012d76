"""Hedged requests: each route's cap on the share it hedges, and what one request's hedge did.

A hedge is a second call to another deployment of the same model, made when the first call's
first token is late (``Health.late_after_ms``); the first of the two to produce a first token
answers and the other is cancelled (``Dispatcher`` runs the race). It trades a bounded amount
of extra traffic for the tail: a call stuck on a slow or hanging deployment is answered at
about the deployment's usual percentile plus one normal call, instead of at its timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from router.dispatch._health import Window
from router.dispatch_config import HedgeConfig

if TYPE_CHECKING:
    from router.dispatch._upstream import Upstream


@dataclass(slots=True)
class HedgeBudget:
    """One route's hedged share over the last ``window_s``: every request counts once
    (``request``), every hedge once (``take``), and a hedge goes out only while the hedges
    stay within ``max_share`` of the requests (``allows``)."""

    config: HedgeConfig
    clock: Callable[[], float] = time.monotonic
    _window: Window = field(init=False)  # requests (a) and hedges (b)

    def __post_init__(self) -> None:
        self._window = Window(self.config.window_s)

    def request(self) -> None:
        self._window.add(self.clock(), 1.0)

    def allows(self) -> bool:
        """Whether one more hedge fits under the cap."""
        window = self._window
        window.trim(self.clock())
        return window.b + 1 <= self.config.max_share * window.a

    def take(self) -> None:
        """A hedge went out."""
        self._window.add(self.clock(), 0.0, 1.0)

    def share(self) -> tuple[int, int]:
        """Requests and hedges of the last ``window_s``."""
        self._window.trim(self.clock())
        return round(self._window.a), round(self._window.b)


class HedgeBudgets:
    """The budgets of every route (and of requests no route chose), kept across
    reconfiguration while a route's hedge settings stay the same."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._budgets: dict[str, HedgeBudget] = {}

    def for_route(self, route: str, config: HedgeConfig) -> HedgeBudget:
        budget = self._budgets.get(route)
        if budget is None or budget.config != config:
            budget = self._budgets[route] = HedgeBudget(config, self._clock)
        return budget


@dataclass(slots=True)
class Waste:
    """A call the request paid for and did not use: cancelled after its prompt went out
    (``tokens`` None: the prompt is its cost), or an answer that came in second in a race too
    close to call (its usage's total tokens, prompt first)."""

    upstream: Upstream
    tokens: tuple[int, int] | None = None  # (prompt, completion) when it answered in full


@dataclass(slots=True)
class Hedge:
    """One request's hedging: its route's settings and budget in; out, whether a hedge went
    out (``fired``), whether it answered (``won``), and the calls it paid for but did not use
    (``wasted``), which the request's cost includes."""

    config: HedgeConfig
    budget: HedgeBudget
    fired: int = 0
    won: int = 0
    wasted: list[Waste] = field(default_factory=list)
    _counted: bool = False

    def count_request(self) -> None:
        """Once per request, whatever number of models it falls back through."""
        if not self._counted:
            self._counted = True
            self.budget.request()
