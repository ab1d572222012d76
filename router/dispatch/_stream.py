"""A started stream's later chunks, as the dispatcher hands them on (``Rest``), and when a
stream has begun its answer (``carries_answer``): until then a failure may still move the
request to another deployment; after it the client has the answer's start."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from router.dispatch._upstream import Upstream
from router.providers import ChatCompletionChunk, ProviderError, UpstreamTimeout


class Rest:
    """A started stream's later chunks: first those read ahead with its first, then each
    within the deployment's ``stream_idle_s``. The deployment's in-flight count and tokens
    follow it; its outcome is recorded once, in the breaker too (a clean end or a client
    that left is a success, a cut or stall a failure); ``aclose`` (idempotent) releases the
    upstream stream even if it was never read."""

    def __init__(self, u: Upstream, chunks: AsyncIterator[ChatCompletionChunk],
                 failed: Callable[[Upstream, ProviderError], None],
                 held: list[ChatCompletionChunk] | None = None):
        self._u, self._chunks, self._failed = u, chunks, failed
        self._held = deque(held or ())
        self._idle = u.idle_s()
        self._open = True
        self._settled = False  # the breaker has this stream's outcome

    def __aiter__(self) -> Rest:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        u = self._u
        if self._held:
            chunk = self._held.popleft()
        else:
            try:
                async with asyncio.timeout(self._idle):
                    chunk = await anext(self._chunks)
            except StopAsyncIteration:
                await self.aclose()
                raise
            except TimeoutError:
                failure: ProviderError = UpstreamTimeout(
                    f"{u.deployment.provider} upstream sent no next chunk in {self._idle:g} s")
                self._fail(failure)
                raise failure from None
            except ProviderError as exc:
                self._fail(u.clean(exc))
                raise
            except Exception as exc:  # an adapter bug mid-stream: this deployment's failure
                failure = u.unexpected(exc)
                self._fail(failure)
                raise failure from exc
        if chunk.usage is not None:
            u.health.used(chunk.usage.total_tokens)
        return chunk

    def _fail(self, failure: ProviderError) -> None:
        self._settled = True
        self._failed(self._u, failure)

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._u.health.inflight -= 1
            if not self._settled:  # ended, or the client left: the deployment delivered
                self._settled = True
                self._u.breaker.success()
            await self._chunks.aclose()  # type: ignore[attr-defined]


def carries_answer(chunk: ChatCompletionChunk) -> bool:
    """Whether a chunk holds part of the answer (content, a tool call) or ends it: from
    then on the client has something a switch of deployment would contradict."""
    return any(c.delta.content or c.delta.tool_calls or c.finish_reason
               for c in chunk.choices)
