"""The provider contract and its errors.

A provider serves one deployment of a model. It takes a ``ChatRequest`` whose ``model`` is the
catalog model's name and answers in OpenAI's shape, whatever its upstream speaks.

Errors, each with the HTTP status the gateway answers with::

    ProviderError (502)
    ├── UpstreamError        the upstream answered with an error or an unusable body (502)
    ├── UpstreamRejected     the upstream refused the request itself as invalid (400); the
    │   │                    client's fault, so no failover to another deployment
    │   └── UpstreamRefused  ... on its content policy (400); another provider may answer
    │                        (``dispatch.content_policy_failover``), never a breaker failure
    ├── UpstreamRateLimited  the upstream said 429; ``retry_after`` seconds if it said (429)
    ├── UpstreamUnavailable  the upstream cannot take the call now: overloaded, down (503)
    └── UpstreamTimeout      no answer (or no next chunk) in time (504)

``retryable`` says whether another deployment (or a later retry) may succeed.
Messages must never contain credentials: the gateway passes them to the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import httpx

from router.wire.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
)


class ProviderError(Exception):
    """A provider call failed; ``status`` is the HTTP status the gateway answers with."""

    status = 502
    retryable = True
    retry_after: float | None = None  # seconds, when the upstream (or the gateway) knows


class UpstreamError(ProviderError):
    status = 502


class UpstreamRejected(ProviderError):
    status = 400
    retryable = False


class UpstreamRefused(UpstreamRejected):
    """The upstream refused the request on its content policy; ``provider``: the refusing
    deployment's provider (set by dispatch), which a content-policy failover avoids."""

    provider: str | None = None


class UpstreamRateLimited(ProviderError):
    status = 429

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamUnavailable(ProviderError):
    status = 503


class UpstreamTimeout(ProviderError):
    status = 504


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What the gateway lends every provider it builds (shared, opened in the app's lifespan).

    ``http`` is one connection pool for every adapter (one TLS context, one set of limits);
    adapters send absolute URLs and their own auth headers and never close it.
    """

    count_tokens: Callable[[str], int]
    http: httpx.AsyncClient | None = None
    # (catalog model, prompt) -> that model's recorded answer in the shipped data, if any
    # (read by the simulated provider only).
    recorded_answer: Callable[[str, str], str | None] | None = None

    def client(self) -> httpx.AsyncClient:
        if self.http is None:
            raise RuntimeError("this provider needs ProviderContext.http")
        return self.http


class SharedClientProvider:
    """Base of the adapters that hold no connections of their own: they borrow the gateway's
    one HTTP client (``ProviderContext``), which the gateway closes, so ``aclose`` has nothing
    to release."""

    async def aclose(self) -> None:
        return None


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


@runtime_checkable
class EmbeddingProvider(Protocol):
    """A deployment that also serves ``/v1/embeddings`` (OpenAI's shape in and out)."""

    async def embed(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        """Vectors for ``request.input``, in input order, with ``usage``."""
        ...
