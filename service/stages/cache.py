"""The cache stage: answer a request from the cache, or keep its answer for the next one.

On the way in, a chat request the cache may serve (``router.cache.cacheable``: deterministic,
or opted in, and not a tool-result turn) is looked up under its exact key, scoped to its
tenant (and user under ``scope: user``), then by meaning: when the semantic tier holds
entries of the request's scope, its last user turn is embedded and the nearest such entry is
checked by the verifier (``router.cache.store``). A hit answers at once, as a completion or
replayed as a stream in the same SSE shape, and the later stages do not run; the answer costs
nothing and its log row says which entry served it. On the way out, a successful miss is
kept, a stream too (its text is gathered as it is relayed), with its question's vector: the
one the lookup or the route stage made, else one made after the response. The request's
``cache`` options are read here and never forwarded upstream.

When the router reads a static table and the cache has a gate for it (``router.cache.gate``),
the lookup first makes the routing vector (which the route stage then reuses) and asks the
gate whether any entry of the scope is near enough by it; only then does it run the
transformer, the search and the verifier. A miss the gate stopped is kept with its static
vector, and its transformer vector is made after the response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from router.cache import Entry, cacheable, entry_id, exact_key, last_user_text, scope_key
from router.cache.keys import with_header_options
from router.cache.store import Match, ResponseCache
from router.wire.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from service.answer import Answer
from service.errors import BadRequest
from service.pipeline import Exchange, Probe
from service.stages.route import routing_encoding

if TYPE_CHECKING:
    from service.gateway import Gateway

log = logging.getLogger("contextforge.cache")
_COMPLETION = msgspec.json.Decoder(ChatCompletion)
_ENCODE = msgspec.json.Encoder()


def with_cache_headers(chat: ChatRequest, headers) -> ChatRequest:
    """``chat`` with the cache options of its HTTP headers (the front ends call this; the body's
    ``cache`` wins where both speak); 400 naming the header it cannot read."""
    try:
        return with_header_options(chat, headers)
    except ValueError as exc:
        raise BadRequest(str(exc), param="cache") from None


class Cache:
    name = "cache"
    kinds = frozenset({"chat"})

    async def enter(self, ex: Exchange, gw: Gateway) -> None:
        request = ex.request
        assert isinstance(request, ChatRequest)
        options = request.cache
        if options is not None:  # ours: never sent to a provider
            ex.request = request = msgspec.structs.replace(request, cache=None)
        cache, cfg = gw.cache, gw.config.cache
        if cache is None:
            return
        verdict = cacheable(request, options, cfg.deterministic_only)
        if not (verdict.lookup or verdict.store):
            return  # stays "bypass"
        scope = (options.scope if options and options.scope else cfg.scope)
        # A request pinned to regions by its header meets only answers made under the same
        # pin (the tenant's own and a route's pins are in every key of theirs already).
        keyed = (ex.tenant if ex.regions_asked is None
                 else f"{ex.tenant}\x00regions={','.join(sorted(ex.regions_asked))}")
        ex.cache_key = exact_key(request, keyed, scope)
        ex.cache_store = verdict.store
        ex.cache_ttl_s = options.ttl if options and options.ttl else cfg.ttl_s
        ex.cache = "miss"
        text = last_user_text(request) if cache.dim is not None else None
        if text:
            ex.cache_probe = Probe(text, scope_key(request, keyed, scope))
        # An erasure that lands while this request is answered must not be undone by it.
        ex.cache_generation = cache.generation(ex.tenant, request.user)
        if not verdict.lookup:
            return
        try:
            match = await self._lookup(ex, gw, cache, request)
        except Exception:  # a cache that cannot look up is a miss, never a failed request
            log.exception("cache: lookup failed; answering as a miss")
            return
        if match is not None:
            serve(ex, gw, match)

    @staticmethod
    async def _lookup(ex: Exchange, gw: Gateway, cache: ResponseCache,
                      request: ChatRequest) -> Match | None:
        assert ex.cache_key is not None
        allowed = ex.principal.may_answer_with  # another key of the tenant may allow more
        entry = await cache.get(ex.cache_key)
        if entry is not None and entry.model in gw.catalog and allowed(entry.model):
            return Match(entry, "exact", 1.0)
        probe = ex.cache_probe
        # Nothing of this scope cached (another system prompt, tool set or earlier turn, or
        # a new tenant): no neighbour could answer, so the query is not even embedded.
        if probe is None or not cache.may_match(ex.tenant, probe.scope):
            return None
        if gated(cache, gw):
            probe.static = await static_vector(ex, gw, request, probe.text)
            if not cache.admits(ex.tenant, probe.scope, probe.static):
                return None  # no plausible neighbour: a miss without the transformer
            probe.vector = (await gw.text_vector(probe.text)).vector[:cache.dim]
        else:
            probe.vector = await embed(ex, gw, request, probe.text, cache.dim)
        match = await cache.find(ex.tenant, probe.scope, probe.text, probe.vector)
        if match is None or match.entry.model not in gw.catalog or not allowed(match.entry.model):
            return None
        return match

    def leave(self, ex: Exchange, gw: Gateway) -> None:
        cache = gw.cache
        if (ex.cache != "miss" or not ex.cache_store or ex.status != 200 or ex.model is None
                or cache is None or ex.cache_key is None or ex.deferred):
            return
        completion = ex.result if isinstance(ex.result, ChatCompletion) else streamed(ex)
        if completion is None or not completion.choices:
            return
        if completion.choices[0].finish_reason not in ("stop", "tool_calls", "length"):
            return  # cut short or filtered: not an answer to hand out again
        request = ex.request
        assert isinstance(request, ChatRequest)
        now = time.time()
        # The account stage left before this one (stages leave in reverse): the cost is known.
        entry = Entry(
            id=entry_id(), key=ex.cache_key, tenant=ex.tenant, user=request.user,
            route=ex.route, model=ex.model.name, body=_ENCODE.encode(completion), created=now,
            expires=now + ex.cache_ttl_s, cost_usd=ex.cost_usd,
            latency_ms=(time.perf_counter() - ex.started) * 1e3)
        probe = ex.cache_probe if cache.dim is not None else None
        gate = probe is not None and gated(cache, gw)
        if probe is not None:
            if probe.vector is None:
                probe.vector = shared_vector(ex, gw, probe.text)
            if gate and probe.static is None:  # the route stage's, when it embedded this text
                probe.static = routed_vector(ex, gw, probe.text)
        # Kept in the exact tier now; the vectors are indexed after the response when one is
        # missing (the gate spared the lookup the transformer, or the route embedded another
        # text), and always behind a gate, whose point is the request's wait: an HNSW add
        # is ~0.1 ms, as much as the gate's own search.
        later = probe is not None and (gate or probe.vector is None)
        try:
            if probe is None or later:
                evicted = cache.keep(entry, generation=ex.cache_generation)
            else:
                evicted = cache.keep(entry, probe.text, probe.scope, probe.vector,
                                     generation=ex.cache_generation)
        except Exception:  # the answer went out; only keeping it failed
            log.exception("cache: could not keep an answer")
            return
        for tier, n in zip(("exact", "semantic"), evicted, strict=True):
            if n:
                gw.metrics.child(gw.metrics.cache_evictions, tier).inc(n)
        if later:
            assert probe is not None
            gw.spawn(_index_later(gw, cache, entry, probe))


async def embed(ex: Exchange, gw: Gateway, request: ChatRequest, text: str,
                dim: int) -> np.ndarray:
    """The text encoder's vector of ``text``. When the route stage will embed another text
    (the request has a system prompt, or routing reads another encoder), that one is encoded
    at the same time, in the same batch when the encoder is shared, and left for the route
    stage: a lookup then costs the request one batched encoder run, not two in a row."""
    engine = gw.engine
    routed = engine.routing_text(request)
    shared = engine.text.loaded and engine.text_encoder is engine.encoder
    if routed is None or (routed == text and shared):
        encoded = ex.encoded = await gw.text_vector(text)
        return encoded.vector[:dim]
    encoded, ex.encoded = await asyncio.gather(gw.text_vector(text),
                                               routing_encoding(gw, engine, routed))
    return encoded.vector[:dim]


def gated(cache: ResponseCache, gw: Gateway) -> bool:
    """Whether lookups go through the cache's gate: it has one, for the table the router
    reads now (a promotion or reconfiguration may have changed the routing encoder)."""
    return cache.gate is not None and cache.gate.reads(gw.engine.encoder)


async def static_vector(ex: Exchange, gw: Gateway, request: ChatRequest, text: str
                        ) -> np.ndarray:
    """The routing table's vector of ``text``, for the gate. When the router embeds that same
    text (no system prompt) it is the route stage's own encoding, made here and left in
    ``ex.encoded``; else the two are made in one batch of the routing batcher."""
    engine = gw.engine
    routed = engine.routing_text(request)
    if routed == text:
        ex.encoded = await routing_encoding(gw, engine, text)
        return ex.encoded.vector
    batcher = gw.batcher_for(tuple(engine.router.layers))
    if routed is None:  # a pinned model: nothing to route
        return await batcher.encode(text)
    ex.encoded, vector = await asyncio.gather(routing_encoding(gw, engine, routed),
                                              batcher.encode(text))
    return vector


def routed_vector(ex: Exchange, gw: Gateway, text: str) -> np.ndarray | None:
    """The routing encoder's vector of ``text`` if the route stage made it, else None."""
    enc = ex.encoded
    if enc is None or enc.text != text or enc.encoder is not gw.engine.encoder:
        return None
    return enc.vector


