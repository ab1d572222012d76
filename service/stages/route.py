"""The route stage: what the request needs, how long it is, and which model answers it.

Chat: malformed-but-decodable requests are refused first (``check_request``), the prompt's
tokens are counted against the route's cap (off the event loop when long), then the engine
decides, routed or pinned alike (``RoutingEngine.select``). Embeddings are not routed: the
stage only resolves the model (the gateway's own encoder or a catalog embeddings model) and
checks ``dimensions`` against it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgspec

from router.config import ModelEntry
from router.engine import PINNED, Decision
from router.policy import NoEligibleModel
from router.requirements import (
    check_request,
    conversation_texts,
    count_prompt_tokens,
    needs_thread,
    requirements,
    routing_prompt,
)
from router.wire.openai import ChatRequest, EmbeddingsRequest
from service.arms import arm_key
from service.errors import BadRequest, ModelNotFound, Unsatisfiable
from service.fallback import fitting
from service.pipeline import Encoded, Exchange
from service.regions import models_in, required_regions, unservable

if TYPE_CHECKING:
    from router.embedding import Encoder
    from router.engine import RoutingEngine
    from service.gateway import Gateway

EMBEDDINGS_ROUTE = "embeddings"
MAX_LOCAL_TEXTS = 256  # one request's texts share the process's two cores with routing


def local_model(encoder: Encoder) -> ModelEntry:
    """The gateway's own encoder as a catalog-like entry: free, in-process."""
    return ModelEntry(name=encoder.id, input_price=0.0, output_price=0.0,
                      context_window=encoder.max_tokens, capabilities=["embeddings"],
                      dimensions=encoder.dim)


class Route:
    name = "route"
    kinds = frozenset({"chat", "embeddings"})

    async def enter(self, ex: Exchange, gw: Gateway) -> None:
        if isinstance(ex.request, EmbeddingsRequest):
            await self._embeddings(ex, ex.request, gw)
            return
        request = ex.request
        assert isinstance(request, ChatRequest)
        check_request(request)
        engine = gw.engine
        target = engine.target(request.model)
        needs = requirements(request)
        texts = conversation_texts(request)
        limit = engine.prompt_limit(target)
        count = engine.encoder.count_tokens_batch
        if needs_thread(texts):  # a long conversation: its tokenizer run stays off the loop
            n_in = await asyncio.to_thread(count_prompt_tokens, count, texts, limit)
        else:
            n_in = count_prompt_tokens(count, texts, limit)
        prompt = emb = None
        if target in engine.routes:
            prompt = routing_prompt(request)
            text = engine.router.routing_texts([prompt])[0]
            done = ex.encoded  # the cache stage's lookup may have embedded it already
            if done is not None and done.text == text and matches(done, engine):
                emb = done.vector
            else:
                ex.encoded = await routing_encoding(gw, engine, text)
                emb = ex.encoded.vector
        decision = select_within_regions(ex, gw, target, prompt or "", needs=needs,
                                         input_tokens=n_in, embedding=emb, exploring=True,
                                         arm_key=arm_key(ex, engine, target))
        ex.needs, ex.input_tokens, ex.prompt, ex.embedding = needs, n_in, prompt, emb
        ex.model = engine.catalog.get(decision.model)
        ex.route = decision.route
        if decision.route != PINNED:
            ex.decision = decision
            gw.metrics.child(gw.metrics.decisions, decision.route, decision.model).inc()
            gw.metrics.decision_time.observe(time.perf_counter() - ex.started)
        ex.request = msgspec.structs.replace(request, model=decision.model)

    def leave(self, ex: Exchange, gw: Gateway) -> None:
        return None

    @staticmethod
    async def _embeddings(ex: Exchange, request: EmbeddingsRequest, gw: Gateway) -> None:
        engine = gw.engine
        # /v1/embeddings serves the transformer, whatever routing reads; with a static routing
        # table it loads on first use, off the event loop.
        encoder = (engine.text_encoder if engine.text.loaded
                   else await asyncio.to_thread(lambda: engine.text_encoder))
        if request.model == encoder.id:
            model, ex.local = local_model(encoder), True
            if request.dimensions is not None and request.dimensions != encoder.dim:
                raise BadRequest(f"{encoder.id} returns {encoder.dim} dimensions; it cannot "
                                 "shorten its vectors (omit `dimensions`)", param="dimensions")
        elif request.model in gw.catalog:
            model = gw.catalog.get(request.model)
            ex.regions = required_regions(ex, gw, None)
            if ex.regions is not None and not gw.dispatchers[model.name].serves(ex.regions):
                raise unservable(model.name, ex.regions)
            if "embeddings" not in model.capabilities:
                raise Unsatisfiable(f"model {model.name!r} is not an embeddings model; use "
                                    f"{encoder.id!r} or a model with the embeddings capability",
                                    param="model")
            if (request.dimensions is not None and model.dimensions is not None
                    and request.dimensions > model.dimensions):
                raise BadRequest(f"{model.name} returns at most {model.dimensions} dimensions; "
                                 f"ask for {model.dimensions} or fewer", param="dimensions")
        else:
            raise ModelNotFound(f"The model `{request.model}` does not exist: use "
                                f"`{encoder.id}` (local) or a catalog model with the embeddings "
                                "capability (see GET /v1/models)", param="model")
        texts = request.texts
        if ex.local and len(texts) > MAX_LOCAL_TEXTS:
            raise BadRequest(f"at most {MAX_LOCAL_TEXTS} texts per request to {encoder.id}",
                             param="input")
        # Counted before the call, as a chat prompt is: token limits and budgets are charged
        # up front (a provider's tokenizer differs: the reserve stage adds its margin).
        counts = (await asyncio.to_thread(encoder.count_tokens_batch, texts)
                  if needs_thread(texts) else encoder.count_tokens_batch(texts))
        ex.input_tokens = sum(counts)
        ex.model, ex.route = model, EMBEDDINGS_ROUTE
        ex.request = msgspec.structs.replace(request, model=model.name)


