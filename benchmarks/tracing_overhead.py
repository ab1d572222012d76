"""What tracing costs per request: the gateway's pipeline with tracing off, on but sampled out,
on with spans made and dropped, and on with every span exported to the SDK's in-memory
exporter, in one run.

    python benchmarks/tracing_overhead.py [--json FILE] [--requests 400] [--rounds 5]

One gateway (the shipped config, traffic log off, the in-process simulated provider answering
at once) serves chat requests through ``Gateway.chat`` on its own event loop, without HTTP, so
the figure is the pipeline's own time (stages, spans, the attempt hook) and nothing else.
Between batches the same gateway's tracer is swapped: ``off`` (``Gateway.tracing`` None, no
observer: the default), ``unsampled`` (on, ``sample_ratio: 0``: what a request the sampler
leaves out costs, its trace context still propagated), ``dropped`` (a tracer provider with no
span processor: every span is made, sampled and ended, then dropped; the cost of tracing
itself) and ``memory`` (each span handed to an ``InMemorySpanExporter`` as it ends, on the
request's thread: an upper bound, since the OTLP exporter batches on its own thread). Modes
rotate within each round so drift on a shared machine falls on all of them. Requests: pinned to
``gpt-4o-mini`` (no routing encoder, so the overhead is not hidden under it), streamed and not,
and routed (``auto``). Per request: p50 and mean in microseconds, and each mode's extra over
``off``.

``off`` adds to the request path one attribute read in the pipeline, one ``is None`` in the
dispatcher and one ``ContextVar.get`` per upstream HTTP request; ``--json`` writes those
checks' cost too (``off_checks_ns``), timed alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
from litestar.testing import TestClient  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from router.config import load_config  # noqa: E402
from router.wire.openai import ChatRequest, Message  # noqa: E402
from service.app import create_app  # noqa: E402
from service.tracing import Tracing, _provider  # noqa: E402

MODES = ("off", "unsampled", "dropped", "memory")
KINDS = ("pinned", "pinned-stream", "routed")


def request(kind: str, i: int) -> ChatRequest:
    model = "auto" if kind == "routed" else "gpt-4o-mini"
    return ChatRequest(model=model, stream=kind == "pinned-stream", messages=[
        Message(role="user", content=f"What is the capital of country number {i}?")])


async def one(gateway, req: ChatRequest) -> float:
    start = time.perf_counter()
    ex = await gateway.chat(req)
    if ex.chunks is not None:
        async for _ in ex.chunks:
            pass
    return (time.perf_counter() - start) * 1e6


def use(gateway, tracing: Tracing | None) -> None:
    """Serve with ``tracing`` from the next request on (the same gateway, dispatchers)."""
    gateway.tracing = tracing
    for d in gateway.dispatchers.values():
        d.observer = tracing


async def batch(gateway, kind: str, n: int, offset: int) -> list[float]:
    return [await one(gateway, request(kind, offset + i)) for i in range(n)]


def off_checks_ns(gateway) -> float:
    """The checks tracing off leaves on the path, per request, timed alone."""
    from router.providers._client import _HEADERS

    d = next(iter(gateway.dispatchers.values()))
    n = 200_000
    t = timeit.timeit(lambda: (getattr(gateway, "tracing", None) is None,
                               d.observer is None, _HEADERS.get()), number=n)
    base = timeit.timeit(lambda: None, number=n)
    return (t - base) / n * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="per mode, kind and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cfg = load_config()
    cfg = msgspec.structs.replace(cfg, traffic=msgspec.structs.replace(cfg.traffic,
                                                                       enabled=False))
    memory = InMemorySpanExporter()
    tracers = {"off": None, "unsampled": Tracing(_provider("bench", 0.0)),
               "dropped": Tracing(_provider("bench", 1.0)), "memory": Tracing.to(memory)}
    app = create_app(cfg)
    times: dict[tuple[str, str], list[float]] = {(m, k): [] for m in MODES for k in KINDS}
    with TestClient(app) as client:
        gateway = app.state.gateway
        portal = client.blocking_portal
        for kind in KINDS:  # warm-up: first-call allocations, lazy imports
            for mode in MODES:
                use(gateway, tracers[mode])
                portal.call(batch, gateway, kind, 50, 0)
        for r in range(args.rounds):
            for kind in KINDS:
                order = MODES[r % len(MODES):] + MODES[: r % len(MODES)]
                for mode in order:
                    use(gateway, tracers[mode])
                    times[mode, kind] += portal.call(batch, gateway, kind, args.requests,
                                                     r * args.requests)
                    memory.clear()
        use(gateway, None)
        checks = off_checks_ns(gateway)
    rows = []
    for kind in KINDS:
        off = statistics.median(times["off", kind])
        for mode in MODES:
            xs = times[mode, kind]
            p50, mean = statistics.median(xs), statistics.fmean(xs)
            rows.append({"kind": kind, "mode": mode, "n": len(xs), "p50_us": round(p50, 1),
                         "mean_us": round(mean, 1), "extra_p50_us": round(p50 - off, 1)})
    print(f"{'request':<15}{'tracing':<10}{'n':>6}{'p50 µs':>10}{'mean µs':>10}"
          f"{'extra p50 µs':>14}")
    for row in rows:
        print(f"{row['kind']:<15}{row['mode']:<10}{row['n']:>6}{row['p50_us']:>10.1f}"
              f"{row['mean_us']:>10.1f}{row['extra_p50_us']:>14.1f}")
    print(f"checks left on the path with tracing off: {checks:.0f} ns per request")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "off_checks_ns": round(checks, 1),
                                         "requests": args.requests, "rounds": args.rounds},
                                        indent=2))


if __name__ == "__main__":
    main()
