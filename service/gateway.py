"""The request pipeline behind ``/v1/chat/completions``: route -> provider -> account -> respond.

``Gateway.plan`` resolves the request's ``model`` (a catalog model or alias, a route, or
``auto`` = the default route), checks hard requirements and asks the routing engine; ``complete``
and ``open_stream`` call the chosen model's provider under the upstream timeout and price the
answer. HTTP concerns (parsing, auth, status codes) stay in ``service.app`` and ``errors``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import numpy as np

from router.catalog import Catalog
from router.config import Config, ModelEntry, TrafficConfig
from router.dispatch import Dispatcher, Upstream, build_dispatchers
from router.embedding import MicroBatcher
from router.engine import Decision, RoutingEngine
from router.policy import NoEligibleModel
from router.providers import (
    ENCODER,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ProviderContext,
    ProviderError,
    UpstreamTimeout,
    Usage,
    check_deployments,
    check_providers,
)
from router.traffic import CandidateLog, TrafficLog, TrafficRecord
from service.errors import APIError, ModelNotFound, Unsatisfiable, error_event, from_provider_error
from service.metrics import Metrics
from service.prompt import Requirements, conversation_text, requirements, routing_prompt

log = logging.getLogger("contextforge.gateway")

NO_ROUTE = "none"  # x-contextforge-route when the client named a concrete model


@dataclass(slots=True)
class Plan:
    """One request, routed: what to call, what to tell the client, what to log."""

    id: str  # the request id: the response's ``id``, the log row's key, feedback's handle
    request: ChatRequest  # ``model`` is the chosen catalog model's name
    model: ModelEntry
    route: str
    dispatcher: Dispatcher
    input_tokens: int
    started: float
    decision: Decision | None = None
    prompt: str | None = None  # what the router embedded
    embedding: np.ndarray | None = None
    upstream: Upstream | None = None  # the deployment that answered
    ttft_ms: float | None = None
    stream: bool = False
    needs: Requirements | None = None
    tried: tuple[str, ...] = ()  # models that failed before this one (route-level fallback)

    def headers(self, cost_usd: float) -> dict[str, str]:
        return {
            "x-contextforge-request-id": self.id,
            "x-contextforge-model": self.model.name,
            "x-contextforge-route": self.route,
            "x-contextforge-cache": "bypass",
            "x-contextforge-cost-usd": f"{cost_usd:.8f}",
        }


class Gateway:
    """Routing, dispatch and accounting for chat requests; built in the app's lifespan."""

    def __init__(self, engine: RoutingEngine, batcher: MicroBatcher,
                 dispatchers: dict[str, Dispatcher], *, metrics: Metrics, ctx: ProviderContext,
                 traffic: TrafficLog | None = None, traffic_config: TrafficConfig | None = None):
        self.engine = engine
        self.catalog = engine.catalog
        self.batcher = batcher
        self.dispatchers = dispatchers
        self.metrics = metrics
        self.ctx = ctx
        self.traffic = traffic
        self.traffic_config = traffic_config or TrafficConfig()

    @property
    def config(self) -> Config:
        return self.engine.config

    def reconfigure(self, config: Config) -> None:
        """Serve ``config``'s catalog, routes and deployments from the next request on.

        Everything is built before anything is swapped, so a bad config (``ConfigError``,
        e.g. a stand-in the router does not know, a missing provider key) changes nothing.
        In-flight requests finish on the plan they made.
        """
        check_providers(config)
        check_deployments(config)
        engine = RoutingEngine(config, self.engine.encoder, self.engine.router)
        dispatchers = build_dispatchers(config, self.ctx, self.metrics.upstream_failure,
                                        reuse=self.dispatchers)
        self.engine, self.catalog, self.dispatchers = engine, engine.catalog, dispatchers

    async def plan(self, request: ChatRequest) -> Plan:
        """Choose the model; ``ModelNotFound`` (404) or ``Unsatisfiable`` (422) otherwise."""
        started = time.perf_counter()
        needs = requirements(request)
        n_in = self.engine.encoder.count_tokens(conversation_text(request))
        target = self.engine.config.default_route if request.model == "auto" else request.model
        decision = prompt = emb = None
        if target in self.engine.routes:
            prompt = routing_prompt(request)
            decision, emb = await self._route(request, prompt, target, needs, n_in)
            model, route = self.catalog.get(decision.model), target
            self.metrics.decisions.labels(route, model.name).inc()
            self.metrics.decision_time.observe(time.perf_counter() - started)
        elif target in self.catalog:
            model, route = self.catalog.get(target), NO_ROUTE
            why = unmet(model, needs, n_in)
            if why:
                raise Unsatisfiable(f"model {model.name!r} cannot serve this request: {why}",
                                    param="model")
        else:
            raise ModelNotFound(f"The model `{request.model}` does not exist: use a catalog "
                                "model, a route or `auto` (see GET /v1/models)", param="model")
        self.metrics.cache.labels("bypass").inc()
        chosen = msgspec.structs.replace(request, model=model.name)
        return Plan(f"chatcmpl-{uuid.uuid4().hex}", chosen, model, route,
                    self.dispatchers[model.name], n_in, started, decision, prompt, emb,
                    stream=request.stream, needs=needs)

    async def _route(self, request: ChatRequest, prompt: str, route: str, needs: Requirements,
                     n_in: int) -> tuple[Decision, np.ndarray]:
        # The model reads the whole conversation: the engine prices it and checks context
        # windows against its token count, not the routing prompt's.
        out = needs.max_output_tokens or 0
        emb = await self.batcher.encode(self.engine.router.routing_texts([prompt])[0])
        try:
            decision = self.engine.decide(
                prompt, route=route, embedding=emb, required=needs.capabilities,
                max_output_tokens=needs.max_output_tokens, input_tokens=n_in)
        except NoEligibleModel:
            caps = ", ".join(sorted(needs.capabilities)) or "no special capabilities"
            raise Unsatisfiable(
                f"no model on route {route!r} satisfies this request: it needs {caps} and "
                f"{n_in} input + {out} output tokens of context", param="model") from None
        return decision, emb

    def _fallback(self, plan: Plan, exc: ProviderError) -> bool:
        """Switch a routed plan to the next-best eligible model after every deployment of its
        model failed; ``False`` when there is none (or fallback is off, or the request was
        at fault, or the client named a concrete model)."""
        limit = self.engine.config.dispatch.fallback_models
        if (not exc.retryable or plan.decision is None or plan.needs is None
                or len(plan.tried) >= limit):
            return False
        failed = (*plan.tried, plan.model.name)
        allowed = {c.model for c in plan.decision.candidates if c.eligible} - set(failed)
        if not allowed or plan.decision.route not in self.engine.routes:
            return False
        try:
            decision = self.engine.decide(
                plan.prompt or "", route=plan.decision.route, embedding=plan.embedding,
                required=plan.needs.capabilities, max_output_tokens=plan.needs.max_output_tokens,
                allowed=allowed, input_tokens=plan.input_tokens)
        except (NoEligibleModel, KeyError):
            return False
        if decision.model not in self.catalog:
            return False
        log.warning("%s failed (%s); falling back to %s", plan.model.name, exc.status,
                    decision.model)
        self.metrics.upstream_fallbacks.labels(plan.model.name, decision.model).inc()
        plan.tried = failed
        plan.model = self.catalog.get(decision.model)
        plan.request = msgspec.structs.replace(plan.request, model=plan.model.name)
        plan.dispatcher = self.dispatchers[plan.model.name]
        plan.decision = decision
        return True

    async def complete(self, plan: Plan) -> tuple[ChatCompletion, dict[str, str]]:
        """The answer (failing over between deployments, then to the route's next-best
        model) and the headers with its cost."""
        while True:
            try:
                completion, plan.upstream = await plan.dispatcher.complete(plan.request)
                break
            except ProviderError as exc:
                if self._fallback(plan, exc):
                    continue
                self._account(plan, None, exc.status, str(exc))
                raise from_provider_error(exc) from exc
        completion = msgspec.structs.replace(completion, id=plan.id)
        cost = self._account(plan, completion.usage, 200, None)
        return completion, plan.headers(cost)

    async def open_chunks(self, plan: Plan,
                          ) -> tuple[AsyncIterator[ChatCompletionChunk], dict[str, str]]:
        """The answer's chunks (the last one carries ``usage`` and no choices) and headers.

        Failover happens until the first chunk, which is awaited here, so a failing upstream
        is still an HTTP error status; a later failure raises ``APIError`` from the iterator.
        The request is accounted when the iterator ends or is closed. The cost header is the
        estimate (the answer's length is unknown when headers go out). Front ends (OpenAI
        SSE, Anthropic events) format the chunks.
        """
        while True:
            try:
                first, rest, plan.upstream = await plan.dispatcher.open_stream(plan.request)
                break
            except ProviderError as exc:
                if self._fallback(plan, exc):
                    continue
                self._account(plan, None, exc.status, str(exc))
                raise from_provider_error(exc) from exc
        plan.ttft_ms = (time.perf_counter() - plan.started) * 1e3
        estimate = Catalog.cost_usd(plan.model, plan.input_tokens, Catalog.expected_output_tokens(
            plan.model, plan.request.output_limit))
        return self._relay(plan, first, rest), plan.headers(estimate)

    async def _relay(self, plan: Plan, first: ChatCompletionChunk | None,
                     chunks: AsyncIterator[ChatCompletionChunk],
                     ) -> AsyncIterator[ChatCompletionChunk]:
        usage: Usage | None = None
        status, error = 200, None
        assert plan.upstream is not None
        timeout = plan.upstream.timeout_s
        try:
            chunk = first
            while chunk is not None:
                if chunk.usage is not None:
                    usage = chunk.usage
                yield msgspec.structs.replace(chunk, id=plan.id)
                chunk = await _next(chunks, timeout)
        except ProviderError as exc:
            status, error = exc.status, f"mid-stream: {exc}"
            raise from_provider_error(exc) from exc
        except BaseException:
            status, error = 499, "client disconnected"  # nginx's code for it
            raise
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
            self._account(plan, usage, status, error)

    async def open_stream(self, plan: Plan) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        """OpenAI's SSE bytes and headers (see ``open_chunks``); a failure after the first
        chunk becomes an ``error`` event, then ``[DONE]``."""
        chunks, headers = await self.open_chunks(plan)
        return openai_sse(plan.request, chunks), headers

    def cost_usd(self, plan: Plan, usage: Usage | None) -> float:
        """Price from the provider's usage; the prompt's counted tokens if it gave none."""
        if usage is None:
            return Catalog.cost_usd(plan.model, plan.input_tokens, 0) if plan.upstream else 0.0
        return Catalog.cost_usd(plan.model, usage.prompt_tokens, usage.completion_tokens)

    def _account(self, plan: Plan, usage: Usage | None, status: int, error: str | None) -> float:
        """Price the request, count it in the metrics and write its traffic-log row."""
        elapsed = time.perf_counter() - plan.started
        cost = self.cost_usd(plan, usage) if status == 200 else 0.0
        provider = plan.upstream.deployment.provider if plan.upstream else "none"
        model = plan.model.name
        m = self.metrics
        m.requests.labels("chat", provider, model, str(status)).inc()
        m.latency.labels("chat", model).observe(elapsed)
        tenant = "default"  # tenants arrive with API keys (a later layer)
        if usage is not None:
            m.tokens.labels(tenant, model, "input").inc(usage.prompt_tokens)
            m.tokens.labels(tenant, model, "output").inc(usage.completion_tokens)
            m.cost.labels(tenant, model).inc(cost)
            if plan.ttft_ms is not None:
                gen_s = elapsed - plan.ttft_ms / 1e3
                if gen_s > 0 and usage.completion_tokens:
                    m.tokens_per_s.labels(model).observe(usage.completion_tokens / gen_s)
        if plan.ttft_ms is not None:
            m.ttft.labels(model).observe(plan.ttft_ms / 1e3)
        if self.traffic is not None:
            self.traffic.write(self._record(plan, usage, status, error, cost, elapsed, tenant))
        return cost

    def _record(self, plan: Plan, usage: Usage | None, status: int, error: str | None,
                cost: float, elapsed: float, tenant: str) -> TrafficRecord:
        cfg = self.traffic_config
        d = plan.decision
        return TrafficRecord(
            id=plan.id, ts=time.time(), status=status, tenant=tenant,
            user_id=plan.request.user, route=plan.route, model=plan.model.name,
            deployment=plan.upstream.label if plan.upstream else None, cache="bypass",
            input_tokens=usage.prompt_tokens if usage else plan.input_tokens,
            output_tokens=usage.completion_tokens if usage else None,
            cost_usd=cost, latency_ms=elapsed * 1e3, ttft_ms=plan.ttft_ms,
            error=error or (f"fell back from {', '.join(plan.tried)}" if plan.tried else None),
            stream=plan.stream,
            candidates=[CandidateLog(c.model, c.predicted_quality, c.estimated_cost_usd)
                        for c in d.candidates] if d else None,
            router=d.router if d else None, encoder=d.encoder if d else None,
            prompt=(plan.prompt if plan.prompt is not None
                    else routing_prompt(plan.request)) if cfg.log_prompts else None,
            # The sentence embedding only (the head of what the router read): the log's
            # vectors stay comparable across routers that read different encoder layers.
            embedding=(plan.embedding[: self.engine.encoder.dim]
                       if cfg.log_embeddings and plan.embedding is not None else None),
        )


