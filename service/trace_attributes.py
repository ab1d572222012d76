"""What a request's spans say: OpenTelemetry GenAI attributes and ContextForge's own.

Plain dicts built from an ``Exchange`` (no OpenTelemetry import here: ``service.tracing`` sets
them on spans). Names follow the GenAI semantic conventions
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/): ``gen_ai.operation.name``,
``gen_ai.provider.name`` (the conventions' well-known values where one names the provider),
``gen_ai.request.*``, ``gen_ai.response.*``, ``gen_ai.usage.*`` and ``error.type``. What the
conventions have no name for is under ``contextforge.``: the route, the cache outcome, the
cost, the tenant, the router version, and a routing decision's candidates as parallel arrays
(span attributes hold arrays of primitives, not objects).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from router.wire.openai import ChatCompletion, ChatRequest, EmbeddingUsage

if TYPE_CHECKING:
    from router.dispatch import Upstream
    from router.engine import Decision
    from service.pipeline import Exchange

Attributes = dict[str, Any]

# Our adapter names -> the conventions' well-known ``gen_ai.provider.name`` values; the rest
# (self-hosted servers, generic OpenAI-compatible ones) are named as configured.
PROVIDER_NAMES = {
    "anthropic": "anthropic",
    "azure": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "gemini": "gcp.gemini",
    "groq": "groq",
    "mistral": "mistral_ai",
    "openai": "openai",
    "perplexity": "perplexity",
    "vertex": "gcp.vertex_ai",
}
# An answer no provider gave: the gateway's own encoder, or its cache.
GATEWAY = "contextforge"


def provider_name(adapter: str) -> str:
    """``gen_ai.provider.name`` of a deployment's adapter."""
    return PROVIDER_NAMES.get(adapter, adapter)


def operation(ex: Exchange) -> str:
    """``gen_ai.operation.name``: ``chat`` or ``embeddings``."""
    return ex.kind


def request_attributes(ex: Exchange) -> Attributes:
    """What the client asked, known before any stage ran: ``gen_ai.request.model`` is its
    ``model`` as sent (a catalog model, a route name or ``auto``)."""
    r = ex.request
    out: Attributes = {"gen_ai.operation.name": operation(ex), "gen_ai.request.model": r.model,
                       "contextforge.request.id": ex.id}
    if isinstance(r, ChatRequest):
        if r.output_limit is not None:
            out["gen_ai.request.max_tokens"] = r.output_limit
        if r.temperature is not None:
            out["gen_ai.request.temperature"] = r.temperature
        if r.top_p is not None:
            out["gen_ai.request.top_p"] = r.top_p
        if r.seed is not None:
            out["gen_ai.request.seed"] = r.seed
        out["contextforge.stream"] = r.stream
    elif r.dimensions is not None:
        out["gen_ai.embeddings.dimension.count"] = r.dimensions
    return out


def outcome_attributes(ex: Exchange, finish_reasons: list[str] | None = None,
                       response_model: str | None = None) -> Attributes:
    """What came of the request, once its stages left (the cost is priced by then).
    ``finish_reasons`` and ``response_model``: a stream's, as its chunks said them."""
    out: Attributes = {"contextforge.tenant": ex.tenant, "contextforge.status": ex.status}
    if ex.principal.project is not None:
        out["contextforge.project"] = ex.principal.project
    if ex.model is None:  # refused before a model was chosen
        return out
    out["contextforge.route"] = ex.route
    out["contextforge.model"] = ex.model.name
    out["contextforge.cost_usd"] = ex.cost_usd
    if ex.kind == "chat":
        out["contextforge.cache"] = ex.cache
    if ex.upstream is not None:
        out["gen_ai.provider.name"] = provider_name(ex.upstream.deployment.provider)
        out["contextforge.deployment"] = ex.upstream.label
    else:  # the local encoder, a cache hit, or no deployment reached
        out["gen_ai.provider.name"] = GATEWAY
    if ex.decision is not None:
        out["contextforge.router"] = ex.decision.router
        if ex.decision.arm is not None:
            out["contextforge.arm"] = ex.decision.arm
    if ex.tried:
        out["contextforge.fallback.from"] = list(ex.tried)
    if ex.wasted_usd:
        out["contextforge.wasted_usd"] = ex.wasted_usd
    if ex.ttft_ms is not None:
        out["contextforge.ttft_ms"] = ex.ttft_ms
    if ex.status == 200:
        out.update(_response(ex, finish_reasons, response_model))
    return out


