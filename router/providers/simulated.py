"""An in-process provider, so the default config serves requests with no API keys.

When the last user message is a prompt of the shipped data (RouterBench), the answer is what
a data model really answered there (``recorded.py``): the deployment's ``answers_as``, else the
catalog model itself when the data has it, else the model it stands in for. Otherwise
it is synthetic but deterministic: the same model and prompt always give the same words,
streamed or not, so clients and tests can compare; its length (12 to 60 words) is derived from
a hash of the prompt. Either is capped by the request's ``max_tokens`` (then ``finish_reason``
is ``"length"``). A ``json_object`` / ``json_schema`` response format yields a JSON object.

Timing and failures come from the deployment's ``simulated`` settings: ``ttft_ms`` before the
first token, ``tokens_per_s`` after it, and ``failure_rate`` (drawn from a seeded generator)
raising ``UpstreamError`` as an upstream 5xx would. One word is one completion token; prompt
tokens are counted with the gateway's tokenizer plus OpenAI's per-message overhead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable

import msgspec
import numpy as np

from router.providers._base import (
    ProviderContext,
    SharedClientProvider,
    UpstreamError,
    UpstreamRejected,
)
from router.providers._kit import ChunkStream, completion_id, usage_of
from router.providers._settings import Settings
from router.wire.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingUsage,
    Usage,
    encode_vector,
    estimate_prompt_tokens,
    message_text,
)

_VOCABULARY = (
    "the answer depends on context and on which constraints matter most here first consider "
    "a simple case then generalise carefully checking each step against known results while "
    "keeping costs low and quality high so the final result is clear correct and useful"
)
_WORDS = tuple(_VOCABULARY.split())
_EMBEDDING_DIM = 1536  # text-embedding-3-small's
# Like a real embeddings API, the simulator refuses lengths no model has (OpenAI's longest is
# 3072): a client must not make it allocate whatever it names.
MAX_EMBEDDING_DIM = 8192


class SimulatedSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the in-process simulated provider behaves for one deployment (its ``simulated``)."""

    ttft_ms: float = 0.0  # time to first token
    tokens_per_s: float = 0.0  # 0: the rest of the answer arrives at once
    failure_rate: float = 0.0  # share of calls that fail as an upstream error would
    seed: int = 0  # failures are drawn from a seeded generator, so runs repeat
    # The data model whose recorded answers this deployment returns (default: the catalog
    # model's own name when the data has it, else its ``stands_in_for``). Separate from the
    # router's stand-in so a simulated catalog can answer as one model while the router still
    # borrows another's predictions: the closed-loop scenario (benchmarks/closed_loop.py).
    answers_as: str | None = None

    def __post_init__(self) -> None:
        if self.ttft_ms < 0 or self.tokens_per_s < 0:
            raise ValueError("ttft_ms and tokens_per_s must be >= 0")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be in [0, 1]")


class SimulatedDeploymentSettings(Settings):
    """The simulated adapter's settings: the common fields and its ``simulated`` block."""

    simulated: SimulatedSettings = SimulatedSettings()


class SimulatedProvider(SharedClientProvider):
    """Deterministic synthetic answers with configurable latency and failures."""

    def __init__(self, settings: SimulatedSettings, count_tokens: Callable[[str], int],
                 recorded_answer: Callable[[str, str], str | None] | None = None):
        self.settings = settings
        self._count = count_tokens
        self._recorded = recorded_answer
        self._rng = random.Random(settings.seed)

    @classmethod
    def from_settings(cls, settings: SimulatedDeploymentSettings,
                      ctx: ProviderContext) -> SimulatedProvider:
        return cls(settings.simulated, ctx.count_tokens, ctx.recorded_answer)

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        self._maybe_fail()
        pieces, finish = self._answer(request)
        s = self.settings
        delay = s.ttft_ms / 1e3 + (len(pieces) / s.tokens_per_s if s.tokens_per_s else 0.0)
        if delay:
            await asyncio.sleep(delay)
        message = AssistantMessage(role="assistant", content="".join(pieces))
        return ChatCompletion(
            id=completion_id(), created=int(time.time()), model=request.model,
            choices=[Choice(index=0, message=message, finish_reason=finish)],
            usage=self._usage(request, len(pieces)),
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatCompletionChunk]:
        self._maybe_fail()
        pieces, finish = self._answer(request)
        s = self.settings
        out = ChunkStream("simulated", request, self._count)
        if s.ttft_ms:
            await asyncio.sleep(s.ttft_ms / 1e3)
        for chunk in out.role():
            yield chunk
        for i, piece in enumerate(pieces):
            if s.tokens_per_s and i:
                await asyncio.sleep(1.0 / s.tokens_per_s)
            yield out.content(piece)
        yield out.finish(finish)
        out.usage = self._usage(request, len(pieces))
        yield out.usage_chunk()

    async def embed(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        """Deterministic unit vectors (seeded by model and text) of ``dimensions`` or 1536."""
        self._maybe_fail()
        dim = request.dimensions or _EMBEDDING_DIM
        if dim > MAX_EMBEDDING_DIM:
            raise UpstreamRejected(f"dimensions must be at most {MAX_EMBEDDING_DIM}")
        data, tokens = [], 0
        for i, text in enumerate(request.texts):
            seed = int.from_bytes(hashlib.sha256(f"{request.model}\0{text}".encode()).digest()[:8])
            v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
            v /= np.linalg.norm(v)
            data.append(Embedding(index=i, embedding=encode_vector(v, request.encoding_format)))
            tokens += self._count(text)
        return EmbeddingsResponse(data=data, model=request.model,
                                  usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))

    def _maybe_fail(self) -> None:
        if self.settings.failure_rate and self._rng.random() < self.settings.failure_rate:
            raise UpstreamError("simulated upstream failure (deployment failure_rate)")

    def _answer(self, request: ChatRequest) -> tuple[list[str], str]:
        """The answer as streamed pieces (one per token) and its finish reason."""
        last_user = next((message_text(m) for m in reversed(request.messages)
                          if m.role == "user"), "")
        as_model = self.settings.answers_as or request.model
        text = self._recorded(as_model, last_user) if self._recorded else None
        if not text:
            digest = hashlib.sha256(f"{request.model}\0{last_user}".encode()).digest()
            n = 12 + digest[0] % 49
            words = [_WORDS[(digest[1 + i % 31] + i) % len(_WORDS)] for i in range(n)]
            topic = " ".join(last_user.split()[:8])
            text = f"[simulated {request.model}] On “{topic}”: " + " ".join(words) + "."
        fmt = request.response_format
        if fmt is not None and fmt.type != "text":
            text = json.dumps({"model": request.model, "answer": text}, ensure_ascii=False)
        pieces = [w + " " for w in text.split(" ")]
        pieces[-1] = pieces[-1].rstrip()
        limit = request.output_limit
        if limit is not None and len(pieces) > limit:
            cut = pieces[:limit]
            cut[-1] = cut[-1].rstrip()
            return cut, "length"
        return pieces, "stop"

    def _usage(self, request: ChatRequest, completion_tokens: int) -> Usage:
        return usage_of(estimate_prompt_tokens(self._count, request), completion_tokens)
