"""OpenTelemetry traces of requests (``tracing:`` in the config; off by default).

One span per request, named ``"{gen_ai.operation.name} {gen_ai.request.model}"`` (``chat
auto``), with the GenAI conventions' attributes and ContextForge's (``service.trace_attributes``);
under it one span per stage that ran (``contextforge.guard``, ``.cache``, ``.route``,
``.reserve``, ``.dispatch``), and under the dispatch span one span per call to a deployment,
hedges and failovers included. A stream's request span ends when the stream ends.

Span kinds. The GenAI conventions describe the *client* of a model: their inference span is
CLIENT. A gateway is two things at once, so it has both: the request span is SERVER (it is the
gateway's handling of its client's call, the child of the client's span when the client sends a
``traceparent``; that is what the general conventions say a span for an incoming request is),
and each upstream attempt is CLIENT (the gateway calling a model: the conventions' inference
span, named and attributed as they say, with the model as the provider knows it). Token usage
is on the request span only, so a backend that sums ``gen_ai.usage.*`` counts a request once.

Trace context: a client's W3C ``traceparent`` / ``tracestate`` is extracted by ``middleware``
(installed only when tracing is on) and the request span continues its trace; each attempt's
own ``traceparent`` goes to the provider on the upstream request
(``router.providers.call_headers``), so a provider's trace joins ours.

Nothing here is imported when tracing is off: ``service.app`` imports this module only when
``tracing.enabled`` (or a test hands it a ``Tracing``), no tracer provider is made, and the
request path checks one attribute (``Gateway.tracing is None``). The provider is the gateway's
own, never OpenTelemetry's global one: the process's other users of the API (a host embedding
the app, the tests' several apps) are left alone. Spans are exported by a batch processor on
its own thread: an export never runs on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import metadata
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from router.providers import call_headers
from router.tracing_config import TracingConfig, export_headers
from service.trace_attributes import (
    attempt_attributes,
    error_type,
    operation,
    outcome_attributes,
    request_attributes,
    stage_attributes,
)

if TYPE_CHECKING:
    from router.dispatch import Upstream
    from router.wire.openai import ChatCompletionChunk
    from service.pipeline import Exchange

# The request's operation (chat / embeddings), for its attempts' spans: the dispatcher that
# reports them knows deployments, not wire formats.
_OPERATION: ContextVar[str] = ContextVar("contextforge_trace_operation", default="chat")
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = (b"traceparent", b"tracestate")
# Stages whose work is all on the way out (``leave``): their time is the request span's.
UNTRACED_STAGES = frozenset({"account"})


def _version() -> str:
    try:
        return metadata.version("contextforge-router")
    except metadata.PackageNotFoundError:
        return "0"


class Tracing:
    """The gateway's tracer: its own provider, the W3C propagator, the spans of requests."""

    def __init__(self, provider: TracerProvider):
        self.provider = provider
        self.tracer = provider.get_tracer("contextforge-router", _version())

    @classmethod
    def from_config(cls, cfg: TracingConfig) -> Tracing:
        """The tracer ``cfg`` describes (its exporter built, the OTLP one imported only
        here)."""
        provider = _provider(cfg.service_name, cfg.sample_ratio)
        exporter: SpanExporter | None = None
        if cfg.exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=cfg.endpoint or None,
                                        headers=export_headers(cfg) or None,
                                        timeout=cfg.export_timeout_s)
        elif cfg.exporter == "console":
            exporter = ConsoleSpanExporter()
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(
                exporter, export_timeout_millis=cfg.export_timeout_s * 1e3))
        return cls(provider)

    @classmethod
    def to(cls, exporter: SpanExporter, *, sample_ratio: float = 1.0,
           service_name: str = "contextforge-router") -> Tracing:
        """A tracer that hands each span to ``exporter`` as it ends, on the caller's thread
        (tests, with the SDK's ``InMemorySpanExporter``; benchmarks)."""
        provider = _provider(service_name, sample_ratio)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(provider)

    def shutdown(self) -> None:
        """Export what is left and stop (blocking: call it off the event loop)."""
        self.provider.shutdown()

    def middleware(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """ASGI middleware: the client's W3C trace context is the current context while its
        request is served, so the request span continues the client's trace."""

        async def traced(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            carrier = {k.decode(): v.decode("latin-1") for k, v in scope["headers"]
                       if k in _TRACE_HEADERS}
            if not carrier:
                await app(scope, receive, send)
                return
            token = otel_context.attach(_PROPAGATOR.extract(carrier))
            try:
                await app(scope, receive, send)
            finally:
                otel_context.detach(token)

        return traced

    def begin(self, ex: Exchange) -> RequestTrace:
        """The request span of ``ex``, current until ``RequestTrace.detach``."""
        attributes = request_attributes(ex)
        span = self.tracer.start_span(
            f"{attributes['gen_ai.operation.name']} {attributes['gen_ai.request.model']}",
            kind=SpanKind.SERVER, attributes=attributes)
        return RequestTrace(self, span, otel_context.attach(trace.set_span_in_context(span)),
                            _OPERATION.set(operation(ex)))

    @contextmanager
    def attempt(self, u: Upstream, *, model: str, hedge: bool, stream: bool,
                ) -> Iterator[trace.Span]:
        """One call to a deployment (``router.dispatch.AttemptObserver``): a CLIENT span,
        whose ``traceparent`` the upstream request carries."""
        attributes = attempt_attributes(u, model, _OPERATION.get(), hedge=hedge)
        span = self.tracer.start_span(
            f"{attributes['gen_ai.operation.name']} {attributes['gen_ai.request.model']}",
            kind=SpanKind.CLIENT, attributes=attributes)
        headers: dict[str, str] = {}
        _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
        try:
            with call_headers(headers):
                yield span
        except asyncio.CancelledError:  # a hedge race's loser, or the client left
            span.set_attribute("contextforge.attempt.outcome", "cancelled")
            raise
        except BaseException as exc:
            span.set_attributes({"contextforge.attempt.outcome": "error",
                                 "error.type": type(exc).__qualname__,
                                 "contextforge.attempt.status": getattr(exc, "status", 500)})
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
        else:
            span.set_attribute("contextforge.attempt.outcome", "ok")
        finally:
            span.end()


class RequestTrace:
    """One request's span while its stages run, and what its stream says of its answer."""

    __slots__ = ("_operation", "_token", "finish_reasons", "response_model", "span",
                 "tracing")

    def __init__(self, tracing: Tracing, span: trace.Span, token: object,
                 operation_token: object):
        self.tracing, self.span = tracing, span
        self._token, self._operation = token, operation_token
        self.finish_reasons: list[str] = []
        self.response_model: str | None = None

    @contextmanager
    def stage(self, name: str, ex: Exchange) -> Iterator[None]:
        """A stage's ``enter`` as a child span, with what it decided as attributes."""
        if name in UNTRACED_STAGES:
            yield
            return
        with self.tracing.tracer.start_as_current_span(f"contextforge.{name}") as span:
            yield
            if span.is_recording():
                span.set_attributes(stage_attributes(name, ex))

    def detach(self) -> None:
        """The request span stops being current (the stages have entered)."""
        otel_context.detach(self._token)  # type: ignore[arg-type]
        _OPERATION.reset(self._operation)  # type: ignore[arg-type]

    def observe(self, chunks: AsyncIterator[ChatCompletionChunk]) -> _Observed:
        """``chunks``, noting the answer's model and finish reasons for the span."""
        return _Observed(self, chunks)

    def end(self, ex: Exchange, exc: BaseException | None = None) -> None:
        """The request is over (its stages left): its outcome on the span, and the span
        ends. A failure sets ``error.type``; a server-side one (5xx, cancelled) the span's
        status too (a client's bad request is not the gateway's error)."""
        span = self.span
        if span.is_recording():
            span.set_attributes(outcome_attributes(ex, self.finish_reasons,
                                                   self.response_model))
            if exc is not None or ex.status >= 400:
                span.set_attribute("error.type", error_type(ex, exc))
                if ex.status >= 500 or ex.status == 499:
                    span.set_status(Status(StatusCode.ERROR, ex.error or ""))
        span.end()


def _provider(service_name: str, sample_ratio: float) -> TracerProvider:
    # ParentBased: a client's sampling decision is kept, so its trace is whole or absent.
    return TracerProvider(resource=Resource.create({"service.name": service_name}),
                          sampler=ParentBased(TraceIdRatioBased(sample_ratio)))


class _Observed:
    """A stream's chunks on their way to the client, noting what the span reports of them;
    ``aclose`` passes through (also before the first chunk, like ``pipeline._Closing``)."""

    __slots__ = ("_chunks", "_trace")

    def __init__(self, trace_: RequestTrace, chunks: AsyncIterator[ChatCompletionChunk]):
        self._trace, self._chunks = trace_, chunks

    def __aiter__(self) -> _Observed:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        chunk = await self._chunks.__anext__()
        t = self._trace
        if t.response_model is None and chunk.model:
            t.response_model = chunk.model
        for choice in chunk.choices:
            if choice.finish_reason:
                t.finish_reasons.append(choice.finish_reason)
        return chunk

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]
