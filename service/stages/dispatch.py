"""The dispatch stage: call the chosen model's deployments, fail over, relay the answer.

Deployments of one model fail over inside ``router.dispatch.Dispatcher``; when all of them
failed with an error another model could survive, the request moves to the next model
(``service.fallback``: the configured chain, then a routed request's next-best candidates).
Streams fail over only until their first content (the dispatcher holds back content-free
chunks, a role, empty deltas, until then), which is awaited here, so a failing upstream is
still an HTTP error status and the time to first token is the client's; a later failure ends
the stream with an error event (``APIError`` from the iterator), counted in the deployment's
breaker once.
Embeddings go to the gateway's own encoder (off the event loop) or a provider's deployments.
A request pinned to regions (``ex.regions``, ``service.regions``) passes them to every
dispatcher call, fallbacks included: no other region's deployment is ever called. A route's
own ``strategy`` overrides its chosen model's for the requests it routes. When everything
failed, a configured fallback response (``service.fallback_response``) answers instead.

With ``dispatch.content_policy_failover``, a refusal that comes as a 200 (the first choice
finished with ``content_filter``: OpenAI's filter, Anthropic's ``refusal``, Gemini's SAFETY)
moves the request on like one that comes as a 400 (``UpstreamRefused``), avoiding the refusing
provider; a stream only when the refusal is its first part of the answer, nothing of it sent
yet. It was an answer, so it counts as one in the deployment's breaker, and the provider billed
it: its cost is added to the request's (``Exchange.wasted_usd``).

With hedging on for the request (``service.hedging``), a late first token races a second
deployment inside the dispatcher; the calls it paid for and did not use are priced here too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec

from router.catalog import Catalog
from router.dispatch import carries_answer
from router.providers import ProviderError, UpstreamRefused
from router.wire.openai import (
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChunkChoice,
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingUsage,
    Usage,
    encode_vector,
)
from service import fallback_response
from service.answer import Answer
from service.errors import from_provider_error
from service.fallback import fall_back
from service.hedging import hedge_for, settle
from service.pipeline import CANCELLED, CLIENT_GONE, Exchange

if TYPE_CHECKING:
    from router.dispatch import Upstream
    from service.gateway import Gateway


class Dispatch:
    name = "dispatch"
    kinds = frozenset({"chat", "embeddings"})

    async def enter(self, ex: Exchange, gw: Gateway) -> None:
        if isinstance(ex.request, EmbeddingsRequest):
            await (_local_embeddings(ex, ex.request, gw) if ex.local
                   else _provider_embeddings(ex, ex.request, gw))
            return
        assert ex.model is not None and isinstance(ex.request, ChatRequest)
        hedge = hedge_for(ex, gw)
        while True:
            dispatcher = gw.dispatchers[ex.model.name]
            strategy = _route_strategy(ex, gw)
            try:
                try:
                    if ex.stream:
                        first, rest, ex.upstream = await dispatcher.open_stream(
                            ex.request, regions=ex.regions, strategy=strategy, hedge=hedge)
                        head = await _opening(first, rest)
                        refused = bool(head) and _refused(head[-1].choices)
                        usage = next((c.usage for c in head if c.usage is not None), None)
                    else:
                        completion, ex.upstream = await dispatcher.complete(
                            ex.request, regions=ex.regions, strategy=strategy, hedge=hedge)
                        refused, usage = _refused(completion.choices), completion.usage
                finally:  # priced at this model, however the call ended (the client left too)
                    if hedge is not None:
                        settle(ex, hedge, gw)
            except ProviderError as exc:
                if _may_fall_back(exc, gw) and fall_back(
                        ex, gw, str(exc), avoid=getattr(exc, "provider", None)):
                    continue
                reply = fallback_response.configured(ex, gw) if exc.retryable else None
                if reply is None:
                    raise
                fallback_response.answer(ex, reply, exc)
                return
            # With no model to move to, the refusal is the answer: the 400 path likewise hands
            # the client what the provider said, and a 200 refusal is a valid completion.
            if not (refused and _refusal_fell_back(ex, gw, usage)):
                break
            if ex.stream:
                await rest.aclose()  # type: ignore[attr-defined]
        # The answer is gathered for the log (traffic.log_answers) and for the cache to keep.
        keep = ex.cache_store or (gw.traffic is not None and gw.traffic_config.log_answers)
        if ex.stream:
            ex.ttft_ms = (time.perf_counter() - ex.started) * 1e3
            if keep:
                ex.answer = Answer()
            ex.chunks = _relay(ex, head, rest, ex.upstream)
        else:
            ex.result = msgspec.structs.replace(completion, id=ex.id)
            ex.usage = completion.usage
            if keep:
                ex.answer = Answer.of(completion)

    def leave(self, ex: Exchange, gw: Gateway) -> None:
        return None


def _may_fall_back(exc: ProviderError, gw: Gateway) -> bool:
    """Whether another model may answer: after failures it could survive, and after a
    content-policy refusal when ``dispatch.content_policy_failover`` is on."""
    if isinstance(exc, UpstreamRefused):
        return gw.engine.config.dispatch.content_policy_failover
    return exc.retryable


def _refused(choices: list[Choice] | list[ChunkChoice]) -> bool:
    """Whether an answer is a content-policy refusal (every adapter's ``content_filter``)."""
    return bool(choices) and choices[0].finish_reason == "content_filter"


def _refusal_fell_back(ex: Exchange, gw: Gateway, usage: Usage | None) -> bool:
    """Move ``ex`` on after its model's deployment refused it with a 200, when
    ``dispatch.content_policy_failover`` allows, adding what the refusal cost."""
    assert ex.model is not None and ex.upstream is not None
    if not gw.engine.config.dispatch.content_policy_failover:
        return False
    provider, refusing = ex.upstream.deployment.provider, ex.model
    if not fall_back(ex, gw, f"{provider} refused it on its content policy "
                     "(finish_reason content_filter)", avoid=provider):
        return False
    # A stream closed at its refusal has not told its usage yet: its prompt as counted.
    ex.wasted_usd += (Catalog.cost_usd(refusing, ex.input_tokens, 0) if usage is None else
                       Catalog.cost_usd(refusing, usage.prompt_tokens, usage.completion_tokens))
    return True


async def _opening(first: ChatCompletionChunk | None,
                   rest: AsyncIterator[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    """A stream's chunks up to its first part of the answer (content, a tool call or a
    finish), or all of them when it ends first. The dispatcher read them ahead already, so
    this waits on no upstream; the client has seen none of them."""
    head = [] if first is None else [first]
    try:
        while head and not carries_answer(head[-1]):
            chunk = await anext(rest, None)
            if chunk is None:
                break
            head.append(chunk)
    except BaseException:
        await rest.aclose()  # type: ignore[attr-defined]
        raise
    return head


def _route_strategy(ex: Exchange, gw: Gateway) -> str | None:
    """The balancing strategy of the route that chose the model, if it sets one."""
    if ex.decision is None:
        return None
    route = gw.engine.routes.get(ex.decision.route)
    return route.entry.strategy if route is not None else None


async def _relay(ex: Exchange, head: list[ChatCompletionChunk],
                 chunks: AsyncIterator[ChatCompletionChunk],
                 upstream: Upstream) -> AsyncIterator[ChatCompletionChunk]:
    """The upstream's chunks (``head``, read already, then the rest) under the gateway's
    request id, noting usage and how it ended."""
    try:
        opening, answer = iter(head), ex.answer
        chunk = next(opening, None)
        while chunk is not None:
            if chunk.usage is not None:
                ex.usage = chunk.usage
            if answer is not None:
                answer.add(chunk)
            yield msgspec.structs.replace(chunk, id=ex.id)
            chunk = next(opening, None)
            if chunk is None:
                # within the deployment's stream_idle_s (the dispatcher's stream enforces it)
                chunk = await anext(chunks, None)
    except Exception as exc:
        failure = (upstream.clean(exc) if isinstance(exc, ProviderError)
                   else upstream.unexpected(exc))
        ex.status, ex.error = failure.status, f"mid-stream: {failure}"
        raise from_provider_error(failure) from exc
    except BaseException:
        ex.status, ex.error = CLIENT_GONE, CANCELLED
        raise
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def _local_embeddings(ex: Exchange, request: EmbeddingsRequest, gw: Gateway) -> None:
    encoder = gw.engine.text_encoder  # loaded by the route stage
    texts = request.texts
    if len(texts) == 1 and encoder is gw.engine.encoder:
        # The batcher encodes what the router reads: the sentence embedding comes first.
        vectors = [(await gw.batcher.encode(texts[0]))[: encoder.dim]]
    else:  # a batch is one encoder call already; off the event loop
        vectors = list(await asyncio.to_thread(encoder.encode, texts))
    tokens = ex.input_tokens  # counted by the route stage
    data = [Embedding(index=i, embedding=encode_vector(v, request.encoding_format))
            for i, v in enumerate(vectors)]
    ex.usage = EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    ex.result = EmbeddingsResponse(data=data, model=encoder.id, usage=ex.usage)


async def _provider_embeddings(ex: Exchange, request: EmbeddingsRequest, gw: Gateway) -> None:
    assert ex.model is not None
    ex.result, ex.upstream = await gw.dispatchers[ex.model.name].embed(request,
                                                                       regions=ex.regions)
    ex.usage = ex.result.usage
