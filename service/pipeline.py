"""The request path: one ``Exchange`` flows through the gateway's stages, in one list.

    parse (the front end) -> [guard] -> [cache] -> route -> dispatch -> account -> respond

A stage is one small object (``Stage``): ``enter`` on the way in, in list order, and ``leave``
on the way out, in reverse order, once the answer is complete, whether it succeeded or failed
(for a stream: when the stream ends or the client leaves). A stage that answers on its own (a
cache hit) sets ``Exchange.answered`` and the stages after it are skipped on the way in.
Adding a stage (the guard, the cache) is one module and one line in ``STAGES``
(``service.gateway``). Front ends (OpenAI chat and embeddings, Anthropic messages) build the
exchange from their wire format, run it, and format ``result`` / ``chunks``.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from router.config import ModelEntry
from router.engine import PINNED, Decision
from router.governance.principal import OPEN, Principal
from router.limits.budgets import Hold
from router.limits.windows import Charge
from router.requirements import Requirements
from router.wire.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingUsage,
    Usage,
)
from service.errors import to_api_error

if TYPE_CHECKING:
    from router.dispatch import Upstream
    from service.answer import Answer
    from service.gateway import Gateway
    from service.tracing import RequestTrace

Kind = Literal["chat", "embeddings"]
CLIENT_GONE = 499  # nginx's status for a client that left before its answer
# A cancelled request cannot tell why: the client hung up, or the drain ran out at shutdown.
CANCELLED = "cancelled: the client disconnected, or the server's drain ended at shutdown"


@dataclass(slots=True)
class Probe:
    """What the semantic tier compares of a request: its last user turn, that turn's scope
    (``router.cache.keys.scope_key``) and, once encoded, the turn's vector (the text
    encoder's) and static vector (the routing table's, for the cache's gate)."""

    text: str
    scope: str
    vector: np.ndarray | None = None
    static: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Encoded:
    """A text as the routing batcher encoded it (``layers`` as the router reads them; the first
    ``dim`` values are the sentence embedding), so a later stage that needs the same text's
    vector does not encode it again. ``encoder`` is the encoder that made it."""

    text: str
    layers: tuple[int, ...]
    vector: np.ndarray
    encoder: object


@dataclass(slots=True)
class Exchange:
    """One request on its way through the stages: what it asked, what was decided, what came
    back. Stages read and fill it; ``service.stages.account`` turns it into the log row."""

    kind: Kind
    request: ChatRequest | EmbeddingsRequest
    id: str = ""  # the response's ``id``, the log row's key, feedback's handle
    started: float = field(default_factory=time.perf_counter)
    principal: Principal = OPEN  # who calls, from the credential (``service.auth``)
    tenant: str = "default"  # the principal's organisation
    # route
    route: str = PINNED
    model: ModelEntry | None = None
    local: bool = False  # embeddings by the gateway's own encoder
    needs: Requirements | None = None
    input_tokens: int = 0
    prompt: str | None = None  # what the router embedded
    embedding: np.ndarray | None = None
    decision: Decision | None = None
    # regions the request's own header asks for, and those it may reach from all sources
    # (``service.regions``); None: no requirement
    regions_asked: frozenset[str] | None = None
    regions: frozenset[str] | None = None
    # dispatch
    upstream: Upstream | None = None  # the deployment that answered
    tried: tuple[str, ...] = ()  # models that failed before this one (route-level fallback)
    # calls paid for and not used: a hedge's loser, a 200 refusal the request moved on from
    wasted_usd: float = 0.0
    ttft_ms: float | None = None
    # outcome
    answered: bool = False
    result: ChatCompletion | EmbeddingsResponse | None = None
    chunks: AsyncIterator[ChatCompletionChunk] | None = None
    usage: Usage | EmbeddingUsage | None = None
    answer: Answer | None = None  # kept for the log when ``traffic.log_answers``
    status: int = 200
    error: str | None = None
    cache: str = "bypass"
    cache_key: str | None = None  # the exact key, when the cache may serve or keep it
    cache_store: bool = False  # keep the answer on the way out (a cacheable miss)
    cache_ttl_s: float = 0.0
    cache_entry: str | None = None  # the entry that answered a hit
    cache_similarity: float | None = None  # a hit's cosine to the query (exact: 1)
    cache_probe: Probe | None = None  # what the semantic tier compares, when it may
    cache_generation: tuple[int, int] = (0, 0)  # erasures of its tenant and user seen at entry
    encoded: Encoded | None = None  # the last text encoded for this request (shared by stages)
    cost_usd: float = 0.0
    # The share of the list price paid: below 1 for an answer of a provider's batch API.
    price_factor: float = 1.0
    # Admitted, routed and held for a provider's batch API (``service.stages.forward``): no
    # answer yet, so nothing is accounted or cached now; ``service.batch_native`` accounts
    # it when the provider's batch answers.
    deferred: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # more response headers (limits)
    # limits: concurrency slots held, token windows to correct, the budget reservation
    slots: list[tuple[str, int]] = field(default_factory=list)
    token_charges: list[Charge] = field(default_factory=list)
    hold: Hold | None = None

    def __post_init__(self) -> None:
        if not self.id:
            prefix = "chatcmpl-" if self.kind == "chat" else "emb-"
            self.id = prefix + os.urandom(16).hex()  # uuid4's randomness at a third of its cost

    @property
    def stream(self) -> bool:
        return isinstance(self.request, ChatRequest) and self.request.stream

    def fail(self, exc: BaseException) -> None:
        """Record why the request ended without an answer (for the log and the metrics)."""
        if isinstance(exc, Exception):
            err = to_api_error(exc)
            self.status, self.error = err.status, str(exc) or err.message
        else:  # cancelled: the client left, or the server is shutting down
            self.status, self.error = CLIENT_GONE, CANCELLED