def serve(ex: Exchange, gw: Gateway, match: Match) -> None:
    """Answer ``ex`` with a cached entry: free, at once, streamed when the request streams."""
    entry = match.entry
    completion = msgspec.structs.replace(_COMPLETION.decode(entry.body), id=ex.id,
                                         created=int(time.time()))
    ex.model, ex.route = gw.catalog.get(entry.model), entry.route
    ex.usage, ex.cache, ex.cache_entry, ex.cache_store = (
        completion.usage, f"hit-{match.tier}", entry.id, False)
    ex.cache_similarity = match.similarity
    if gw.traffic is not None and gw.traffic_config.log_answers:
        ex.answer = Answer.of(completion)  # what was served, for auditing a reported hit
    m = gw.metrics
    m.child(m.cache_saved_usd, match.tier).inc(entry.cost_usd)
    m.child(m.cache_saved_seconds, match.tier).inc(entry.latency_ms / 1e3)
    if ex.stream:
        ex.chunks = replay(completion)
    else:
        ex.result = completion
    ex.answered = True


def shared_vector(ex: Exchange, gw: Gateway, text: str) -> np.ndarray | None:
    """The text encoder's vector of ``text`` if a stage already made it (the route stage
    embeds the same text when the request has no system prompt), else None."""
    enc, engine = ex.encoded, gw.engine
    if (enc is None or enc.text != text or gw.cache is None or not engine.text.loaded
            or enc.encoder is not engine.text_encoder):
        return None
    return enc.vector[:gw.cache.dim]