def _response(ex: Exchange, finish_reasons: list[str] | None,
              response_model: str | None) -> Attributes:
    assert ex.model is not None
    result = ex.result
    out: Attributes = {"gen_ai.response.id": ex.id}
    if isinstance(result, ChatCompletion):
        out["gen_ai.response.model"] = result.model
        finish_reasons = [c.finish_reason for c in result.choices if c.finish_reason]
    elif result is not None:  # embeddings
        out["gen_ai.response.model"] = result.model
    else:
        out["gen_ai.response.model"] = response_model or ex.model.name
    if finish_reasons:
        out["gen_ai.response.finish_reasons"] = finish_reasons
    u = ex.usage
    if u is not None:
        out["gen_ai.usage.input_tokens"] = u.prompt_tokens
        if not isinstance(u, EmbeddingUsage):
            out["gen_ai.usage.output_tokens"] = u.completion_tokens
    return out


def error_type(ex: Exchange, exc: BaseException | None) -> str:
    """``error.type``: the failure's class (low cardinality, as the conventions ask), or the
    HTTP status when the failure came without one (a stream cut mid-answer)."""
    if exc is not None:
        return "cancelled" if not isinstance(exc, Exception) else type(exc).__qualname__
    return str(ex.status)


def route_attributes(d: Decision) -> Attributes:
    """A routing decision: the choice, and every candidate's predicted quality and estimated
    cost (parallel arrays, in the decision's order; NaN where no quality is predicted)."""
    return {
        "contextforge.route": d.route,
        "contextforge.route.model": d.model,
        "contextforge.route.mode": d.mode,
        "contextforge.route.policy": d.policy,
        "contextforge.route.explored": d.explored,
        "contextforge.route.propensity": d.propensity,
        "contextforge.router": d.router,
        "contextforge.candidate.models": [c.model for c in d.candidates],
        "contextforge.candidate.predicted_quality": [
            float("nan") if c.predicted_quality is None else c.predicted_quality
            for c in d.candidates],
        "contextforge.candidate.estimated_cost_usd": [c.estimated_cost_usd
                                                      for c in d.candidates],
        "contextforge.candidate.eligible": [c.eligible for c in d.candidates],
    }


def stage_attributes(name: str, ex: Exchange) -> Attributes:
    """What a stage decided, on its span once it entered without failing."""
    if name == "guard":
        out: Attributes = {"contextforge.tenant": ex.tenant}
        if ex.principal.project is not None:
            out["contextforge.project"] = ex.principal.project
        return out
    if name == "cache":
        out = {"contextforge.cache": ex.cache}
        if ex.cache_similarity is not None:
            out["contextforge.cache.similarity"] = ex.cache_similarity
        return out
    if name == "route":
        if ex.decision is not None:
            return route_attributes(ex.decision)
        return {"contextforge.route": ex.route,
                "contextforge.route.model": ex.model.name if ex.model else ""}
    if name == "dispatch" and ex.upstream is not None:
        out = {"contextforge.deployment": ex.upstream.label,
               "gen_ai.provider.name": provider_name(ex.upstream.deployment.provider)}
        if ex.tried:
            out["contextforge.fallback.from"] = list(ex.tried)
        return out
    return {}


def attempt_attributes(u: Upstream, model: str, op: str, *, hedge: bool) -> Attributes:
    """One call to a deployment, as a GenAI client span: the model as the upstream knows it,
    and the upstream's host and port (``server.*``, as the conventions ask of a client span)."""
    d = u.deployment
    out: Attributes = {"gen_ai.operation.name": op,
                       "gen_ai.provider.name": provider_name(d.provider),
                       "gen_ai.request.model": d.upstream_model(model),
                       "contextforge.deployment": u.label,
                       "contextforge.attempt.hedge": hedge}
    if d.endpoint:
        out.update(_server(d.endpoint))
    return out


@lru_cache(maxsize=256)
def _server(endpoint: str) -> dict[str, str | int]:
    """``server.address`` / ``server.port`` of an endpoint URL (never its path or query: a
    key may sit in either)."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return {}
    return {"server.address": parts.hostname or "", "server.port": port}
