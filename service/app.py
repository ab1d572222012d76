"""The Litestar app: OpenAI-compatible HTTP in front of ``service.gateway``.

``create_app(config)`` builds the app; the routing engine (encoder + router), the micro-batcher
and the providers are opened in the lifespan, so importing this module or building the app
costs nothing. Handlers parse and answer; ``Gateway`` does the work; ``service.errors`` maps
every failure to OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.response import Stream

from router.config import Config
from router.dispatch import build_dispatchers
from router.embedding import MicroBatcher
from router.engine import RoutingEngine
from router.providers import (
    EMBEDDINGS_DECODER,
    ENCODER,
    REQUEST_DECODER,
    ChatRequest,
    ProviderContext,
    build_http_client,
    check_deployments,
    check_providers,
)
from router.providers.recorded import RecordedAnswers
from router.traffic import Feedback, TrafficLog, UnknownRequest
from service.admin import admin_router
from service.anthropic_api import create_message
from service.auth import master_key_guard
from service.embeddings import create_embeddings
from service.errors import (
    Conflict,
    ModelNotFound,
    NotReady,
    from_decode_error,
    handle_exception,
)
from service.gateway import Gateway
from service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from service.metrics import Metrics


class ModelCard(msgspec.Struct, frozen=True):
    id: str
    kind: str  # "model" or "route": a route name is a valid ``model`` too
    object: str = "model"
    created: int = 0
    owned_by: str = "contextforge"
    capabilities: list[str] = []
    context_window: int | None = None
    aliases: list[str] = []
    candidates: list[str] = []


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelCard]
    object: str = "list"


def decode_chat_request(body: bytes) -> ChatRequest:
    """The request body as a ``ChatRequest``; ``BadRequest`` naming the field otherwise."""
    try:
        return REQUEST_DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise from_decode_error(exc) from None


def _gateway(state: State) -> Gateway:
    gateway = state.get("gateway")
    if gateway is None:  # only outside the lifespan: shutting down, or a host that skipped it
        raise NotReady("The gateway is not ready: the routing engine is not loaded.")
    return gateway


@post("/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """OpenAI chat completions, routed; SSE when ``stream`` is true."""
    chat = decode_chat_request(await request.body())
    gateway = _gateway(state)
    plan = await gateway.plan(chat)
    if chat.stream:
        body, headers = await gateway.open_stream(plan)
        return Stream(body, media_type="text/event-stream",
                      headers={**headers, "cache-control": "no-cache"})
    completion, headers = await gateway.complete(plan)
    return Response(ENCODER.encode(completion), media_type="application/json", headers=headers)


def model_cards(engine: RoutingEngine) -> list[ModelCard]:
    """Every valid ``model`` value: catalog models, routes, and ``auto``."""
    cards = [ModelCard(id=m.name, kind="model", capabilities=list(m.capabilities),
                       context_window=m.context_window, aliases=list(m.aliases))
             for m in engine.catalog.models]
    routes = {name: r.models for name, r in engine.routes.items()}
    routes.setdefault("auto", engine.routes[engine.config.default_route].models)
    cards += [ModelCard(id=name, kind="route", owned_by="contextforge-route",
                        candidates=[m.name for m in models]) for name, models in routes.items()]
    return cards


@get("/models")
async def list_models(state: State) -> Response[bytes]:
    """Catalog models and routes, in OpenAI's list shape with ContextForge details."""
    cards = model_cards(_gateway(state).engine)
    return Response(ENCODER.encode(ModelList(cards)), media_type="application/json")


@get("/models/{model_id:path}")
async def get_model(model_id: str, state: State) -> Response[bytes]:
    """One entry of ``/v1/models`` (the OpenAI SDK's ``models.retrieve``)."""
    name = model_id.lstrip("/")  # model ids may contain slashes (aliases like meta-llama/...)
    engine = _gateway(state).engine
    if name in engine.catalog:  # an alias answers with its model's card
        name = engine.catalog.get(name).name
    for card in model_cards(engine):
        if card.id == name:
            return Response(ENCODER.encode(card), media_type="application/json")
    raise ModelNotFound(f"The model `{name}` does not exist", param="model")


