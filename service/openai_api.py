"""The OpenAI-compatible front end: ``/v1/chat/completions``, ``/v1/embeddings``,
``/v1/models``, ``/v1/feedback``.

Handlers parse the body with the wire structs (``router.wire.openai``: strict types, bounds,
field paths in errors), hand it to the ``Gateway`` (injected by Litestar), and format what comes
back: JSON, or OpenAI's server-sent events for streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.response import Stream

from router.engine import RoutingEngine
from router.traffic import Feedback, UnknownRequest
from router.wire.openai import (
    EMBEDDINGS_DECODER,
    ENCODER,
    REQUEST_DECODER,
    ChatCompletionChunk,
    ChatRequest,
)
from service.auth import principal_of
from service.errors import (
    APIError,
    BadRequest,
    Conflict,
    ModelNotFound,
    decode_body,
    error_event,
)
from service.gateway import Gateway
from service.regions import asked_regions
from service.stages.cache import with_cache_headers


class Pricing(msgspec.Struct, frozen=True):
    """A catalog model's list prices (USD per million tokens) and the answer length the
    gateway's cost estimates assume, so clients (``contextforge collect``) can budget before
    they call; OpenAI clients ignore the field."""

    input_per_million: float
    output_per_million: float
    expected_output_tokens: int


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
    pricing: Pricing | None = None  # catalog models; a route's cost depends on its choice


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelCard]
    object: str = "list"


class FeedbackRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/feedback``: a rating of one answer, by its request id (the response's
    ``id`` / ``x-contextforge-request-id``); 0 is worst and 1 best, like the training data."""

    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    rating: Annotated[float, msgspec.Meta(ge=0, le=1)]
    comment: Annotated[str, msgspec.Meta(max_length=4000)] | None = None
    user: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    # The answer came from the cache and was wrong for this request: its entry is evicted.
    wrong_cache_hit: bool = False


class FeedbackRecorded(msgspec.Struct, frozen=True, omit_defaults=True):
    request_id: str
    status: str  # "recorded"
    evicted_cache_entry: str | None = None  # with wrong_cache_hit: the entry dropped


FEEDBACK_DECODER = msgspec.json.Decoder(FeedbackRequest)
SSE_HEADERS = {"cache-control": "no-cache"}


def _json(obj: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response[bytes]:
    return Response(ENCODER.encode(obj), media_type="application/json", headers=headers,
                    status_code=status)


async def openai_sse(request: ChatRequest,
                     chunks: AsyncIterator[ChatCompletionChunk]) -> AsyncIterator[bytes]:
    """Chunks as OpenAI's ``data:`` events; usage only if the client asked for it. A failure
    after the first chunk becomes an ``error`` event, then ``[DONE]``."""
    opts = request.stream_options
    include_usage = bool(opts and opts.include_usage)
    try:
        async for chunk in chunks:
            if chunk.choices or include_usage:
                yield b"data: " + ENCODER.encode(chunk) + b"\n\n"
    except APIError as err:
        yield error_event(err)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"


@post("/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any], gateway: Gateway) -> Response[Any]:
    """OpenAI chat completions, routed; SSE when ``stream`` is true."""
    chat = with_cache_headers(decode_body(REQUEST_DECODER, await request.body()),
                              request.headers)
    ex = await gateway.chat(chat, principal_of(request),
                            regions=asked_regions(request.headers))
    if ex.chunks is not None:
        return Stream(openai_sse(chat, ex.chunks), media_type="text/event-stream",
                      headers={**gateway.headers(ex), **SSE_HEADERS})
    return _json(ex.result, gateway.headers(ex))


@post("/embeddings", status_code=200)
async def embeddings(request: Request[Any, Any, Any], gateway: Gateway) -> Response[bytes]:
    """OpenAI embeddings: the local encoder, or a catalog model's provider."""
    ex = await gateway.embeddings(decode_body(EMBEDDINGS_DECODER, await request.body()),
                                  principal_of(request), regions=asked_regions(request.headers))
    return _json(ex.result, gateway.headers(ex))


def model_cards(engine: RoutingEngine) -> list[ModelCard]:
    """Every valid ``model`` value: catalog models, routes, and ``auto``."""
    cards = [ModelCard(id=m.name, kind="model", capabilities=list(m.capabilities),
                       context_window=m.context_window, aliases=list(m.aliases),
                       pricing=Pricing(m.input_price, m.output_price, m.expected_output_tokens))
             for m in engine.catalog.models]
    routes = {name: r.models for name, r in engine.routes.items()}
    routes.setdefault("auto", engine.routes[engine.config.default_route].models)
    cards += [ModelCard(id=name, kind="route", owned_by="contextforge-route",
                        candidates=[m.name for m in models]) for name, models in routes.items()]
    return cards


@get("/models")
async def list_models(gateway: Gateway) -> Response[bytes]:
    """Catalog models and routes, in OpenAI's list shape with ContextForge details."""
    return _json(ModelList(model_cards(gateway.engine)))


@get("/models/{model_id:path}")
async def get_model(model_id: str, gateway: Gateway) -> Response[bytes]:
    """One entry of ``/v1/models`` (the OpenAI SDK's ``models.retrieve``)."""
    name = model_id.lstrip("/")  # model ids may contain slashes (aliases like meta-llama/...)
    engine = gateway.engine
    if name in engine.catalog:  # an alias answers with its model's card
        name = engine.catalog.get(name).name
    for card in model_cards(engine):
        if card.id == name:
            return _json(card)
    raise ModelNotFound(f"The model `{name}` does not exist", param="model")


@post("/feedback", status_code=201)
async def feedback(request: Request[Any, Any, Any], gateway: Gateway) -> Response[bytes]:
    """Attach a user's rating to a logged request."""
    body = decode_body(FEEDBACK_DECODER, await request.body())
    if gateway.traffic is None:
        raise Conflict("feedback needs the traffic log; this server runs with "
                       "traffic.enabled: false")
    fb = Feedback(body.request_id, body.rating, time.time(), body.user, body.comment)
    principal = principal_of(request)
    # A tenant rates (and evicts) only its own requests; the master key any.
    tenant = None if principal.via == "master" else principal.tenant
    try:
        await asyncio.to_thread(gateway.traffic.add_feedback, fb, tenant=tenant)
    except UnknownRequest:
        raise ModelNotFound(f"no logged request has id {body.request_id!r}",
                            param="request_id", code="request_not_found") from None
    evicted = None
    if body.wrong_cache_hit:
        evicted = await _evict_reported(gateway, body.request_id)
    return _json(FeedbackRecorded(body.request_id, "recorded", evicted_cache_entry=evicted),
                 status=201)


async def _evict_reported(gateway: Gateway, request_id: str) -> str | None:
    """Drop the cache entry that answered ``request_id`` (a user says it was wrong for that
    request) and count it; 400 when that answer did not come from the cache."""
    assert gateway.traffic is not None
    row = await asyncio.to_thread(gateway.traffic.get, request_id)
    if row is None or row.cache_entry is None or row.cache is None:
        raise BadRequest(f"request {request_id!r} was not answered from the cache: there is "
                         "no entry to evict (send the rating without wrong_cache_hit)",
                         param="wrong_cache_hit")
    tier = row.cache.removeprefix("hit-")
    if gateway.cache is not None and await gateway.cache.delete(row.cache_entry):
        gateway.metrics.child(gateway.metrics.cache_false_hits, tier).inc()
    return row.cache_entry


ROUTES = [chat_completions, embeddings, feedback, list_models, get_model]
