"""Region pinning: which deployments' regions a request may reach, and from whom that comes.

Three sources may require regions, and a request gets the intersection of those that do:

- the caller's organisation (``dispatch.tenant_regions: {acme: [eu]}``), which the caller
  cannot loosen;
- the route the request names (``routes[].regions``);
- the request itself: the ``x-contextforge-regions: eu, uk`` header.

The answer is a set of region labels matched against each deployment's ``residency``, and
it is enforced where calls are made (``router.dispatch.Dispatcher``): no retry, failover,
route-level fallback or future hedge reaches a deployment outside it. A route's choice is made
among models with a deployment inside it; when there is none, or the sources contradict each
other, the request is refused (422) with the constraint named. The response cache keys a
header-pinned request's answers apart (``service.stages.cache``), so it only meets answers
made under the same pin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from router.dispatch_config import parse_regions
from service.errors import BadRequest, Unsatisfiable

if TYPE_CHECKING:
    from service.gateway import Gateway
    from service.pipeline import Exchange

HEADER = "x-contextforge-regions"
CODE = "no_deployment_in_region"


def asked_regions(headers: Mapping[str, str]) -> frozenset[str] | None:
    """The regions the request's header asks for (``None``: no header); 400 naming the header
    when it cannot be read."""
    value = headers.get(HEADER)
    if value is None:
        return None
    try:
        return parse_regions(value)
    except ValueError as exc:
        raise BadRequest(f"{HEADER}: {exc}", param=HEADER, code="invalid_value") from None


def required_regions(ex: Exchange, gw: Gateway, route: str | None) -> frozenset[str] | None:
    """The regions ``ex`` may reach (``None``: anywhere); 422 when its sources leave none."""
    sources: list[tuple[str, frozenset[str]]] = []
    tenant = gw.config.dispatch.tenant_regions.get(ex.tenant)
    if tenant:
        sources.append((f"organisation {ex.tenant!r}", frozenset(tenant)))
    if route is not None and route in gw.engine.routes:
        own = gw.engine.routes[route].entry.regions
        if own:
            sources.append((f"route {route!r}", frozenset(own)))
    if ex.regions_asked is not None:
        sources.append((f"the {HEADER} header", ex.regions_asked))
    if not sources:
        return None
    allowed = frozenset.intersection(*(s for _, s in sources))
    if not allowed:
        said = "; ".join(f"{who} requires {', '.join(sorted(s))}" for who, s in sources)
        raise Unsatisfiable(f"no region satisfies every requirement: {said}",
                            param="regions", code=CODE)
    return allowed


def models_in(gw: Gateway, regions: frozenset[str]) -> frozenset[str]:
    """The catalog models with a deployment in ``regions``."""
    return frozenset(name for name, d in gw.dispatchers.items() if d.serves(regions))


def unservable(model: str, regions: frozenset[str]) -> Unsatisfiable:
    return Unsatisfiable(f"model {model!r} has no deployment in the required region(s) "
                         f"{', '.join(sorted(regions))}", param="regions", code=CODE)
