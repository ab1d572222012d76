"""Traces through the gateway, read from the OpenTelemetry SDK's in-memory exporter: one span
per request with the GenAI conventions' attributes, a span per stage and per upstream attempt,
the client's W3C trace continued and the attempt's sent to the provider; none of it when
tracing is off."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar, Request, Response, post
from litestar.testing import TestClient
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router.config import CacheConfig, Deployment, ProviderEntry, load_config
from router.tracing_config import TracingConfig
from service.app import create_app
from service.tracing import Tracing
from tests.upstreams import serve
from tests.upstreams.openai_compat import SimState
from tests.upstreams.openai_compat import create_app as openai_sim

KEY = "sk-sim-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
STAGES = ["contextforge.guard", "contextforge.cache", "contextforge.route",
          "contextforge.reserve", "contextforge.dispatch"]


@pytest.fixture(scope="module")
def upstream():
    state = SimState(api_key=KEY, strict=False)
    with serve(openai_sim(state)) as url:
        yield url, state


def configured(url: str, *deployments: Deployment, **changes):
    """The shipped config with gpt-4o served by ``deployments`` of the simulator (``good``)
    or of nothing (``dead``: connection refused), no traffic log."""
    cfg = load_config()
    providers = [ProviderEntry(name="good", type="openai-compatible", endpoint=f"{url}/v1",
                               api_key=KEY),
                 ProviderEntry(name="dead", type="openai-compatible",
                               endpoint="http://127.0.0.1:1/v1")]
    models = [msgspec.structs.replace(m, deployments=list(deployments), strategy="lowest_cost")
              if m.name == "gpt-4o" else m for m in cfg.models]
    traffic = msgspec.structs.replace(cfg.traffic, enabled=False)
    return msgspec.structs.replace(cfg, providers=providers, models=models, traffic=traffic,
                                   **changes)


def chat(c: TestClient, text: str, model: str = "gpt-4o", headers=None, **kw):
    return c.post("/v1/chat/completions", headers=headers, json={
        "model": model, "messages": [{"role": "user", "content": text}], **kw})


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def request_span(spans) -> ReadableSpan:
    [root] = [s for s in spans if s.kind == SpanKind.SERVER]
    return root


def children(spans, parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None
            and s.parent.span_id == parent.context.span_id]


def traceparent(span: ReadableSpan) -> str:
    """Version, trace id and span id of ``span``'s W3C ``traceparent`` (the flags vary: the
    SDK also sets the random-trace-id flag of its own trace ids)."""
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}"


def test_a_chat_request_is_one_server_span_with_stage_and_attempt_children(upstream, engine):
    url, state = upstream
    exporter = InMemorySpanExporter()
    app = create_app(configured(url, Deployment(provider="good")), engine=engine,
                     tracing=Tracing.to(exporter))
    with TestClient(app) as c:
        r = chat(c, "hello traces", max_tokens=50, temperature=0.5)
        assert r.status_code == 200
    spans = exporter.get_finished_spans()
    root = request_span(spans)
    assert root.name == "chat gpt-4o" and root.parent is None
    a = root.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4o"
    assert a["gen_ai.response.model"] == r.json()["model"]
    assert a["gen_ai.provider.name"] == "openai-compatible"
    assert a["gen_ai.request.max_tokens"] == 50 and a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.response.id"] == r.json()["id"] == r.headers["x-contextforge-request-id"]
    assert list(a["gen_ai.response.finish_reasons"]) == ["stop"]
    usage = r.json()["usage"]
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert a["contextforge.cost_usd"] == pytest.approx(float(r.headers["x-contextforge-cost-usd"]))
    assert a["contextforge.tenant"] == "default" and a["contextforge.cache"] == "bypass"
    assert "error.type" not in a and root.status.status_code == StatusCode.UNSET
    # Stages in order under the request span; the attempt under the dispatch span.
    stages = children(spans, root)
    assert [s.name for s in sorted(stages, key=lambda s: s.start_time)] == STAGES
    dispatch = by_name(spans)["contextforge.dispatch"][0]
    [attempt] = children(spans, dispatch)
    assert attempt.kind == SpanKind.CLIENT and attempt.name == "chat gpt-4o"
    assert attempt.attributes["contextforge.attempt.outcome"] == "ok"
    assert attempt.attributes["contextforge.attempt.hedge"] is False
    assert attempt.attributes["contextforge.deployment"].startswith("openai-compatible:gpt-4o@")
    assert "gen_ai.usage.input_tokens" not in attempt.attributes  # counted once, on the root
    # The provider was called with the attempt span's own trace context.
    assert state.last_headers["traceparent"][:-3] == traceparent(attempt)
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}


def test_a_routed_request_shows_its_candidates_on_the_route_span(upstream, engine):
    url, _ = upstream
    exporter = InMemorySpanExporter()
    app = create_app(configured(url, Deployment(provider="good")), engine=engine,
                     tracing=Tracing.to(exporter))
    with TestClient(app) as c:
        r = chat(c, "Prove that the square root of 2 is irrational.", model="auto")
        assert r.status_code == 200
    spans = exporter.get_finished_spans()
    root = request_span(spans)
    assert root.name == "chat auto"
    assert root.attributes["contextforge.route"] == "auto"
    assert root.attributes["contextforge.router"] == r.headers["x-contextforge-router"]
    route = by_name(spans)["contextforge.route"][0].attributes
    models = list(route["contextforge.candidate.models"])
    quality = list(route["contextforge.candidate.predicted_quality"])
    cost = list(route["contextforge.candidate.estimated_cost_usd"])
    assert len(models) == len(quality) == len(cost) > 1
    assert route["contextforge.route.model"] == r.headers["x-contextforge-model"] in models
    assert all(0 <= q <= 1 for q in quality) and all(c >= 0 for c in cost)


def test_a_stream_span_ends_with_the_stream(upstream, engine):
    url, _ = upstream
    exporter = InMemorySpanExporter()
    app = create_app(configured(url, Deployment(provider="good")), engine=engine,
                     tracing=Tracing.to(exporter))
    with TestClient(app) as c:
        r = chat(c, "stream me some words", stream=True,
                 stream_options={"include_usage": True})
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    spans = exporter.get_finished_spans()
    root = request_span(spans)
    a = root.attributes
    # What only the stream's end says (its finish and its last chunk's usage) is on the span.
    assert a["contextforge.stream"] is True
    assert list(a["gen_ai.response.finish_reasons"]) == ["stop"]
    assert a["gen_ai.usage.output_tokens"] == 5  # "echo: stream me some words"
    assert a["contextforge.ttft_ms"] > 0
    # The attempt ended at the first content; the request span after everything else.
    [attempt] = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert attempt.attributes["contextforge.attempt.outcome"] == "ok"
    assert root.end_time > max(s.end_time for s in spans if s is not root)


def test_an_embeddings_request_is_an_embeddings_span(upstream, engine):
    url, _ = upstream
    exporter = InMemorySpanExporter()
    app = create_app(configured(url, Deployment(provider="good")), engine=engine,
                     tracing=Tracing.to(exporter))
    with TestClient(app) as c:
        r = c.post("/v1/embeddings", json={"model": engine.text_encoder.id,
                                           "input": ["one text", "another"]})
        assert r.status_code == 200
    spans = exporter.get_finished_spans()
    root = request_span(spans)
    assert root.name == f"embeddings {engine.text_encoder.id}"
    a = root.attributes
    assert a["gen_ai.operation.name"] == "embeddings"
    assert a["gen_ai.provider.name"] == "contextforge"  # the gateway's own encoder
    assert a["gen_ai.usage.input_tokens"] == r.json()["usage"]["prompt_tokens"] > 0
    assert "gen_ai.usage.output_tokens" not in a
    assert not [s for s in spans if s.kind == SpanKind.CLIENT]  # no upstream call


def test_a_failover_is_two_attempts_the_first_failed(upstream, engine):
    url, state = upstream
    exporter = InMemorySpanExporter()
    # lowest_cost tries the free (dead) deployment first.
    cfg = configured(url, Deployment(provider="dead", input_price=0.0, output_price=0.0),
                     Deployment(provider="good"))
    cfg = msgspec.structs.replace(cfg, dispatch=msgspec.structs.replace(
        cfg.dispatch, backoff_ms=0, failure_threshold=1000))
    with TestClient(create_app(cfg, engine=engine, tracing=Tracing.to(exporter))) as c:
        r = chat(c, "fail over please")
        assert r.status_code == 200
    spans = exporter.get_finished_spans()
    dispatch = by_name(spans)["contextforge.dispatch"][0]
    first, second = sorted(children(spans, dispatch), key=lambda s: s.start_time)
    assert "127.0.0.1:1" in first.attributes["contextforge.deployment"]
    assert (first.attributes["server.address"], first.attributes["server.port"]) == (
        "127.0.0.1", 1)
    assert first.attributes["contextforge.attempt.outcome"] == "error"
    assert first.attributes["error.type"] == "UpstreamUnavailable"
    assert first.status.status_code == StatusCode.ERROR
    assert second.attributes["contextforge.attempt.outcome"] == "ok"
    assert state.last_headers["traceparent"][:-3] == traceparent(second)
    root = request_span(spans)
    assert "error.type" not in root.attributes and root.attributes["contextforge.status"] == 200


def test_a_request_that_fails_everywhere_has_an_error_type(upstream, engine):
    url, _ = upstream
    exporter = InMemorySpanExporter()
    cfg = configured(url, Deployment(provider="good"))
    with TestClient(create_app(cfg, engine=engine, tracing=Tracing.to(exporter))) as c:
        assert chat(c, "FAIL 400").status_code == 400
    root = request_span(exporter.get_finished_spans())
    assert root.attributes["error.type"] == "UpstreamRejected"
    assert root.attributes["contextforge.status"] == 400
    # A request the client got wrong is not the gateway's error (status stays unset).
    assert root.status.status_code == StatusCode.UNSET


def test_a_cache_hit_has_no_route_or_attempt_span(upstream, engine):
    url, _ = upstream
    exporter = InMemorySpanExporter()
    cfg = configured(url, Deployment(provider="good"), cache=CacheConfig(enabled=True))
    with TestClient(create_app(cfg, engine=engine, tracing=Tracing.to(exporter))) as c:
        ask = {"temperature": 0}
        assert chat(c, "cache this answer", **ask).headers["x-contextforge-cache"] == "miss"
        exporter.clear()
        hit = chat(c, "cache this answer", **ask)
        assert hit.headers["x-contextforge-cache"] == "hit-exact"
    spans = exporter.get_finished_spans()
    root = request_span(spans)
    assert [s.name for s in sorted(children(spans, root), key=lambda s: s.start_time)] == [
        "contextforge.guard", "contextforge.cache"]
    assert by_name(spans)["contextforge.cache"][0].attributes["contextforge.cache"] == (
        "hit-exact")
    assert root.attributes["contextforge.cache"] == "hit-exact"
    assert root.attributes["gen_ai.provider.name"] == "contextforge"
    assert root.attributes["contextforge.cost_usd"] == 0.0
    assert not [s for s in spans if s.kind == SpanKind.CLIENT]


def test_the_clients_trace_is_continued(upstream, engine):
    url, state = upstream
    exporter = InMemorySpanExporter()
    app = create_app(configured(url, Deployment(provider="good")), engine=engine,
                     tracing=Tracing.to(exporter))
    with TestClient(app) as c:
        r = chat(c, "continue my trace", headers={
            "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "vendor=1"})
        assert r.status_code == 200
    spans = exporter.get_finished_spans()
    root = request_span(spans)
    assert f"{root.context.trace_id:032x}" == CLIENT_TRACE
    assert root.parent is not None and root.parent.is_remote
    assert f"{root.parent.span_id:016x}" == CLIENT_SPAN
    assert {f"{s.context.trace_id:032x}" for s in spans} == {CLIENT_TRACE}
    [attempt] = [s for s in spans if s.kind == SpanKind.CLIENT]
    sent = state.last_headers["traceparent"]
    assert sent == traceparent(attempt) + "-01" and CLIENT_SPAN not in sent
    assert state.last_headers["tracestate"] == "vendor=1"


def test_a_client_that_does_not_sample_is_followed(upstream, engine):
    url, state = upstream
    exporter = InMemorySpanExporter()
    app = create_app(configured(url, Deployment(provider="good")), engine=engine,
                     tracing=Tracing.to(exporter))
    with TestClient(app) as c:
        r = chat(c, "do not sample me", headers={
            "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"})
        assert r.status_code == 200
    assert exporter.get_finished_spans() == ()
    # The trace id still travels (unsampled), so the provider's logs can join it.
    assert state.last_headers["traceparent"].startswith(f"00-{CLIENT_TRACE}-")
    assert state.last_headers["traceparent"].endswith("-00")


def test_tracing_off_makes_no_tracer_and_sends_no_trace_context(upstream, engine):
    url, state = upstream
    cfg = configured(url, Deployment(provider="good"))
    assert cfg.tracing.enabled is False  # the default
    app = create_app(cfg, engine=engine)
    with TestClient(app) as c:
        r = chat(c, "no traces", headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
        assert r.status_code == 200
        gateway = app.state.gateway
        assert gateway.tracing is None
        assert all(d.observer is None for d in gateway.dispatchers.values())
    assert "traceparent" not in state.last_headers
    assert not isinstance(trace.get_tracer_provider(), SdkTracerProvider)


def test_tracing_off_imports_no_sdk():
    """A served request with the default config never imports OpenTelemetry's tracing SDK (a
    fresh process: this one has imported it for the other tests). Its metrics SDK is not
    asked about: redis-py imports that by itself whenever it is installed."""
    code = textwrap.dedent("""
        import sys
        import msgspec
        from litestar.testing import TestClient
        from router.config import load_config
        from service.app import create_app
        cfg = load_config()
        cfg = msgspec.structs.replace(cfg, traffic=msgspec.structs.replace(cfg.traffic,
                                                                           enabled=False))
        with TestClient(create_app(cfg)) as c:
            r = c.post("/v1/chat/completions", json={"model": "auto", "messages": [
                {"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk.trace")
                     or m.startswith("opentelemetry.exporter") or m == "service.tracing"))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_configured_tracer_is_built_and_shut_down(upstream, engine):
    """``tracing.enabled`` with the ``none`` exporter: spans are made (sampled by the config's
    ratio) and the provider is shut down with the app."""
    url, _ = upstream
    tracing = msgspec.structs.replace(load_config().tracing, enabled=True, exporter="none",
                                      sample_ratio=0.0)
    app = create_app(configured(url, Deployment(provider="good"), tracing=tracing),
                     engine=engine)
    with TestClient(app) as c:
        assert chat(c, "sampled out", headers={}).status_code == 200
        gateway = app.state.gateway
        assert gateway.tracing is not None
        assert gateway.tracing.provider.sampler.get_description().startswith("ParentBased")
        provider = gateway.tracing.provider
    # Shut down with the app: no span is recorded any more.
    assert not provider.get_tracer("t").start_span("after").is_recording()


def collector(received: list[tuple[dict[str, str], bytes]]) -> Litestar:
    @post("/v1/traces", status_code=200)
    async def traces(request: Request) -> Response[bytes]:
        received.append((dict(request.headers), await request.body()))
        return Response(b"", media_type="application/x-protobuf")

    return Litestar([traces])


def test_the_otlp_exporter_sends_the_requests_spans_to_the_collector(monkeypatch, engine):
    received: list[tuple[dict[str, str], bytes]] = []
    monkeypatch.setenv("CF_TEST_OTLP_KEY", "team-secret")
    with serve(collector(received)) as url:
        cfg = load_config()
        tracing = TracingConfig(enabled=True, endpoint=f"{url}/v1/traces",
                                headers={"x-dataset": "gw"},
                                headers_env={"x-team": "CF_TEST_OTLP_KEY"},
                                service_name="cf-test")
        cfg = msgspec.structs.replace(cfg, tracing=tracing, traffic=msgspec.structs.replace(
            cfg.traffic, enabled=False))
        with TestClient(create_app(cfg, engine=engine)) as c:
            r = c.post("/v1/chat/completions", json={
                "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
        # The app's shutdown flushed the batch: the collector has it now.
    assert received
    headers = received[0][0]
    assert headers["content-type"] == "application/x-protobuf"
    assert (headers["x-dataset"], headers["x-team"]) == ("gw", "team-secret")
    spans, services = {}, set()
    for _, body in received:
        export = ExportTraceServiceRequest.FromString(body)
        for rs in export.resource_spans:
            services |= {a.value.string_value for a in rs.resource.attributes
                         if a.key == "service.name"}
            for ss in rs.scope_spans:
                spans |= {s.name: s for s in ss.spans}
    assert services == {"cf-test"}
    root = spans["chat gpt-4o-mini"]
    attrs = {a.key: a.value for a in root.attributes}
    assert attrs["gen_ai.response.id"].string_value == r.json()["id"]
    assert attrs["gen_ai.usage.output_tokens"].int_value == r.json()["usage"][
        "completion_tokens"]
    assert {"contextforge.route", "contextforge.dispatch"} <= set(spans)


def test_a_reconfigured_gateways_new_deployments_are_traced(upstream, engine):
    url, state = upstream
    exporter = InMemorySpanExporter()
    tracing = Tracing.to(exporter)
    app = create_app(configured(url, Deployment(provider="good")), engine=engine,
                     tracing=tracing)
    with TestClient(app) as c:
        gateway = app.state.gateway
        # gpt-4o's deployments change: its dispatcher is rebuilt, and still observed.
        new = configured(url, Deployment(provider="good", model="gpt-4o-renamed"))
        c.blocking_portal.call(gateway.reconfigure, new)
        assert all(d.observer is tracing for d in gateway.dispatchers.values())
        assert chat(c, "after the change").status_code == 200
    [attempt] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert attempt.name == "chat gpt-4o-renamed"  # the model as the provider knows it
    assert state.last_headers["traceparent"][:-3] == traceparent(attempt)


def test_a_stream_cut_mid_answer_ends_its_span_as_an_error(upstream, engine):
    url, _ = upstream
    exporter = InMemorySpanExporter()
    app = create_app(configured(url, Deployment(provider="good")), engine=engine,
                     tracing=Tracing.to(exporter))
    with TestClient(app) as c:
        r = chat(c, "FAIL MIDSTREAM", stream=True)
        assert r.status_code == 200 and '"error"' in r.text  # an error event after the start
    root = request_span(exporter.get_finished_spans())
    status = root.attributes["contextforge.status"]
    assert status >= 500 and root.attributes["error.type"] == str(status)
    assert root.status.status_code == StatusCode.ERROR
    assert "gen_ai.response.finish_reasons" not in root.attributes


def test_an_anthropic_messages_request_is_a_chat_span(upstream, engine):
    url, _ = upstream
    exporter = InMemorySpanExporter()
    app = create_app(configured(url, Deployment(provider="good")), engine=engine,
                     tracing=Tracing.to(exporter))
    with TestClient(app) as c:
        r = c.post("/v1/messages", json={"model": "gpt-4o", "max_tokens": 64, "messages": [
            {"role": "user", "content": "hello from the anthropic sdk"}]})
        assert r.status_code == 200
    root = request_span(exporter.get_finished_spans())
    assert root.name == "chat gpt-4o"
    assert root.attributes["gen_ai.request.max_tokens"] == 64
    assert root.attributes["gen_ai.usage.output_tokens"] == r.json()["usage"]["output_tokens"]