@post("/embeddings", status_code=200)
async def embeddings(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """OpenAI embeddings: the local encoder, or a catalog model's provider."""
    try:
        body = EMBEDDINGS_DECODER.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise from_decode_error(exc) from None
    response, headers = await create_embeddings(_gateway(state), body)
    return Response(ENCODER.encode(response), media_type="application/json", headers=headers)


class FeedbackRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/feedback``: a rating of one answer, by its request id (the response's
    ``id`` / ``x-contextforge-request-id``); 0 is worst and 1 best, like the training data."""

    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    rating: Annotated[float, msgspec.Meta(ge=0, le=1)]
    comment: Annotated[str, msgspec.Meta(max_length=4000)] | None = None
    user: Annotated[str, msgspec.Meta(max_length=200)] | None = None


_FEEDBACK = msgspec.json.Decoder(FeedbackRequest)


@post("/feedback", status_code=201)
async def feedback(request: Request[Any, Any, Any], state: State) -> dict[str, str]:
    """Attach a user's rating to a logged request."""
    try:
        body = _FEEDBACK.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise from_decode_error(exc) from None
    traffic = _gateway(state).traffic
    if traffic is None:
        raise Conflict("feedback needs the traffic log; this server runs with "
                       "traffic.enabled: false")
    fb = Feedback(body.request_id, body.rating, time.time(), body.user, body.comment)
    try:
        await asyncio.to_thread(traffic.add_feedback, fb)
    except UnknownRequest:
        raise ModelNotFound(f"no logged request has id {body.request_id!r}",
                            param="request_id", code="request_not_found") from None
    return {"request_id": body.request_id, "status": "recorded"}


@get("/metrics", media_type=METRICS_CONTENT_TYPE)
async def metrics(state: State) -> Response[bytes]:
    """Prometheus metrics."""
    return Response(_gateway(state).metrics.render(), media_type=METRICS_CONTENT_TYPE)


@get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/readyz")
async def readyz(state: State) -> Response[dict[str, str]]:
    """Readiness: the routing engine is loaded and requests can be routed."""
    gateway = state.get("gateway")
    if gateway is None:
        return Response({"status": "loading"}, status_code=503)
    return Response({"status": "ready", "router": gateway.engine.router.spec.name,
                     "encoder": gateway.engine.encoder.id})


class RecordedLookup:
    """(catalog model, prompt) -> the recorded answer of the data model it stands in for.

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
        if self.gateway is None or model not in self.gateway.catalog:
            return None
        return self.answers.answer(self.gateway.catalog.get(model).stands_in_for, prompt)


def create_app(config: Config, *, engine: RoutingEngine | None = None) -> Litestar:
    """The gateway app for ``config``.

    ``engine`` lets callers (tests, embedding hosts) share an already loaded engine; otherwise
    it is loaded from the config in the lifespan. Raises ``ConfigError`` at once for a
    deployment with no provider adapter, or a non-loopback host without a master key.
    """
    check_providers(config)
    check_deployments(config)
    guard = master_key_guard(config.server)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if engine is None:
            eng = await asyncio.to_thread(RoutingEngine.from_config, config)
        elif engine.config is config:
            eng = engine
        else:  # share the loaded encoder and router; the catalog and routes are config's
            eng = RoutingEngine(config, engine.encoder, engine.router)
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
        dispatchers = build_dispatchers(config, ctx, metrics.upstream_failure)
        traffic = None
        if config.traffic.enabled:
            traffic = await asyncio.to_thread(TrafficLog, config.traffic.dsn,
                                              base_dir=config.resolve("."))
        gateway = Gateway(eng, batcher, dispatchers, metrics=metrics, ctx=ctx, traffic=traffic,
                          traffic_config=config.traffic)
        recorded.gateway = gateway
        loading = recorded.start(config)
        app.state.gateway = gateway
        try:
            yield
        finally:
            app.state.gateway = None
            if loading is not None:
                loading.cancel()
            await batcher.close()
            for d in gateway.dispatchers.values():
                for u in d.upstreams:
                    await u.provider.aclose()
            await http.aclose()
            if traffic is not None:
                await asyncio.to_thread(traffic.close)

    # Health probes stay open: orchestrators call them without credentials.
    api = Router(path="/v1", route_handlers=[chat_completions, embeddings, feedback,
                                             list_models, get_model, create_message],
                 guards=[guard] if guard else None)
    ops = Router(path="/", route_handlers=[metrics], guards=[guard] if guard else None)
    return Litestar(
        route_handlers=[api, ops, admin_router(config.server), healthz, readyz],
        lifespan=[lifespan],
        exception_handlers={Exception: handle_exception},
        request_max_body_size=config.server.max_body_bytes,
        state=State({"gateway": None}),
        debug=False,
    )