def select_within_regions(ex: Exchange, gw: Gateway, target: str, prompt: str,
                          **kw: Any) -> Decision:
    """``engine.select`` among the models the credential allows (``principal.models``) and,
    when the request is pinned to regions (``service.regions``), that have a deployment
    there; 422 naming the regions when none has."""
    engine = gw.engine
    routed = target in engine.routes
    ex.regions = regions = required_regions(ex, gw, target if routed else None)
    allowed = ex.principal.models
    if regions is not None:
        inside = models_in(gw, regions)
        if not routed and target in engine.catalog:
            model = engine.catalog.get(target).name
            if model not in inside:
                raise unservable(model, regions)
        allowed = inside if allowed is None else allowed & inside
    try:
        return engine.select(target, prompt, allowed=allowed, **kw)
    except NoEligibleModel as exc:
        if not routed:
            return _pinned_fallback(ex, gw, target, exc, **kw)
        if regions is None:
            raise
        raise NoEligibleModel(f"{exc} among models with a deployment in region(s) "
                              f"{', '.join(sorted(regions))}") from None


def _pinned_fallback(ex: Exchange, gw: Gateway, target: str, exc: NoEligibleModel,
                     **kw: Any) -> Decision:
    """A pinned model that cannot serve the request (its prompt does not fit, say): the first
    model of its configured ``fallbacks`` that can, else ``exc`` (the reason, for the
    client). Routed requests need none of this: the route only picks models that fit."""
    model = gw.engine.catalog.get(target)
    other = fitting(ex, gw, model, kw["needs"], kw["input_tokens"])
    if other is None:
        raise exc
    ex.tried = (model.name,)  # logged as a fallback, and no bandit sample
    return gw.engine.select(other.name, "", **{k: v for k, v in kw.items()
                                               if k in ("needs", "input_tokens")})


async def routing_encoding(gw: Gateway, engine: RoutingEngine, text: str) -> Encoded:
    """``text`` as ``engine``'s router reads it, from the batcher of that router's layers (a
    promotion may have swapped the gateway's engine while the prompt was being counted)."""
    layers = tuple(engine.router.layers)
    return Encoded(text, layers, await gw.batcher_for(layers).encode(text), engine.encoder)


def matches(encoded: Encoded, engine: RoutingEngine) -> bool:
    """Whether ``encoded`` is what ``engine``'s router reads (same encoder, same layers)."""
    return encoded.encoder is engine.encoder and encoded.layers == tuple(engine.router.layers)