async def _index_later(gw: Gateway, cache: ResponseCache, entry: Entry, probe: Probe) -> None:
    """The kept entry's missing vectors (the transformer's; the table's, for a gate), made
    after the response and added to its semantic entry."""
    vector, static = probe.vector, probe.static
    try:
        if vector is None:
            vector = (await gw.text_vector(probe.text)).vector[:cache.dim]
        if static is None and gated(cache, gw):
            static = await gw.batcher_for(tuple(gw.engine.router.layers)).encode(probe.text)
    except Exception:  # the answer went out; only its semantic lookup is lost
        log.exception("cache: could not embed a kept answer's question")
        return
    if gw.cache is cache:  # not replaced by a reconfiguration meanwhile
        cache.index(entry, probe.text, probe.scope, vector, static)


def streamed(ex: Exchange) -> ChatCompletion | None:
    """A relayed stream's answer as one completion (from the text gathered as it passed)."""
    answer = ex.answer
    if answer is None or answer.finish_reason is None or ex.model is None:
        return None
    calls = [ToolCall(id=c["id"], function=FunctionCall(name=c["name"],
                                                        arguments=c["arguments"]))
             for _, c in sorted(answer.calls.items())] or None
    message = AssistantMessage(role="assistant", content=answer.text, tool_calls=calls)
    usage = ex.usage if isinstance(ex.usage, Usage) else None
    return ChatCompletion(id=ex.id, created=int(time.time()), model=ex.model.name,
                          choices=[Choice(index=0, message=message,
                                          finish_reason=answer.finish_reason)],
                          usage=usage)


async def replay(completion: ChatCompletion) -> AsyncIterator[ChatCompletionChunk]:
    """A cached completion as OpenAI streams one: the role and text, each tool call, the
    finish chunk, and the usage chunk every gateway stream ends with (the front end passes it
    on when the client asked for usage)."""
    choice = completion.choices[0]
    message = choice.message

    def chunk(delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=completion.id, created=completion.created,
                                   model=completion.model,
                                   choices=[ChunkChoice(index=0, delta=delta,
                                                        finish_reason=finish)])

    yield chunk(Delta(role="assistant", content=message.content or ""))
    for i, call in enumerate(message.tool_calls or ()):
        yield chunk(Delta(tool_calls=[ToolCallDelta(
            index=i, id=call.id, type="function",
            function=FunctionCallDelta(name=call.function.name,
                                       arguments=call.function.arguments))]))
    yield chunk(Delta(), choice.finish_reason)
    yield ChatCompletionChunk(id=completion.id, created=completion.created,
                              model=completion.model, choices=[], usage=completion.usage)
