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
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec

from router.catalog import Catalog
from router.config import ModelEntry
from router.embedding import MicroBatcher
from router.engine import RoutingEngine
from router.policy import NoEligibleModel
from router.providers import (
    ENCODER,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Provider,
    ProviderError,
    UpstreamTimeout,
    Usage,
)
from service.errors import APIError, ModelNotFound, Unsatisfiable, error_event, from_provider_error
from service.prompt import Requirements, conversation_text, requirements, routing_prompt

log = logging.getLogger("contextforge.gateway")

NO_ROUTE = "none"  # x-contextforge-route when the client named a concrete model


@dataclass(frozen=True, slots=True)
class Plan:
    """One request, routed: what to call and what to tell the client about it."""

    request: ChatRequest  # ``model`` is the chosen catalog model's name
    model: ModelEntry
    route: str
    provider: Provider
    input_tokens: int
    started: float

    def headers(self, cost_usd: float) -> dict[str, str]:
        return {
            "x-contextforge-model": self.model.name,
            "x-contextforge-route": self.route,
            "x-contextforge-cache": "bypass",
            "x-contextforge-cost-usd": f"{cost_usd:.8f}",
        }


class Gateway:
    """Routing and provider calls for chat requests; built in the app's lifespan."""

    def __init__(self, engine: RoutingEngine, batcher: MicroBatcher,
                 providers: dict[str, list[Provider]], *, upstream_timeout_s: float):
        self.engine = engine
        self.catalog = engine.catalog
        self.batcher = batcher
        self.providers = providers
        self.timeout = upstream_timeout_s

    async def plan(self, request: ChatRequest) -> Plan:
        """Choose the model; ``ModelNotFound`` (404) or ``Unsatisfiable`` (422) otherwise."""
        started = time.perf_counter()
        needs = requirements(request)
        n_in = self.engine.encoder.count_tokens(conversation_text(request))
        target = self.engine.config.default_route if request.model == "auto" else request.model
        if target in self.engine.routes:
            model = await self._route(request, target, needs, n_in)
            route = target
        elif target in self.catalog:
            model, route = self.catalog.get(target), NO_ROUTE
            why = unmet(model, needs, n_in)
            if why:
                raise Unsatisfiable(f"model {model.name!r} cannot serve this request: {why}",
                                    param="model")
        else:
            raise ModelNotFound(f"The model `{request.model}` does not exist: use a catalog "
                                "model, a route or `auto` (see GET /v1/models)", param="model")
        chosen = msgspec.structs.replace(request, model=model.name)
        # Dispatch (load balancing, health, failover) is a later layer: the first deployment.
        return Plan(chosen, model, route, self.providers[model.name][0], n_in, started)

    async def _route(self, request: ChatRequest, route: str, needs: Requirements,
                     n_in: int) -> ModelEntry:
        # The engine checks context windows against the routing prompt only; the whole
        # conversation is what the model reads, so candidates it overflows are removed here.
        out = needs.max_output_tokens or 0
        candidates = self.engine.routes[route].models
        fits = {m.name for m in candidates if n_in + out <= m.context_window}
        try:
            decision = await self.engine.adecide(
                routing_prompt(request), self.batcher, route=route,
                required=needs.capabilities, max_output_tokens=needs.max_output_tokens,
                allowed=None if len(fits) == len(candidates) else fits)
        except NoEligibleModel:
            caps = ", ".join(sorted(needs.capabilities)) or "no special capabilities"
            raise Unsatisfiable(
                f"no model on route {route!r} satisfies this request: it needs {caps} and "
                f"{n_in} input + {out} output tokens of context", param="model") from None
        return self.catalog.get(decision.model)

    async def complete(self, plan: Plan) -> tuple[ChatCompletion, dict[str, str]]:
        """The provider's whole answer and the routing headers (with its actual cost)."""
        try:
            async with asyncio.timeout(self.timeout):
                completion = await plan.provider.complete(plan.request)
        except TimeoutError:
            self._log(plan, None, "timeout")
            raise from_provider_error(UpstreamTimeout("no answer in time")) from None
        except ProviderError as exc:
            self._log(plan, None, f"error {exc.status}")
            raise from_provider_error(exc) from exc
        cost = self.cost_usd(plan, completion.usage)
        self._log(plan, completion.usage, "ok")
        return completion, plan.headers(cost)

    async def open_chunks(self, plan: Plan,
                          ) -> tuple[AsyncIterator[ChatCompletionChunk], dict[str, str]]:
        """The answer's chunks (the last one carries ``usage`` and no choices) and headers.

        The first chunk is awaited here, so a failing upstream is still an HTTP error status;
        a later failure raises ``APIError`` from the iterator. The request is accounted when
        the iterator ends or is closed. The cost header is the estimate (the answer's length
        is unknown when headers go out). Front ends (OpenAI SSE, Anthropic events) format it.
        """
        chunks = plan.provider.stream(plan.request)
        try:
            first = await self._next(chunks)
        except ProviderError as exc:
            await chunks.aclose()
            self._log(plan, None, f"error {exc.status}")
            raise from_provider_error(exc) from exc
        estimate = Catalog.cost_usd(plan.model, plan.input_tokens, Catalog.expected_output_tokens(
            plan.model, plan.request.output_limit))
        return self._relay(plan, first, chunks), plan.headers(estimate)

    async def _relay(self, plan: Plan, first: ChatCompletionChunk | None,
                     chunks: AsyncIterator[ChatCompletionChunk],
                     ) -> AsyncIterator[ChatCompletionChunk]:
        usage: Usage | None = None
        status = "ok"
        try:
            chunk = first
            while chunk is not None:
                if chunk.usage is not None:
                    usage = chunk.usage
                yield chunk
                chunk = await self._next(chunks)
        except ProviderError as exc:
            status = f"error {exc.status} mid-stream"
            raise from_provider_error(exc) from exc
        except BaseException:
            status = "client disconnected"
            raise
        finally:
            await chunks.aclose()
            self._log(plan, usage, status)

    async def open_stream(self, plan: Plan) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        """OpenAI's SSE bytes and headers (see ``open_chunks``); a failure after the first
        chunk becomes an ``error`` event, then ``[DONE]``."""
        chunks, headers = await self.open_chunks(plan)
        return openai_sse(plan.request, chunks), headers

    async def _next(self, chunks: AsyncIterator[ChatCompletionChunk]) -> ChatCompletionChunk | None:
        """The next chunk within the upstream timeout; ``None`` at the end of the stream."""
        try:
            async with asyncio.timeout(self.timeout):
                return await anext(chunks)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise UpstreamTimeout("no next chunk in time") from None

    def cost_usd(self, plan: Plan, usage: Usage | None) -> float:
        """Price from the provider's usage; the prompt's counted tokens if it gave none."""
        if usage is None:
            return Catalog.cost_usd(plan.model, plan.input_tokens, 0)
        return Catalog.cost_usd(plan.model, usage.prompt_tokens, usage.completion_tokens)

    def _log(self, plan: Plan, usage: Usage | None, status: str) -> None:
        # The traffic log (SQLite) replaces this line; until then it is the request's record.
        ms = (time.perf_counter() - plan.started) * 1e3
        tokens = f"{usage.prompt_tokens}+{usage.completion_tokens}" if usage else "-"
        log.info("chat route=%s model=%s tokens=%s cost=%.8f ms=%.1f status=%s", plan.route,
                 plan.model.name, tokens, self.cost_usd(plan, usage), ms, status)


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
    missing = sorted(needs.capabilities - set(model.capabilities))
    if missing:
        return f"it lacks {', '.join(missing)}"
    out = needs.max_output_tokens or 0
    if n_in + out > model.context_window:
        return f"{n_in} + {out} tokens exceed its context window {model.context_window}"
    return None
