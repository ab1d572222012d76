"""Dispatch: pick a deployment of the chosen model, and fail over when it fails.

A model may be served by several deployments (regions, providers, keys). ``Dispatcher`` holds
one model's deployments and, per call:

1. orders them by weighted random choice among those whose circuit breaker lets calls through
   (weights from the config: ``weight: 3`` takes three times the traffic of ``weight: 1``);
2. calls them in that order, each under its own timeout, until one answers; a failure that
   another deployment could survive (``ProviderError.retryable``: 5xx, 429, timeouts,
   unreachable) moves on, one that it could not (the upstream rejected the request as invalid)
   goes straight back to the client;
3. with fewer deployments than ``max_attempts``, retries the list after a short jittered
   backoff; a 429's ``Retry-After`` cools that deployment down for as long as it asked.

Streams fail over only until their first chunk: after that the client has the answer's start
and a switch would splice two answers.

``CircuitBreaker``: after ``failure_threshold`` consecutive failures a deployment is skipped for
``cooldown_s``; then one probe call goes through (half-open) and its outcome closes or reopens
the breaker. When every deployment is open, the call fails fast with 503 and a Retry-After of
the soonest reopening: hammering a dead upstream only adds latency.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from router.config import Config, Deployment, DispatchConfig
from router.providers import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    EmbeddingProvider,
    EmbeddingsRequest,
    EmbeddingsResponse,
    Provider,
    ProviderContext,
    ProviderError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    build_provider,
)
from router.secrets import Scrubber, deployment_secrets, mask_url

log = logging.getLogger("contextforge.dispatch")

T = TypeVar("T")
FailureHook = Callable[["Upstream", str, ProviderError], None]


@dataclass(slots=True)
class CircuitBreaker:
    failure_threshold: int
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False

    @property
    def state(self) -> str:
        if self.open_until == 0.0:
            return "closed"
        return "open" if self.clock() < self.open_until else "half-open"

    def allows(self) -> bool:
        """Whether a call may go through now (one probe at a time when half-open)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.failures, self.open_until, self.probing = 0, 0.0, False

    def failure(self, cool_for: float | None = None) -> None:
        self.failures += 1
        self.probing = False
        if cool_for is not None:
            self.open_until = max(self.open_until, self.clock() + cool_for)
        elif self.failures >= self.failure_threshold or self.open_until:
            self.open_until = self.clock() + self.cooldown_s


@dataclass(slots=True)
class Upstream:
    """One deployment of a model, with its adapter and health."""

    label: str  # what logs and metrics name it by: never a key
    deployment: Deployment
    provider: Provider
    breaker: CircuitBreaker
    timeout_s: float
    calls: int = field(default=0)
    scrub: Scrubber = field(default_factory=lambda: Scrubber(()))

    def unexpected(self, exc: Exception) -> ProviderError:
        """An ``UpstreamError`` for anything but a ``ProviderError`` an adapter raised (a bug,
        or the HTTP client refusing a request), logged with where it came from; the message
        is scrubbed of this deployment's secrets, and the client sees the type alone."""
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f" at {frame.filename}:{frame.lineno}" if frame else ""
        log.error("deployment %s raised %s%s: %s", self.label, type(exc).__name__, where,
                  self.scrub(str(exc)))
        return UpstreamError(f"{self.deployment.provider} adapter failed "
                             f"({type(exc).__name__})")

    def clean(self, exc: ProviderError) -> ProviderError:
        """``exc`` with this deployment's secrets masked in its message (it reaches clients
        and the log)."""
        if self.scrub and exc.args:
            exc.args = (self.scrub(str(exc.args[0])), *exc.args[1:])
        return exc


def deployment_label(d: Deployment, model: str) -> str:
    where = mask_url(d.endpoint) if d.endpoint else d.region or "default"
    return f"{d.provider}:{d.upstream_model(model)}@{where}"


def upstream_for(d: Deployment, model: str, provider: Provider, dispatch: DispatchConfig,
                 timeout_s: float) -> Upstream:
    """A deployment's ``Upstream``, its label and secret scrubber included."""
    return Upstream(deployment_label(d, model), d, provider,
                    CircuitBreaker(dispatch.failure_threshold, dispatch.cooldown_s),
                    d.timeout_s or timeout_s,
                    scrub=Scrubber(deployment_secrets(d.api_key, d.api_key_env, d.headers,
                                                      d.endpoint)))


