"""Operations endpoints: ``/metrics`` (Prometheus), ``/healthz`` (liveness), ``/readyz``."""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import State

from service.gateway import Gateway
from service.metrics import CONTENT_TYPE


@get("/metrics", media_type=CONTENT_TYPE)
async def metrics(gateway: Gateway) -> Response[bytes]:
    """Prometheus metrics."""
    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)


@get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/readyz")
async def readyz(state: State) -> Response[dict[str, str]]:
    """Readiness: the routing engine is loaded and requests can be routed."""
    gateway: Gateway | None = state.get("gateway")
    if gateway is None:
        return Response({"status": "loading"}, status_code=503)
    return Response({"status": "ready", "router": gateway.engine.router.spec.name,
                     "encoder": gateway.engine.encoder.id})
