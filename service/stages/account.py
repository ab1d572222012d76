"""The account stage: price the answer, count it in the metrics, write its traffic-log row.

One module for chat, messages and embeddings alike. The price comes from the provider's usage
(the prompt's counted tokens when it reported none); failed requests cost nothing. Requests
that never reached a model (an unknown model, a malformed body) have no row: the log is what
retraining reads, one row per answered or failed model call.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from router.catalog import Catalog
from router.engine import PINNED
from router.requirements import routing_prompt
from router.traffic import CandidateLog, TrafficRecord
from router.wire.openai import ChatRequest, EmbeddingUsage
from service.pipeline import Exchange

if TYPE_CHECKING:
    from service.gateway import Gateway


def cost_usd(ex: Exchange) -> float:
    """What the answer cost: the provider's usage priced by the catalog (nothing for an answer
    the cache gave), plus the calls it paid for and did not use (a hedge's loser, a 200
    refusal it moved on from), which a failed request pays too: the providers billed them."""
    return _answer_cost_usd(ex) + ex.wasted_usd


def _answer_cost_usd(ex: Exchange) -> float:
    if ex.model is None or ex.status != 200 or ex.cache.startswith("hit"):
        return 0.0
    u = ex.usage
    if u is None:  # an answer without usage: the prompt as counted (a stream cut short)
        full = Catalog.cost_usd(ex.model, ex.input_tokens, 0) if ex.upstream else 0.0
    else:
        out = 0 if isinstance(u, EmbeddingUsage) else u.completion_tokens
        full = Catalog.cost_usd(ex.model, u.prompt_tokens, out)
    return full * ex.price_factor


def estimated_cost_usd(ex: Exchange) -> float:
    """A stream's cost as its headers can say it: before the answer's length is known (a
    replay from the cache costs nothing)."""
    if ex.cache.startswith("hit"):
        return 0.0
    assert ex.model is not None and ex.needs is not None
    return Catalog.cost_usd(ex.model, ex.input_tokens, Catalog.expected_output_tokens(
        ex.model, ex.needs.max_output_tokens))


class Account:
    name = "account"
    kinds = frozenset({"chat", "embeddings"})

    async def enter(self, ex: Exchange, gw: Gateway) -> None:
        return None

    def leave(self, ex: Exchange, gw: Gateway) -> None:
        if ex.model is None or ex.deferred:  # deferred: accounted when its answer comes
            return
        if ex.kind == "chat":
            gw.metrics.child(gw.metrics.cache, ex.cache).inc()
        elapsed = time.perf_counter() - ex.started
        ex.cost_usd = cost_usd(ex)
        self._count(ex, gw, elapsed)
        if gw.traffic is not None:
            gw.traffic.write(record(ex, gw, elapsed))

    @staticmethod
    def _count(ex: Exchange, gw: Gateway, elapsed: float) -> None:
        assert ex.model is not None
        m, model, u = gw.metrics, ex.model.name, ex.usage
        provider = ("local" if ex.local else
                    ex.upstream.deployment.provider if ex.upstream else "none")
        m.child(m.requests, ex.kind, provider, model, str(ex.status)).inc()
        m.child(m.latency, ex.kind, model).observe(elapsed)
        if (u is not None and ex.status == 200) or ex.wasted_usd:
            m.child(m.cost, ex.tenant, model).inc(ex.cost_usd)
        if u is not None and ex.status == 200:
            m.child(m.tokens, ex.tenant, model, "input").inc(u.prompt_tokens)
            if not isinstance(u, EmbeddingUsage):
                m.child(m.tokens, ex.tenant, model, "output").inc(u.completion_tokens)
                if ex.ttft_ms is not None:
                    gen_s = elapsed - ex.ttft_ms / 1e3
                    if gen_s > 0 and u.completion_tokens:
                        m.child(m.tokens_per_s, model).observe(u.completion_tokens / gen_s)
        if ex.ttft_ms is not None:
            m.child(m.ttft, model).observe(ex.ttft_ms / 1e3)
        d = ex.decision
        if d is not None and d.arm is not None:
            m.child(m.arm_requests, d.route, d.arm, d.router, str(ex.status)).inc()
            m.child(m.arm_latency, d.route, d.arm).observe(elapsed)
            if ex.status == 200:
                m.child(m.arm_cost, d.route, d.arm, d.router).inc(ex.cost_usd)


def record(ex: Exchange, gw: Gateway, elapsed: float) -> TrafficRecord:
    """The exchange's traffic-log row."""
    assert ex.model is not None
    cfg, d, u = gw.traffic_config, ex.decision, ex.usage
    chat = ex.kind == "chat"
    deployment = "local" if ex.local else ex.upstream.label if ex.upstream else None
    error = ex.error or (f"fell back from {', '.join(ex.tried)}" if ex.tried else None)
    return TrafficRecord(
        id=ex.id, ts=time.time(), status=ex.status, tenant=ex.tenant,
        user_id=ex.request.user, route=ex.route, model=ex.model.name, deployment=deployment,
        cache=ex.cache,
        input_tokens=u.prompt_tokens if u else (ex.input_tokens if chat else None),
        output_tokens=(u.completion_tokens if u else None) if chat else 0,
        cost_usd=ex.cost_usd, latency_ms=elapsed * 1e3, ttft_ms=ex.ttft_ms, error=error,
        stream=ex.stream,
        candidates=[CandidateLog(c.model, c.predicted_quality, c.estimated_cost_usd)
                    for c in d.candidates] if d else None,
        router=d.router if d else None, encoder=d.encoder if d else None,
        prompt=_logged_prompt(ex) if chat and cfg.log_prompts else None,
        # The sentence embedding only (the head of what the router read): the log's vectors
        # stay comparable across routers that read different encoder layers.
        embedding=(ex.embedding[: gw.engine.encoder.dim]
                   if cfg.log_embeddings and ex.embedding is not None else None),
        policy=d.policy if d else ("pinned" if chat and ex.route == PINNED else None),
        propensity=_propensity(ex) if chat else None,
        answer=ex.answer.text if ex.answer is not None else None,
        tool_calls=ex.answer.tool_calls_json if ex.answer is not None else None,
        arm=d.arm if d else None,
        cache_entry=ex.cache_entry,
        project=ex.principal.project,
        credential=ex.principal.credential,
    )


def _propensity(ex: Exchange) -> float | None:
    """The probability the logging policy picked the answering model: the decision's (1.0
    for a model the caller named). None after a fallback: the model that answered was picked
    because another failed, not by the policy, so the row is no bandit sample (its outcome
    still teaches retraining about that model); None for a cache hit, which no policy chose."""
    if ex.tried or ex.cache.startswith("hit"):
        return None
    return ex.decision.propensity if ex.decision is not None else 1.0


def _logged_prompt(ex: Exchange) -> str | None:
    """What the router embedded; for a pinned request, what it would have embedded."""
    if ex.prompt is not None:
        return ex.prompt
    return routing_prompt(ex.request) if isinstance(ex.request, ChatRequest) else None
