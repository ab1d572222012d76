"""``GET /admin/stats``: the figures the dashboard (``/dashboard``) draws, as JSON for anyone's
tools.

``?window_s=`` (60 s to 30 days, default 3600) bounds what is read from the traffic log
(``router.stats``, ``router.stats_budgets``: SQL aggregates in a worker process of low
priority, ``router.stats_job``, never on the event loop nor under its interpreter lock);
``?tenant=`` narrows it to one organisation. A viewer of an organisation sees only its own
(``service.auth.tenant_in_view``), and the deployments' health only when it is the
platform's (as ``/admin/deployments``). Answers are kept per (window, tenant) for
``ttl_for(window)`` (1.5 s; 5 s for an hour) and concurrent callers share one computation, so
ten open dashboards cost the log what one does.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, get

from router import stats_job
from router.traffic import TrafficLog
from service.auth import needs, tenant_in_view
from service.errors import APIError, BadRequest
from service.gateway import Gateway
from service.health import deployment_health

TTL_S, MAX_TTL_S = 1.5, 15.0
MIN_WINDOW_S, MAX_WINDOW_S, DEFAULT_WINDOW_S = 60.0, 30 * 86400.0, 3600.0
_ENCODE = msgspec.json.Encoder()
_LINE_LIMIT = 64 * 1024 * 1024  # an answer is one line: tens of KB, far below this


class StatsUnavailable(APIError):
    status, type, code = 503, "server_error", "stats_unavailable"


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
    """Recent answers per key, each computed once however many callers ask at once, and the
    worker process that computes them (``aclose`` it when the app stops)."""

    def __init__(self, ttl_s: float | None = None, clock: Any = time.monotonic):
        self.ttl_s, self._clock = ttl_s, clock
        self._kept: dict[Any, tuple[float, asyncio.Future[dict[str, Any]]]] = {}
        self.worker = StatsWorker()

    async def aclose(self) -> None:
        self._kept.clear()
        await self.worker.aclose()

    async def get(self, key: Any, compute: Any, ttl_s: float = TTL_S) -> dict[str, Any]:
        """The kept answer for ``key`` if fresh, else ``await compute()`` (shared)."""
        now, ttl_s = self._clock(), self.ttl_s if self.ttl_s is not None else ttl_s
        kept = self._kept.get(key)
        # one computation at a time per key: a slow one is shared, not queued behind again
        if kept is None or (kept[1].done() and now - kept[0] > ttl_s):
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


class StatsWorker:
    """The process the figures are computed in (``python -m router.stats_job``: niced, so it
    takes only CPU the gateway leaves idle, and never the event loop's interpreter lock),
    one job at a time. Started on the first stats request: a gateway nobody watches pays
    nothing; a process that died is started again by the next request."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> asyncio.subprocess.Process:
        if self._proc is None or self._proc.returncode is not None:
            # The child imports this very package, wherever it is (installed or a checkout).
            root = str(Path(stats_job.__file__).resolve().parents[1])
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "router.stats_job", stdin=PIPE, stdout=PIPE,
                env={**os.environ, "PYTHONPATH": path}, limit=_LINE_LIMIT)
        return self._proc

    async def run(self, job: stats_job.Job) -> dict[str, Any]:
        async with self._lock:
            proc = await self._started()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(_ENCODE.encode(job) + b"\n")
                await proc.stdin.drain()
                line = await proc.stdout.readline()
            except (ConnectionError, ValueError):  # a broken pipe, an overlong answer
                line = b""
            if not line:
                await self._stop()
                raise StatsUnavailable("the stats worker process stopped; the next request "
                                       "starts a new one")
        answer = msgspec.json.decode(line)
        if "error" in answer:
            raise StatsUnavailable(f"the stats could not be computed: {answer['error']}")
        return answer["figures"]

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def aclose(self) -> None:
        """End the process (the app's shutdown)."""
        if self._proc is not None and self._proc.returncode is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # its loop ends at end of input
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                await self._stop()
        self._proc = None


def _job(gateway: Gateway, window_s: float, tenant: str | None) -> stats_job.Job:
    """The worker's job: the log, the window, and what only this process knows (catalog
    prices, each model's provider, the budgets)."""
    config = gateway.config
    providers = {}
    for model, d in gateway.dispatchers.items():
        names = {u.deployment.provider for u in d.upstreams}
        if len(names) == 1:
            providers[model] = names.pop()
    return stats_job.Job(
        dsn=config.traffic.dsn, base_dir=str(config.resolve(".")), window_s=window_s,
        tenant=tenant, prices={m.name: (m.input_price, m.output_price) for m in config.models},
        providers=providers, budgets=list(config.limits.budgets))


async def _figures(gateway: Gateway, log: TrafficLog, worker: StatsWorker, window_s: float,
                   tenant: str | None) -> dict[str, Any]:
    await asyncio.to_thread(log.flush)  # this process's queued rows are in the figures
    return await worker.run(_job(gateway, window_s, tenant))


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
            (window, tenant), lambda: _figures(gateway, log, cache.worker, window, tenant),
            ttl_for(window)))
    out["deployments"] = deployment_health(gateway) if _is_platform(request) else None
    return Response(_ENCODE.encode(out), media_type="application/json",
                    headers={"cache-control": "no-store"})