class Stage(Protocol):
    """One step of the request path."""

    name: str
    kinds: frozenset[Kind]  # the exchanges it takes part in

    async def enter(self, ex: Exchange, gw: Gateway) -> None:
        """On the way in; may set ``ex.answered`` to answer without the later stages."""
        ...

    def leave(self, ex: Exchange, gw: Gateway) -> None:
        """On the way out, always (also after a failure): settle, count, record."""
        ...


class Pipeline:
    """Runs exchanges through ``stages``."""

    def __init__(self, stages: Sequence[Stage]):
        self.stages = tuple(stages)
        self._by_kind = {k: tuple(s for s in self.stages if k in s.kinds)
                         for k in ("chat", "embeddings")}

    async def run(self, ex: Exchange, gw: Gateway) -> Exchange:
        """Take ``ex`` through every stage. A failure is recorded on ``ex``, the stages leave,
        and it is raised; a stream's stages leave when the stream ends."""
        tracing = getattr(gw, "tracing", None)  # None too for a test's stand-in gateway
        if tracing is not None:
            return await self._traced(ex, gw, tracing.begin(ex))
        stages = self._by_kind[ex.kind]
        try:
            for stage in stages:
                await stage.enter(ex, gw)
                if ex.answered:
                    break
        except BaseException as exc:
            ex.fail(exc)
            self._leave(ex, gw, stages)
            raise
        if ex.chunks is not None:
            ex.chunks = _Closing(ex, gw, stages, ex.chunks, self._leave)
        else:
            self._leave(ex, gw, stages)
        return ex

    async def _traced(self, ex: Exchange, gw: Gateway, trace: RequestTrace) -> Exchange:
        """``run`` inside the request's span (``service.tracing``), each stage's ``enter`` in
        a child span; the request span ends after the stages left (a stream's, when it
        ends). A second copy of ``run``'s few lines, so that with tracing off the request
        path makes no span and no extra call."""
        stages = self._by_kind[ex.kind]
        try:
            for stage in stages:
                with trace.stage(stage.name, ex):
                    await stage.enter(ex, gw)
                if ex.answered:
                    break
        except BaseException as exc:
            ex.fail(exc)
            try:
                self._leave(ex, gw, stages)
            finally:
                trace.end(ex, exc)
            raise
        finally:
            trace.detach()
        if ex.chunks is not None:
            def leave(ex: Exchange, gw: Gateway, stages: Sequence[Stage]) -> None:
                try:
                    self._leave(ex, gw, stages)
                finally:
                    trace.end(ex)

            ex.chunks = _Closing(ex, gw, stages, trace.observe(ex.chunks), leave)
        else:
            try:
                self._leave(ex, gw, stages)
            finally:
                trace.end(ex)
        return ex

    @staticmethod
    def _leave(ex: Exchange, gw: Gateway, stages: Sequence[Stage]) -> None:
        for stage in reversed(stages):
            stage.leave(ex, gw)


class _Closing:
    """A stream's chunks, and the stages' leaving once they end — also when the stream is
    closed before its first chunk was read (a client gone before the body started), which an
    async generator's ``finally`` would never see."""

    def __init__(self, ex: Exchange, gw: Gateway, stages: Sequence[Stage],
                 chunks: AsyncIterator[ChatCompletionChunk], leave) -> None:
        self._ex, self._gw, self._stages, self._chunks = ex, gw, stages, chunks
        self._leave, self._done = leave, False

    def __aiter__(self) -> _Closing:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        if self._done:
            raise StopAsyncIteration
        try:
            return await self._chunks.__anext__()
        except BaseException:  # the end, a failure, or a cancellation: settle now
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            await self._chunks.aclose()  # type: ignore[attr-defined]
        finally:
            self._leave(self._ex, self._gw, self._stages)