class Dispatcher:
    """One model's deployments: load balancing, failover, retries, circuit breakers."""

    def __init__(self, model: str, upstreams: list[Upstream], config: DispatchConfig,
                 *, rng: random.Random | None = None,
                 on_failure: FailureHook | None = None):
        if not upstreams:
            raise ValueError(f"model {model!r} has no deployments")
        self.model = model
        self.upstreams = upstreams
        self.config = config
        self._rng = rng or random.Random()
        self._on_failure = on_failure

    def order(self) -> list[Upstream]:
        """The deployments to try, in order: weighted-random among those the breakers allow."""
        ready = [u for u in self.upstreams if u.breaker.state != "open"]
        out: list[Upstream] = []
        while ready:
            weights = [u.deployment.weight for u in ready]
            pick = self._rng.choices(range(len(ready)), weights)[0]
            out.append(ready.pop(pick))
        return out

    async def complete(self, request: ChatRequest) -> tuple[ChatCompletion, Upstream]:
        """The first deployment's answer that succeeds, and which one gave it."""
        return await self._attempts(lambda u: u.provider.complete(request))

    async def embed(self, request: EmbeddingsRequest) -> tuple[EmbeddingsResponse, Upstream]:
        """Embeddings from the first deployment that serves them."""

        async def call(u: Upstream) -> EmbeddingsResponse:
            if not isinstance(u.provider, EmbeddingProvider):
                raise UpstreamRejected(f"provider {u.deployment.provider!r} serves no "
                                       "embeddings")
            return await u.provider.embed(request)

        return await self._attempts(call)

    async def open_stream(self, request: ChatRequest,
                          ) -> tuple[ChatCompletionChunk | None,
                                     AsyncIterator[ChatCompletionChunk], Upstream]:
        """A stream whose first chunk has arrived (``None``: an empty stream), the rest of it,
        and its deployment. Later chunks must be read under ``next_chunk``'s timeout."""

        async def first(u: Upstream) -> tuple[ChatCompletionChunk | None,
                                              AsyncIterator[ChatCompletionChunk]]:
            chunks = u.provider.stream(request)
            try:
                return await anext(chunks), chunks
            except StopAsyncIteration:
                return None, chunks
            except BaseException:
                await chunks.aclose()  # type: ignore[attr-defined]
                raise

        (chunk, rest), upstream = await self._attempts(first)
        return chunk, rest, upstream

    async def _attempts(self, call: Callable[[Upstream], Awaitable[T]]) -> tuple[T, Upstream]:
        cfg = self.config
        last: ProviderError | None = None
        tried: set[int] = set()
        attempt = 0
        while attempt < cfg.max_attempts:
            order = self.order()
            if not order:
                break
            for u in order:
                if attempt >= cfg.max_attempts:
                    break
                if not u.breaker.allows():
                    continue
                if id(u) in tried and cfg.backoff_ms:
                    await asyncio.sleep(self._backoff(attempt))
                tried.add(id(u))
                attempt += 1
                u.calls += 1
                try:
                    async with asyncio.timeout(u.timeout_s):
                        result = await call(u)
                except TimeoutError:
                    last = UpstreamTimeout(f"{u.deployment.provider} upstream gave no answer "
                                           f"in {u.timeout_s:g} s")
                    self._failed(u, last)
                    continue
                except ProviderError as exc:
                    failure = exc
                except Exception as exc:  # an adapter bug fails this deployment, not the client
                    failure = u.unexpected(exc)
                else:
                    u.breaker.success()
                    return result, u
                u.clean(failure)
                if self._on_failure is not None:
                    self._on_failure(u, self.model, failure)
                if not failure.retryable:
                    u.breaker.success()  # it answered: the request was at fault
                    raise failure
                last = failure
                self._failed(u, failure)
        if last is not None:
            raise last
        raise self._all_open()

    def _failed(self, u: Upstream, exc: ProviderError) -> None:
        if isinstance(exc, UpstreamTimeout) and self._on_failure is not None:
            self._on_failure(u, self.model, exc)
        cool = exc.retry_after if isinstance(exc, UpstreamRateLimited) else None
        u.breaker.failure(cool)

    def _backoff(self, attempt: int) -> float:
        base = self.config.backoff_ms / 1e3 * (2 ** max(0, attempt - 1))
        return base * (0.5 + self._rng.random())

    def _all_open(self) -> UpstreamUnavailable:
        wait = min((u.breaker.open_until - u.breaker.clock() for u in self.upstreams),
                   default=0.0)
        exc = UpstreamUnavailable(f"every deployment of {self.model!r} is cooling down after "
                                  "repeated failures")
        exc.retry_after = max(1.0, wait)
        return exc


def build_dispatchers(config: Config, ctx: ProviderContext, on_failure: FailureHook | None = None,
                      *, reuse: dict[str, Dispatcher] | None = None) -> dict[str, Dispatcher]:
    """One dispatcher per catalog model over its deployments' adapters.

    ``reuse``: the dispatchers in service now; a model whose deployments did not change keeps
    its dispatcher, so a catalog edit resets no circuit breaker and drops no connection."""
    out = {}
    for m in config.models:
        deployments = config.deployments(m)
        old = (reuse or {}).get(m.name)
        if (old is not None and old.config == config.dispatch
                and [u.deployment for u in old.upstreams] == deployments):
            out[m.name] = old
            continue
        upstreams = [
            upstream_for(d, m.name, build_provider(d, ctx), config.dispatch,
                         config.server.upstream_timeout_s)
            for d in deployments
        ]
        out[m.name] = Dispatcher(m.name, upstreams, config.dispatch, on_failure=on_failure)
    return out
