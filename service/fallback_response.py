"""The configured answer when everything failed (``dispatch.fallback_response``, or a route's
``fallback_response``): every deployment of the model and of every fallback model failed with
an error another call might have survived, and the operator prefers a fixed reply to a 5xx.

The reply is a normal completion (or stream) so clients need no special case; the response
header ``x-contextforge-fallback: static`` and the traffic log's error say what it was. It
costs nothing, charges no tokens and is never cached.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from router.providers import ProviderError
from router.wire.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    Usage,
)

if TYPE_CHECKING:
    from router.dispatch_config import FallbackResponse
    from service.gateway import Gateway
    from service.pipeline import Exchange

HEADER = "x-contextforge-fallback"
_NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)


def configured(ex: Exchange, gw: Gateway) -> FallbackResponse | None:
    """The fallback response for ``ex``: its route's, else the gateway's (``None``: off)."""
    routes = gw.engine.routes
    if ex.decision is not None and ex.decision.route in routes:
        own = routes[ex.decision.route].entry.fallback_response
        if own is not None:
            return own
    return gw.engine.config.dispatch.fallback_response


def answer(ex: Exchange, reply: FallbackResponse, failure: ProviderError) -> None:
    """Give ``ex`` the fallback reply after ``failure`` (the last error, for the log)."""
    assert ex.model is not None
    ex.headers[HEADER] = "static"
    ex.error = f"static fallback response after: {failure}"
    ex.cache_store = False
    ex.upstream = None
    ex.usage = _NO_USAGE
    created, model = int(time.time()), ex.model.name
    if ex.stream:
        ex.ttft_ms = (time.perf_counter() - ex.started) * 1e3
        ex.chunks = _stream(ex.id, created, model, reply.content)
        return
    message = AssistantMessage(role="assistant", content=reply.content)
    ex.result = ChatCompletion(id=ex.id, created=created, model=model, usage=_NO_USAGE,
                               choices=[Choice(index=0, message=message,
                                               finish_reason="stop")])


async def _stream(id_: str, created: int, model: str,
                  content: str) -> AsyncIterator[ChatCompletionChunk]:
    for delta, finish in ((Delta(role="assistant"), None), (Delta(content=content), None),
                          (Delta(), "stop")):
        yield ChatCompletionChunk(id=id_, created=created, model=model, choices=[
            ChunkChoice(index=0, delta=delta, finish_reason=finish)])
    yield ChatCompletionChunk(id=id_, created=created, model=model, choices=[], usage=_NO_USAGE)