async def _next(chunks: AsyncIterator[ChatCompletionChunk],
                timeout: float) -> ChatCompletionChunk | None:
    """The next chunk within the deployment's timeout; ``None`` at the end of the stream."""
    try:
        async with asyncio.timeout(timeout):
            return await anext(chunks)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise UpstreamTimeout("no next chunk in time") from None


async def openai_sse(request: ChatRequest,
                     chunks: AsyncIterator[ChatCompletionChunk]) -> AsyncIterator[bytes]:
    """Chunks as OpenAI's ``data:`` events; usage only if the client asked for it."""
    opts = request.stream_options
    include_usage = bool(opts and opts.include_usage)
    try:
        async for chunk in chunks:
            if chunk.choices or include_usage:
                yield b"data: " + ENCODER.encode(chunk) + b"\n\n"
    except APIError as err:
        yield error_event(err)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"


def unmet(model: ModelEntry, needs: Requirements, n_in: int) -> str | None:
    """Why ``model`` cannot serve a request with these needs, or ``None``."""
    if "embeddings" in model.capabilities:
        return "it is an embeddings model (POST /v1/embeddings)"
    missing = sorted(needs.capabilities - set(model.capabilities))
    if missing:
        return f"it lacks {', '.join(missing)}"
    out = needs.max_output_tokens or 0
    if n_in + out > model.context_window:
        return f"{n_in} + {out} tokens exceed its context window {model.context_window}"
    return None
