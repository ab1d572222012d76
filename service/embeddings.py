"""``POST /v1/embeddings``: the local MiniLM encoder as a model, or a provider's embeddings.

``model`` is the text encoder's id (``engine.text_encoder``, ``all-MiniLM-L6-v2``, 384-d, free,
in-process: the vectors the semantic cache uses, and the router too unless it reads a static
table; texts past 256 tokens keep their head and tail)
or a catalog model with the ``embeddings`` capability, dispatched to its deployments like a
chat model. Embedding requests are not routed: there is no quality trade-off to make.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec

from router.catalog import Catalog
from router.providers import (
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingUsage,
    ProviderError,
)
from router.traffic import TrafficRecord
from router.wire.openai import encode_vector
from service.errors import BadRequest, ModelNotFound, Unsatisfiable, from_provider_error
from service.gateway import Gateway

MAX_LOCAL_TEXTS = 256  # one request's texts share the process's two cores with routing


async def create_embeddings(gateway: Gateway, request: EmbeddingsRequest,
                            ) -> tuple[EmbeddingsResponse, dict[str, str]]:
    """The vectors and the response headers (request id, model, cost)."""
    started = time.perf_counter()
    request_id = f"emb-{uuid.uuid4().hex}"
    engine = gateway.engine
    # With a static routing table the transformer loads on first use: off the event loop.
    encoder = (engine.text_encoder if engine.text.loaded
               else await asyncio.to_thread(lambda: engine.text_encoder))
    if request.model == encoder.id:
        response = await _local(gateway, request)
        cost, deployment = 0.0, "local"
    elif request.model in gateway.catalog:
        model = gateway.catalog.get(request.model)
        if "embeddings" not in model.capabilities:
            raise Unsatisfiable(f"model {model.name!r} is not an embeddings model; use "
                                f"{encoder.id!r} or a model with the embeddings capability",
                                param="model")
        try:
            response, upstream = await gateway.dispatchers[model.name].embed(
                msgspec.structs.replace(request, model=model.name))
        except ProviderError as exc:
            _account(gateway, request_id, model.name, None, 0.0, exc.status, str(exc), started,
                     request.user)
            raise from_provider_error(exc) from exc
        cost = Catalog.cost_usd(model, response.usage.prompt_tokens, 0)
        deployment = upstream.label
    else:
        raise ModelNotFound(f"The model `{request.model}` does not exist: use "
                            f"`{encoder.id}` (local) or a catalog model with the embeddings "
                            "capability (see GET /v1/models)", param="model")
    _account(gateway, request_id, response.model, response.usage, cost, 200, None, started,
             request.user, deployment)
    return response, {"x-contextforge-request-id": request_id,
                      "x-contextforge-model": response.model,
                      "x-contextforge-cost-usd": f"{cost:.8f}"}


async def _local(gateway: Gateway, request: EmbeddingsRequest) -> EmbeddingsResponse:
    encoder = gateway.engine.text_encoder
    texts = request.texts
    if request.dimensions is not None and request.dimensions != encoder.dim:
        raise BadRequest(f"{encoder.id} returns {encoder.dim} dimensions; it cannot shorten "
                         "its vectors (omit `dimensions`)", param="dimensions")
    if len(texts) > MAX_LOCAL_TEXTS:
        raise BadRequest(f"at most {MAX_LOCAL_TEXTS} texts per request to {encoder.id}",
                         param="input")
    if len(texts) == 1 and encoder is gateway.engine.encoder:
        # The batcher encodes what the router reads: the sentence embedding comes first.
        vectors = [(await gateway.batcher.encode(texts[0]))[: encoder.dim]]
    else:  # a batch is one encoder call already; off the event loop
        vectors = list(await asyncio.to_thread(encoder.encode, texts))
    tokens = sum(encoder.count_tokens(t) for t in texts)
    data = [Embedding(index=i, embedding=encode_vector(v, request.encoding_format))
            for i, v in enumerate(vectors)]
    return EmbeddingsResponse(data=data, model=encoder.id,
                              usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))


def _account(gateway: Gateway, request_id: str, model: str, usage: EmbeddingUsage | None,
             cost: float, status: int, error: str | None, started: float, user: str | None,
             deployment: str | None = None) -> None:
    elapsed = time.perf_counter() - started
    m = gateway.metrics
    provider = deployment.split(":", 1)[0] if deployment else "none"
    m.requests.labels("embeddings", provider, model, str(status)).inc()
    m.latency.labels("embeddings", model).observe(elapsed)
    if usage is not None:
        m.tokens.labels("default", model, "input").inc(usage.prompt_tokens)
        m.cost.labels("default", model).inc(cost)
    if gateway.traffic is not None:
        gateway.traffic.write(TrafficRecord(
            id=request_id, ts=time.time(), status=status, tenant="default", user_id=user,
            route="embeddings", model=model, deployment=deployment, cache="bypass",
            input_tokens=usage.prompt_tokens if usage else None, output_tokens=0,
            cost_usd=cost, latency_ms=elapsed * 1e3, error=error))
