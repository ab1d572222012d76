"""The Litestar app: OpenAI- and Anthropic-compatible HTTP in front of ``service.gateway``.

``create_app(config)`` validates the config and builds the app; the routing engine (encoder +
router), the micro-batcher, the HTTP client and the providers are opened in the lifespan, so
importing this module or building the app costs nothing. The lifespan also puts the router
registry's live version in service and follows the registry while serving
(``service.promotion``). Handlers receive the ``Gateway`` by dependency injection;
``service.errors`` maps every failure to the client's error shape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide

from router.batch.store import BatchStore
from router.config import Config
from router.dispatch import build_dispatchers, probe_forever
from router.embedding import MicroBatcher
from router.engine import RoutingEngine
from router.governance.db import Database
from router.governance.spend import SpendStore
from router.providers import ProviderContext, build_http_client
from router.providers.recorded import RecordedAnswers
from router.redact import Redactor
from router.registry import Registry
from router.traffic import TrafficLog
from router.usage import expire
from router.validate import build_engine, check
from service import batch_api, dashboard, openai_api, ops
from service.admin import admin_router
from service.admin_stats import StatsCache
from service.anthropic_api import create_message
from service.auth import Authenticator, api_guard, jwt_verifier
from service.batch_runner import BatchRunner, LiveRequests
from service.cache_snapshots import CacheSnapshots
from service.errors import NotReady, handle_exception
from service.gateway import Gateway
from service.metrics import Metrics
from service.openapi import openapi_handler
from service.promotion import RouterRegistryWatch
from service.timeouts import BodyTimeout

if TYPE_CHECKING:
    from service.tracing import Tracing

log = logging.getLogger("contextforge")


def provide_gateway(state: State) -> Gateway:
    """The dependency every handler that serves requests takes (``gateway: Gateway``)."""
    gateway = state.get("gateway")
    if gateway is None:  # only outside the lifespan: shutting down, or a host that skipped it
        raise NotReady("The gateway is not ready: the routing engine is not loaded.")
    return gateway


def provide_routers(state: State) -> RouterRegistryWatch:
    """The router registry the gateway follows (``routers: RouterRegistryWatch``)."""
    routers = state.get("routers")
    if routers is None:
        raise NotReady("The gateway is not ready: the routing engine is not loaded.")
    return routers


class RecordedLookup:
    """(model, prompt) -> a recorded answer: ``model`` is a data model (a deployment's
    ``answers_as``) or a catalog model, which answers as itself when the data has it, else as
    the data model it stands in for.

    The index loads in the background after start-up (a few hundred ms of CSV parsing that a
    first healthy answer need not wait for), and only when a deployment is simulated; until
    then the simulated provider answers synthetically."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None
        self.answers = RecordedAnswers()

    def start(self, config: Config) -> asyncio.Task[None] | None:
        if not any(d.provider == "simulated" for m in config.models
                   for d in config.deployments(m)):
            return None

        async def load() -> None:
            self.answers = await asyncio.to_thread(RecordedAnswers.load)

        return asyncio.get_running_loop().create_task(load())

    def __call__(self, model: str, prompt: str) -> str | None:
        if self.gateway is None:
            return None
        if model in self.gateway.catalog:
            entry = self.gateway.catalog.get(model)
            model = entry.name if self.answers.knows(entry.name) else entry.stands_in_for
        return self.answers.answer(model, prompt)


def open_traffic_log(config: Config) -> TrafficLog:
    """The traffic log of ``config``, redacting what ``traffic.redact`` names."""
    t = config.traffic
    redactor = Redactor(t.redact, region=t.redact_region) if t.redact else None
    return TrafficLog(t.dsn, base_dir=config.resolve("."), redactor=redactor)


async def forget_old_rows(traffic: TrafficLog, days: float, every_s: float = 3600.0) -> None:
    """Delete traffic-log rows older than ``days``, now and every ``every_s``, off the loop."""
    while True:
        try:
            gone = await asyncio.to_thread(expire, traffic, time.time() - days * 86400)
            if gone:
                log.info("traffic log: %d rows older than %g days deleted", gone, days)
        except Exception:  # the next round tries again
            log.exception("traffic log: the retention cleanup failed")
        await asyncio.sleep(every_s)


def open_batches(config: Config, gateway: Gateway, live: LiveRequests,
                 auth: Authenticator) -> BatchRunner:
    """The batch store (``batch.dsn``, else the governance database) and its runner
    (blocking: opens and migrates the database)."""
    dsn = config.batch.dsn or config.governance.dsn
    db = Database(dsn, base_dir=Path(config.base_dir) if config.base_dir else None)
    # One SQLite file is one process's: lines it left running are its own to free at start.
    return BatchRunner(BatchStore(db), gateway, config.batch, live,
                       exclusive=db.kind == "sqlite", authorize=auth.still_valid)


