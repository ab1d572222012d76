"""The provider contract and its errors.

A provider serves one deployment of a model. It takes a ``ChatRequest`` whose ``model`` is the
catalog model's name and answers in OpenAI's shape, whatever its upstream speaks.

Errors, each with the HTTP status the gateway answers with::

    ProviderError (502)
    ├── UpstreamError        the upstream answered with an error or an unusable body (502)
    ├── UpstreamUnavailable  the upstream cannot take the call now: overloaded, down (503)
    └── UpstreamTimeout      no answer (or no next chunk) in time (504)

Messages must never contain credentials: the gateway passes them to the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from router.providers._wire import ChatCompletion, ChatCompletionChunk, ChatRequest


class ProviderError(Exception):
    """A provider call failed; ``status`` is the HTTP status the gateway answers with."""

    status = 502


class UpstreamError(ProviderError):
    status = 502


class UpstreamUnavailable(ProviderError):
    status = 503


class UpstreamTimeout(ProviderError):
    status = 504


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What the gateway lends every provider it builds (shared, opened in the app's lifespan)."""

    count_tokens: Callable[[str], int]


@runtime_checkable
class Provider(Protocol):
    """One deployment of a model, speaking OpenAI's chat-completions shape to the gateway."""

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        """The whole answer, with ``usage``."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatCompletionChunk]:
        """The answer chunk by chunk (an async generator); the last chunk carries ``usage``
        and no choices, whatever the client asked for: the gateway needs it to account."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once when the app shuts down."""
        ...
