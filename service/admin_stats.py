"""``GET /admin/stats``: the figures the dashboard (``/dashboard``) draws, as JSON for anyone's
tools.

``?window_s=`` (60 s to 30 days, default 3600) bounds what is read from the traffic log
(``router.stats``, ``router.stats_budgets``: SQL aggregates in a worker thread, never on the
event loop); ``?tenant=`` narrows it to one organisation. A viewer of an organisation sees
only its own (``service.auth.tenant_in_view``), and the deployments' health only when it is
the platform's (as ``/admin/deployments``). Answers are kept per (window, tenant) for
``ttl_for(window)`` (1.5 s; 5 s for an hour) and concurrent callers share one computation, so
ten open dashboards cost the log what one does.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import msgspec
from litestar import Request, Response, get

from router.stats import traffic_stats
from router.stats_budgets import burndown
from router.traffic import TrafficLog
from service.auth import needs, tenant_in_view
from service.errors import BadRequest
from service.gateway import Gateway
from service.health import deployment_health

TTL_S, MAX_TTL_S = 1.5, 15.0
MIN_WINDOW_S, MAX_WINDOW_S, DEFAULT_WINDOW_S = 60.0, 30 * 86400.0, 3600.0
_ENCODE = msgspec.json.Encoder()


def window_of(raw: str | None) -> float:
    """``window_s`` as seconds; a clear 400 for anything but a number in range."""
    if raw is None or raw == "":
        return DEFAULT_WINDOW_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not MIN_WINDOW_S <= value <= MAX_WINDOW_S:
        raise BadRequest(f"window_s must be a number of seconds from {MIN_WINDOW_S:.0f} to "
                         f"{MAX_WINDOW_S:.0f} (30 days); got {raw[:40]!r}", param="window_s",
                         code="invalid_value")
    return value


def ttl_for(window_s: float) -> float:
    """How long an answer for this window is kept: ``TTL_S``, or 1/720 of a long window (5 s
    for an hour, at most ``MAX_TTL_S``): a point of a long window's chart changes slowly, and
    dashboards polling out of step then still share one computation per refresh."""
    return max(TTL_S, min(window_s / 720, MAX_TTL_S))


class StatsCache:
    """Recent answers per key, each computed once however many callers ask at once; and
    the budget charts' buckets that are over (``settled``, ``router.stats_budgets``)."""

    def __init__(self, ttl_s: float | None = None, clock: Any = time.monotonic):
        self.ttl_s, self._clock = ttl_s, clock
        self._kept: dict[Any, tuple[float, asyncio.Future[dict[str, Any]]]] = {}
        self.settled: dict[Any, Any] = {}

    async def get(self, key: Any, compute: Any, ttl_s: float = TTL_S) -> dict[str, Any]:
        """The kept answer for ``key`` if fresh, else ``await compute()`` (shared)."""
        now, ttl_s = self._clock(), self.ttl_s if self.ttl_s is not None else ttl_s
        kept = self._kept.get(key)
        if kept is None or now - kept[0] > ttl_s:
            if len(self._kept) > 64:  # windows and tenants asked for: a handful in practice
                self._kept = {k: v for k, v in self._kept.items()
                              if now - v[0] <= MAX_TTL_S}
            kept = self._kept[key] = (now, asyncio.ensure_future(compute()))
        try:
            return await asyncio.shield(kept[1])
        except Exception:
            if self._kept.get(key) is kept:  # a failure is not kept: the next call retries
                del self._kept[key]
            raise


def _is_platform(request: Request[Any, Any, Any]) -> bool:
    principal = request.state.principal
    return (principal.via == "master"
            or principal.tenant == request.app.state.auth.config.governance.platform_org)


def _from_log(gateway: Gateway, log: TrafficLog, window_s: float, tenant: str | None,
              settled: dict[Any, Any]) -> dict[str, Any]:
    """Blocking: every figure read from the traffic log."""
    now = time.time()
    catalog = gateway.catalog

    def price(model: str) -> tuple[float, float] | None:
        if model not in catalog:
            return None
        entry = catalog.get(model)
        return entry.input_price, entry.output_price

    def providers(model: str) -> str | None:
        dispatcher = gateway.dispatchers.get(model)
        names = {u.deployment.provider for u in dispatcher.upstreams} if dispatcher else set()
        return names.pop() if len(names) == 1 else None

    figures = traffic_stats(log, since=now - window_s, until=now, tenant=tenant, price=price,
                            providers=providers)
    figures["budgets"] = burndown(log, gateway.config.limits.budgets, now=now, tenant=tenant,
                                  memo=settled)
    return figures


@get("/stats", guards=[needs("viewer", platform=False)])
async def dashboard_stats(request: Request[Any, Any, Any], gateway: Gateway,
                          window_s: str | None = None, tenant: str | None = None
                          ) -> Response[bytes]:
    """Requests/s, latency and TTFT percentiles, error rates, routing, cache savings, spend,
    budgets' burn-down, deployments' health and quality over the last ``window_s`` seconds
    (README: "Dashboard and stats API")."""
    window = window_of(window_s)
    tenant = tenant_in_view(request, tenant)
    out: dict[str, Any] = {"window_s": window, "generated_at": time.time(), "tenant": tenant,
                           "traffic_log": gateway.traffic is not None}
    if gateway.traffic is not None:
        log = gateway.traffic
        cache: StatsCache = request.app.state.stats
        out.update(await cache.get(
            (window, tenant), lambda: asyncio.to_thread(_from_log, gateway, log, window,
                                                        tenant, cache.settled),
            ttl_for(window)))
    out["deployments"] = deployment_health(gateway) if _is_platform(request) else None
    return Response(_ENCODE.encode(out), media_type="application/json",
                    headers={"cache-control": "no-store"})
