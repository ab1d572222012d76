"""Which hedging a request gets, and what its hedges cost.

The settings are the route's (``routes[].hedge``) for the requests it routes, else
``dispatch.hedge``; each route has its own share budget (``HedgeBudgets``), requests that name a
model share the default's. A hedge's loser was paid for: a cancelled call its prompt (the
provider read it), an answer that arrived anyway its whole usage, at the model's prices. That
is part of what the request cost, even when the request failed in the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.catalog import Catalog
from router.dispatch import Hedge
from router.dispatch_config import HedgeConfig
from service.pipeline import Exchange

if TYPE_CHECKING:
    from service.gateway import Gateway


def hedge_config(ex: Exchange, gw: Gateway) -> HedgeConfig:
    """The hedging settings for this request: its route's, else the gateway's."""
    if ex.decision is not None:
        route = gw.engine.routes.get(ex.decision.route)
        if route is not None and route.entry.hedge is not None:
            return route.entry.hedge
    return gw.engine.config.dispatch.hedge


def hedge_for(ex: Exchange, gw: Gateway) -> Hedge | None:
    """A chat request's hedge record, when hedging is on for it."""
    config = hedge_config(ex, gw)
    if not config.enabled:
        return None
    route = ex.decision.route if ex.decision is not None else ex.route
    return Hedge(config, gw.hedges.for_route(route, config))


def settle(ex: Exchange, hedge: Hedge, gw: Gateway) -> None:
    """Price the calls ``hedge`` paid for and did not use into ``ex.wasted_usd``, and count
    the hedges in the metrics (then forget them: a fallback model's dispatch starts over)."""
    assert ex.model is not None
    m, model = gw.metrics, ex.model.name
    for w in hedge.wasted:
        prompt, completion = w.tokens or (ex.input_tokens, 0)
        ex.wasted_usd += Catalog.cost_usd(ex.model, prompt, completion)
    if hedge.won:
        m.child(m.hedges, model, "hedge").inc(hedge.won)
    if hedge.fired > hedge.won:
        m.child(m.hedges, model, "other").inc(hedge.fired - hedge.won)
    hedge.wasted.clear()
    hedge.fired = hedge.won = 0
