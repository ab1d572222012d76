"""The cache stage: answer a request from the cache, or keep its answer for the next one.

On the way in, a chat request the cache may serve (``router.cache.cacheable``: deterministic,
or opted in, and not a tool-result turn) is looked up under its exact key, scoped to its
tenant (and user under ``scope: user``). A hit answers at once, as a completion or replayed
as a stream in the same SSE shape, and the later stages do not run; the answer costs nothing
and its log row says which entry served it. On the way out, a successful miss is kept, a
stream too (its text is gathered as it is relayed). The request's ``cache`` options are read
here and never forwarded upstream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec

from router.cache import Entry, cacheable, entry_id, exact_key
from router.cache.keys import with_header_options
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
from service.errors import BadRequest
from service.pipeline import Exchange

if TYPE_CHECKING:
    from service.gateway import Gateway

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
        ex.cache_key = exact_key(request, ex.tenant, scope)
        ex.cache_store = verdict.store
        ex.cache_ttl_s = options.ttl if options and options.ttl else cfg.ttl_s
        ex.cache = "miss"
        if not verdict.lookup:
            return
        entry = cache.get(ex.cache_key)
        if entry is None or entry.model not in gw.catalog:
            return
        completion = msgspec.structs.replace(_COMPLETION.decode(entry.body), id=ex.id,
                                             created=int(time.time()))
        ex.model, ex.route = gw.catalog.get(entry.model), entry.route
        ex.usage, ex.cache, ex.cache_entry, ex.cache_store = (
            completion.usage, "hit-exact", entry.id, False)
        m = gw.metrics
        m.child(m.cache_saved_usd, "exact").inc(entry.cost_usd)
        m.child(m.cache_saved_seconds, "exact").inc(entry.latency_ms / 1e3)
        if ex.stream:
            ex.chunks = replay(completion)
        else:
            ex.result = completion
        ex.answered = True

    def leave(self, ex: Exchange, gw: Gateway) -> None:
        if (ex.cache != "miss" or not ex.cache_store or ex.status != 200 or ex.model is None
                or gw.cache is None or ex.cache_key is None):
            return
        completion = ex.result if isinstance(ex.result, ChatCompletion) else streamed(ex)
        if completion is None or not completion.choices:
            return
        if completion.choices[0].finish_reason not in ("stop", "tool_calls", "length"):
            return  # cut short or filtered: not an answer to hand out again
        request = ex.request
        assert isinstance(request, ChatRequest)
        now, evicted = time.time(), gw.cache.evicted
        # The account stage left before this one (stages leave in reverse): the cost is known.
        gw.cache.put(Entry(
            id=entry_id(), key=ex.cache_key, tenant=ex.tenant, user=request.user,
            route=ex.route, model=ex.model.name, body=_ENCODE.encode(completion), created=now,
            expires=now + ex.cache_ttl_s, cost_usd=ex.cost_usd,
            latency_ms=(time.perf_counter() - ex.started) * 1e3))
        if gw.cache.evicted > evicted:
            gw.metrics.child(gw.metrics.cache_evictions, "exact").inc(gw.cache.evicted - evicted)


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
