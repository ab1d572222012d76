"""The gateway: what serving needs (engine, encoder batcher, dispatchers, metrics, traffic log)
and the one list of stages every request goes through.

``Gateway.chat`` and ``Gateway.embeddings`` run an ``Exchange`` through ``STAGES``
(``service.pipeline``); the front ends (``service.openai_api``, ``service.anthropic_api``)
parse their wire format before and format the outcome after. ``reconfigure`` swaps in a new
catalog, routes and deployments after building them off the event loop; ``prepare_router`` and
``use_engine`` do the same for a promoted router (``service.promotion``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from router.artifact import TrainedRouter
from router.cache.gate import gate_for
from router.cache.shared import build_shared_cache
from router.cache.store import ResponseCache, build_cache
from router.catalog import Catalog
from router.config import Config, TrafficConfig
from router.dispatch import Dispatcher, HedgeBudgets, build_dispatchers
from router.embedding import MicroBatcher
from router.engine import RoutingEngine
from router.governance.principal import OPEN, Principal
from router.limits.budgets import Crossing
from router.providers import ProviderContext
from router.traffic import TrafficLog
from router.validate import build_engine
from router.wire.openai import ChatRequest, EmbeddingsRequest
from service.limits import Limits
from service.metrics import Metrics
from service.pipeline import Encoded, Exchange, Pipeline, Stage
from service.stages.account import Account, estimated_cost_usd
from service.stages.cache import Cache
from service.stages.dispatch import Dispatch
from service.stages.guard import Guard
from service.stages.reserve import Reserve
from service.stages.route import Route

if TYPE_CHECKING:
    from service.tracing import Tracing

# The request path, in order (see service.pipeline).
STAGES: tuple[Stage, ...] = (Guard(), Cache(), Route(), Reserve(), Dispatch(), Account())


def cache_for(engine: RoutingEngine) -> ResponseCache | None:
    """The response cache ``engine``'s config asks for, empty; None when it is off. The
    semantic tier reads the text encoder's vectors (loaded here when it is not yet), and,
    when the router reads a static table, is gated by that table's vectors
    (``router.cache.gate``). With ``redis.url``, the cache several replicas share
    (``router.cache.shared``)."""
    config = engine.config
    if not config.cache.enabled:
        return None
    text = engine.text_encoder if config.cache.semantic else None
    dim, encoder = (text.dim, f"{text.id}:{text.sha256[:16]}") if text else (None, "")
    gate = None
    if text is not None and config.cache.gate:
        gate = gate_for(config.resolve(config.cache.gate), engine.encoder,
                        config.resolve(config.cache.verifier))
    if config.redis.url:  # several replicas: the exact tier in Redis, the vectors fed to all
        return build_shared_cache(config, dim, encoder, gate)
    return build_cache(config, dim, encoder, gate)


class Gateway:
    """Routing, dispatch and accounting for every request; built in the app's lifespan."""

    def __init__(self, engine: RoutingEngine, batcher: MicroBatcher,
                 dispatchers: dict[str, Dispatcher], *, metrics: Metrics, ctx: ProviderContext,
                 traffic: TrafficLog | None = None, traffic_config: TrafficConfig | None = None,
                 stages: tuple[Stage, ...] = STAGES, tracing: Tracing | None = None):
        self.engine = engine
        self.batcher = batcher
        self.dispatchers = dispatchers
        self.hedges = HedgeBudgets()  # each route's hedged share (``service.hedging``)
        self.metrics = metrics
        self.ctx = ctx
        self.traffic = traffic
        self.traffic_config = traffic_config or TrafficConfig()
        self.pipeline = Pipeline(stages)
        self.tracing = tracing  # None: tracing is off (``service.tracing``)
        self.cache = self._counted(cache_for(engine))
        self.limits = Limits.build(
            engine.config, alert=self._budget_alert,
            on_error=lambda op: metrics.child(metrics.limits_backend_errors, op).inc())
        self._text_batcher: MicroBatcher | None = None  # when routing reads another encoder
        self._tasks: set[asyncio.Task] = set()  # work a request left behind (see ``spawn``)
        # The admin API and router promotions make one change at a time: each builds on the
        # engine the one before left.
        self.changes = asyncio.Lock()
        # One batcher per set of encoder layers a served router reads (usually one). A router
        # swap that changes the layers switches batchers; the old one stays open until
        # shutdown, for requests that already queued on it.
        self._batchers = {engine.router.layers: batcher}
        metrics.serving_router(engine.router.spec.name)

    @property
    def config(self) -> Config:
        return self.engine.config

    @property
    def catalog(self) -> Catalog:
        return self.engine.catalog

    async def chat(self, request: ChatRequest, principal: Principal = OPEN, *,
                   regions: frozenset[str] | None = None) -> Exchange:
        """Route, dispatch and account one chat request of ``principal`` (its tenant, user
        and scopes); a stream's ``chunks`` are accounted when they end. ``regions``: those the
        request itself requires (``service.regions``). Raises the failure
        (``service.errors.to_api_error`` maps it)."""
        return await self.pipeline.run(Exchange("chat", request, principal=principal,
                                                tenant=principal.tenant,
                                                regions_asked=regions), self)

    async def embeddings(self, request: EmbeddingsRequest, principal: Principal = OPEN, *,
                         regions: frozenset[str] | None = None) -> Exchange:
        """The vectors for one embeddings request (not routed: no quality trade-off)."""
        return await self.pipeline.run(Exchange("embeddings", request, principal=principal,
                                                tenant=principal.tenant,
                                                regions_asked=regions), self)

    @staticmethod
    def headers(ex: Exchange) -> dict[str, str]:
        """The routing headers of an answered exchange. A stream's cost is the estimate: its
        headers go out before the answer's length is known."""
        assert ex.model is not None
        cost = estimated_cost_usd(ex) if ex.chunks is not None else ex.cost_usd
        headers = {"x-contextforge-request-id": ex.id, "x-contextforge-model": ex.model.name,
                   "x-contextforge-cost-usd": f"{cost:.8f}"}
        if ex.kind == "chat":
            headers["x-contextforge-route"] = ex.route
            headers["x-contextforge-cache"] = ex.cache
            if ex.cache_similarity is not None:
                headers["x-contextforge-cache-similarity"] = f"{ex.cache_similarity:.4f}"
        if ex.decision is not None:  # routed: which router version decided
            headers["x-contextforge-router"] = ex.decision.router
        headers.update(ex.headers)
        return headers

    async def reconfigure(self, config: Config) -> None:
        """Serve ``config``'s catalog, routes and deployments from the next request on.

        Everything is validated and built (off the event loop: building adapters and routes
        takes tens of ms) before anything is swapped, so a bad config (``ConfigError``)
        changes nothing. In-flight requests finish on the decisions they made.
        """
        engine, dispatchers = await asyncio.to_thread(self._build, config)
        old = self.cache
        if (config.cache, config.redis) != (self.engine.config.cache, self.engine.config.redis):
            # New bounds, another Redis, or off: start afresh (a shared cache's entries stay
            # in Redis, and the new one replays the feed into its index).
            new = self._counted(await asyncio.to_thread(cache_for, engine))
            if new is not None:
                await new.start()
            self.cache = new
        self.engine, self.dispatchers = engine, dispatchers
        if old is not None and old is not self.cache:
            await old.close()

    def _build(self, config: Config) -> tuple[RoutingEngine, dict[str, Dispatcher]]:
        engine = build_engine(config, like=self.engine)
        return engine, build_dispatchers(config, self.ctx, self.metrics.upstream_failure,
                                         reuse=self.dispatchers, observer=self.tracing)

    async def prepare_router(self, router: TrainedRouter, config: Config) -> RoutingEngine:
        """The engine that serves ``router`` with ``config`` (which names its folder), built and
        warmed off the event loop; nothing serves it until ``use_engine``. ``ConfigError`` when
        it does not read the serving encoder or lacks a column the routes need. Hold
        ``changes`` from here to ``use_engine``."""
        engine = await asyncio.to_thread(build_engine, config, like=self.engine, router=router)
        if engine.routes:
            # The first prediction allocates (lazy imports, first-run buffers): not on a client.
            text = engine.router.routing_texts(["warm up"])[0]
            emb = await self.batcher_for(engine.router.layers).encode(text)
            await asyncio.to_thread(engine.decide, "warm up", embedding=emb)
        return engine

    def use_engine(self, engine: RoutingEngine) -> None:
        """Serve ``engine`` from the next request on. One synchronous step, so a request sees
        the old engine and batcher or the new ones, never a mix; requests already routed keep
        the engine they started with."""
        self.engine, self.batcher = engine, self.batcher_for(engine.router.layers)
        self.metrics.serving_router(engine.router.spec.name)

    def batcher_for(self, layers: tuple[int, ...]) -> MicroBatcher:
        """The micro-batcher that encodes what a router reading ``layers`` needs."""
        found = self._batchers.get(layers)
        if found is None:
            found = self._batchers[layers] = MicroBatcher(
                self.engine.encoder, max_wait_ms=self.config.server.batch_wait_ms,
                layers=layers)
        return found

    async def text_vector(self, text: str) -> Encoded:
        """``text`` encoded by the text encoder (what the semantic cache compares), off the
        event loop. When the router reads that same encoder, this is the routing batcher's
        encoding, which the route stage reuses when it embeds the same text."""
        engine = self.engine
        text_encoder = (engine.text_encoder if engine.text.loaded
                        else await asyncio.to_thread(lambda: engine.text_encoder))
        if text_encoder is engine.encoder:
            layers = tuple(engine.router.layers)
            vector = await self.batcher_for(layers).encode(text)
            return Encoded(text, layers, vector, text_encoder)
        if self._text_batcher is None or self._text_batcher.encoder is not text_encoder:
            self._text_batcher = MicroBatcher(text_encoder,
                                              max_wait_ms=self.config.server.batch_wait_ms)
            self._batchers[("text", id(text_encoder))] = self._text_batcher  # closed with them
        return Encoded(text, (), await self._text_batcher.encode(text), text_encoder)

    async def _budget_alert(self, crossing: Crossing) -> None:
        """A budget passed 50%, 80% or 100%: counted, and POSTed to ``limits.alert_webhook``
        after the response (a slow webhook must not hold a request)."""
        self.metrics.child(self.metrics.budget_alerts, f"{crossing.threshold:.0%}").inc()
        url = self.config.limits.alert_webhook
        if url:
            self.spawn(post_alert(self.ctx.http, url, crossing))

    def _counted(self, cache: ResponseCache | None) -> ResponseCache | None:
        if cache is not None:  # a shared cache's Redis errors, by operation
            cache.on_error = lambda op: self.metrics.child(self.metrics.cache_backend_errors,
                                                           op).inc()
        return cache

    async def open_cache(self) -> None:
        """Start the cache's background work (a shared cache follows the other replicas)."""
        if self.cache is not None:
            await self.cache.start()

    async def close_cache(self) -> None:
        """Stop it and close its connections (at shutdown, after the drain)."""
        if self.cache is not None:
            await self.cache.close()

    def spawn(self, work) -> None:
        """Run ``work`` (a coroutine a request leaves behind, such as embedding an answer's
        question for the cache) after the response; ``drain`` awaits what is left."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the work requests left behind (at shutdown, before the last snapshot)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close_batchers(self) -> None:
        """Stop every micro-batcher (at shutdown), after what is queued."""
        for batcher in self._batchers.values():
            await batcher.close()


async def post_alert(http, url: str, crossing: Crossing) -> None:
    """POST one budget alert as JSON; a failure is logged, never raised."""
    import logging

    b = crossing.budget
    body = {"event": "budget_threshold", "budget": b.bucket, "period": b.period,
            "period_key": crossing.period, "limit_usd": b.limit_usd,
            "threshold": crossing.threshold, "spent_usd": round(crossing.spent_usd, 6)}
    try:
        r = await http.post(url, json=body, timeout=10)
        r.raise_for_status()
    except Exception as exc:
        logging.getLogger("contextforge.limits").error("budget alert to %s failed: %s", url,
                                                       exc)
