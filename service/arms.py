"""Which arm of a split route a request belongs to: the route stage draws its router version by
it, and a fallback to the route's next-best model asks the same arm."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.engine import RoutingEngine
    from service.pipeline import Exchange


def arm_key(ex: Exchange, engine: RoutingEngine, target: str) -> str | None:
    """Who a split route's arm is drawn for: the request's ``user`` (else its tenant), or the
    tenant, as the route's ``split.by`` says."""
    route = engine.routes.get(target)
    if route is None or route.entry.split is None:
        return None
    user = getattr(ex.request, "user", None)
    return ex.tenant if route.entry.split.by == "tenant" or not user else f"user:{user}"