def create_app(config: Config, *, engine: RoutingEngine | None = None,
               tracing: Tracing | None = None) -> Litestar:
    """The gateway app for ``config``.

    ``engine`` lets callers (tests, embedding hosts) share an already loaded engine; otherwise
    it is loaded from the config in the lifespan. ``tracing`` traces requests with the given
    tracer (tests: an in-memory exporter) instead of the one ``config.tracing`` describes,
    which is built only when ``tracing.enabled``. Raises ``ConfigError`` at once for anything
    the validation pipeline (``router.validate``) refuses: a deployment with no adapter, a
    missing key, a non-loopback host without a master key, ...
    """
    check(config)
    auth = Authenticator(config, jwt=jwt_verifier(config))
    live = LiveRequests()
    if tracing is None and config.tracing.enabled:
        from service.tracing import Tracing  # the SDK is imported only when tracing is on

        tracing = Tracing.from_config(config.tracing)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if engine is None:
            eng = await asyncio.to_thread(build_engine, config)
        elif engine.config is config:
            eng = engine
        else:  # share the loaded encoder and router; the catalog and routes are config's
            eng = await asyncio.to_thread(build_engine, config, like=engine)
        batcher = MicroBatcher(eng.encoder, max_wait_ms=config.server.batch_wait_ms,
                               layers=eng.router.layers)
        # One decision before serving: lazy imports and first-run allocations in the encoder
        # and predictors would otherwise land on the first client's latency.
        await eng.adecide("warm up", batcher)
        http = build_http_client(timeout_s=config.server.upstream_timeout_s)
        recorded = RecordedLookup()
        ctx = ProviderContext(count_tokens=eng.encoder.count_tokens, http=http,
                              recorded_answer=recorded)
        metrics = Metrics()
        dispatchers = build_dispatchers(config, ctx, metrics.upstream_failure, observer=tracing)
        traffic = None
        if config.traffic.enabled:
            traffic = await asyncio.to_thread(open_traffic_log, config)
        gateway = Gateway(eng, batcher, dispatchers, metrics=metrics, ctx=ctx, traffic=traffic,
                          traffic_config=config.traffic, tracing=tracing)
        metrics.watch(lambda: gateway.dispatchers)
        probing = None
        if config.dispatch.probes.enabled:  # active health checks (off by default: tokens)
            probing = asyncio.get_running_loop().create_task(
                probe_forever(lambda: gateway.dispatchers, config.dispatch.probes))
        recorded.gateway = gateway
        await gateway.open_cache()  # a shared cache starts following the other replicas
        if gateway.limits is not None and config.limits.budgets:  # a restart keeps the spend
            gov = await auth.governance()
            await gateway.limits.persist(await asyncio.to_thread(SpendStore, gov.db))
        # The registry's live version serves when one is recorded (router.path otherwise, and
        # whenever the live one cannot serve); then the gateway follows the registry.
        routers = RouterRegistryWatch(gateway, Registry.for_config(config))
        await routers.sync()
        following = None
        if config.router.poll_s > 0:
            following = asyncio.get_running_loop().create_task(
                routers.follow(config.router.poll_s))
        loading = recorded.start(config)
        retention = None
        if traffic is not None and config.traffic.retention_days is not None:
            retention = asyncio.get_running_loop().create_task(
                forget_old_rows(traffic, config.traffic.retention_days))
        snapshots, saving = None, None
        if gateway.cache is not None and config.cache.snapshot_path:
            snapshots = CacheSnapshots(gateway, config.resolve(config.cache.snapshot_path),
                                       config.cache.snapshot_interval_s)
            await snapshots.load()
            saving = asyncio.get_running_loop().create_task(snapshots.run())
        batches, batching = None, None
        if config.batch.enabled:
            batches = await asyncio.to_thread(open_batches, config, gateway, live,
                                            auth)
            batching = asyncio.get_running_loop().create_task(batches.run())
        app.state.gateway, app.state.routers, app.state.batches = gateway, routers, batches
        try:
            yield
        finally:
            app.state.gateway = app.state.routers = app.state.batches = None
            await app.state.stats.aclose()  # the dashboard's worker process, if started
            for task in (loading, following, saving, retention, probing):
                if task is not None:
                    task.cancel()
            if batching is not None:  # lines in flight may finish within the drain
                await batches.stop(batching, config.server.drain_timeout_s)
                await asyncio.to_thread(batches.store.db.close)
            await gateway.drain()  # answers still being embedded for the cache
            if snapshots is not None:  # after the drain: every answer kept so far
                await asyncio.gather(saving, return_exceptions=True)
                await snapshots.write()
            await gateway.close_cache()
            if gateway.limits is not None:
                await gateway.limits.close()
            if following is not None:
                # A swap in progress holds gateway.changes; let the cancellation land first.
                await asyncio.gather(following, return_exceptions=True)
            await gateway.close_batchers()
            for d in gateway.dispatchers.values():
                for u in d.upstreams:
                    await u.provider.aclose()
            await http.aclose()
            await auth.close()
            if traffic is not None:
                await asyncio.to_thread(traffic.close)
            if tracing is not None:  # the spans still queued are exported
                await asyncio.to_thread(tracing.shutdown)

    guards = [api_guard(auth)]
    # Health probes and the API description stay open: orchestrators and tools call them
    # without credentials.
    api = Router(path="/v1", route_handlers=[*openai_api.ROUTES, create_message,
                                                *batch_api.routes(config.batch)],
                 guards=guards)
    scrape = Router(path="/", route_handlers=[ops.metrics], guards=guards)
    return Litestar(
        route_handlers=[api, scrape, admin_router(auth), ops.healthz, ops.readyz,
                        openapi_handler, *dashboard.ROUTES],
        dependencies={"gateway": Provide(provide_gateway, sync_to_thread=False),
                      "routers": Provide(provide_routers, sync_to_thread=False),
                      "batches": Provide(batch_api.provide_batches, sync_to_thread=False)},
        lifespan=[lifespan],
        exception_handlers={Exception: handle_exception},
        middleware=[live.middleware, BodyTimeout.middleware(config.server.body_timeout_s),
                    *([tracing.middleware] if tracing is not None else [])],
        request_max_body_size=config.server.max_body_bytes,
        state=State({"gateway": None, "routers": None, "batches": None, "auth": auth,
                     "stats": StatsCache()}),
        openapi_config=None,
        debug=False,
    )
