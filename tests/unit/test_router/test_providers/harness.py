"""The one harness every provider test uses: build an adapter the way the gateway does (the
registry, a ``ProviderContext`` lending a real httpx client) and run a call on it to the end.

The simulators themselves run over real HTTP with ``tests.upstreams.serve``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec

from router.providers import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Deployment,
    Provider,
    ProviderContext,
    build_provider,
)


def words(text: str) -> int:
    """A tokenizer stand-in: one token a word, so expected counts are easy to read."""
    return len(text.split())


def run(deployment: Deployment, work: Callable[[Any], Awaitable[Any]], *,
        count_tokens: Callable[[str], int] = words,
        http: Callable[[], httpx.AsyncClient] | None = None) -> Any:
    """``work(provider)`` in a fresh event loop, the provider built from ``deployment`` by the
    registry with a shared client (``http``: a factory, e.g. one with a mock transport), and
    closed after."""
    async def main() -> Any:
        async with (http or (lambda: httpx.AsyncClient(timeout=10)))() as client:
            provider = build_provider(deployment, ProviderContext(count_tokens=count_tokens,
                                                                  http=client))
            try:
                return await work(provider)
            finally:
                await provider.aclose()
    return asyncio.run(main())


def complete(deployment: Deployment, request: ChatRequest, **kw: Any) -> ChatCompletion:
    """The adapter's whole answer to ``request`` (``kw``: as ``run`` takes them)."""
    return run(deployment, lambda p: p.complete(request), **kw)


def stream(deployment: Deployment, request: ChatRequest, **kw: Any) -> list[ChatCompletionChunk]:
    """Every chunk of the adapter's stream for ``request`` (``kw``: as ``run`` takes them)."""
    return run(deployment, lambda p: collect(p, request), **kw)


async def collect(provider: Provider, request: ChatRequest) -> list[ChatCompletionChunk]:
    """Every chunk of ``provider``'s stream for ``request``."""
    return [c async for c in provider.stream(request)]


def chat_request(model: str, messages: list[dict[str, Any]], **fields: Any) -> ChatRequest:
    """A ``ChatRequest`` as the gateway decodes it."""
    return msgspec.convert({"model": model, "messages": messages, **fields}, ChatRequest)
