"""Does an open dashboard slow routed requests? Routed overhead with and without dashboards
polling, in one run.

    python benchmarks/dashboard_overhead.py [--dashboards 5] [--refresh-s 5] [--window-s 3600]
        [--blocks 6] [--block-s 8] [--seed-rows 20000] [--json FILE]

One gateway (``contextforge serve``, the default config with every model on the immediate
upstream, traffic log on, one worker; ``gateway_overhead.bench_config``) whose traffic log is
first filled with ``--seed-rows`` rows of the last hour, so each stats computation reads a
log of a busy gateway. Then interleaved blocks, the order alternating from block to block so
the machine's drift hits both sides alike: the upstream direct (the baseline), and routed
requests (``model: "auto"``, one keep-alive connection, back to back, ``--block-s`` each)
without and with ``--dashboards`` clients polling ``GET /admin/stats?window_s=3600`` (or
``--window-s``) every ``--refresh-s``, their phases staggered (an open page polls on the wall
clock's marks, so staggered pollers are the harder case). Overhead is the gateway's
percentile minus the direct one. Also reported: the pollers' own latency (most are served the
answer the gateway keeps, ``service.admin_stats.ttl_for``; the others wait for a computation
in the stats worker process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from _http_load import Connection, post  # noqa: E402
from gateway_overhead import (  # noqa: E402
    NAMED,
    PATH,
    bench_config,
    bodies,
    cpu_model,
    free_port,
    pct,
    running,
)

from router.traffic import CandidateLog, TrafficLog, TrafficRecord  # noqa: E402

KEY = "bench-master-key"
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-haiku", "llama-3.1-70b", "gemini-2.0-flash"]


def get(path: str, key: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\n"
            "\r\n").encode()


def seed(dsn: str, rows: int, now: float) -> None:
    """``rows`` plausible rows spread over the last hour (tenants, routes, models, hits,
    failures, candidates): what a busy gateway's log holds when a dashboard opens."""
    rng = random.Random(7)
    log = TrafficLog(dsn)
    try:
        for i in range(rows):
            model = rng.choice(MODELS)
            hit = rng.random() < 0.1
            log.write(TrafficRecord(
                id=f"seed-{i}", ts=now - rng.random() * 3600, tenant=f"org-{i % 7}",
                project=f"p{i % 3}", route=rng.choice(["auto", "quality-first", "budget"]),
                model=model, status=502 if rng.random() < 0.02 else 200,
                deployment=None if hit else f"openai:{model}", cache="hit-exact" if hit
                else "miss", input_tokens=200, output_tokens=100,
                cost_usd=0.0 if hit else rng.random() * 1e-3, latency_ms=rng.random() * 900,
                ttft_ms=rng.random() * 300 if i % 4 == 0 else None,
                candidates=[CandidateLog(m, rng.random(), 1e-4) for m in MODELS]))
        log.flush(120)
    finally:
        log.close()


async def block(port: int, raws: list[bytes], seconds: float) -> list[float]:
    """Back-to-back requests on one connection for ``seconds``; their latencies (s)."""
    conn = await Connection.open(port)
    out, i = [], 0
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status, body, _ = await conn.request(raws[i % len(raws)])
            if status != 200:
                raise RuntimeError(f"HTTP {status} from port {port}: {body[:200]!r}")
            out.append(time.perf_counter() - t0)
            i += 1
    finally:
        await conn.close()
    return out


async def poll(port: int, window_s: float, refresh_s: float, phase: float,
               stop: asyncio.Event, times: list[float]) -> None:
    """One open dashboard: a stats request every ``refresh_s`` until ``stop``. Like a
    browser, it connects again when the server has closed an idle keep-alive connection
    (uvicorn's idle timeout is 5 s, the page's refresh period)."""
    raw = get(f"/admin/stats?window_s={window_s:g}", KEY)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), phase)
    conn = None
    try:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                conn = conn or await Connection.open(port)
                status, body, _ = await conn.request(raw)
            except (asyncio.IncompleteReadError, ConnectionError):
                conn = await Connection.open(port)
                status, body, _ = await conn.request(raw)
            if status != 200:
                raise RuntimeError(f"/admin/stats: HTTP {status}: {body[:200]!r}")
            times.append(time.perf_counter() - t0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), refresh_s)
    finally:
        if conn is not None:
            with contextlib.suppress(ConnectionError):
                await conn.close()


async def with_dashboards(port: int, raws: list[bytes], seconds: float,
                          args: argparse.Namespace, polled: list[float]) -> list[float]:
    stop = asyncio.Event()
    pollers = [asyncio.create_task(poll(port, args.window_s, args.refresh_s,
                                        args.refresh_s * k / args.dashboards, stop, polled))
               for k in range(args.dashboards)]
    await asyncio.sleep(0.2)  # the first polls are under way
    try:
        return await block(port, raws, seconds)
    finally:
        stop.set()
        await asyncio.gather(*pollers)


async def measure(up: int, port: int, args: argparse.Namespace) -> dict[str, object]:
    direct_raws = [post(PATH, b) for b in bodies(NAMED)]
    routed = [post(PATH, b) for b in bodies("auto")]
    await block(up, direct_raws, 1.0)  # warm: connections, lazy imports, first decisions
    await block(port, routed, 2.0)
    lat: dict[str, list[float]] = {"direct": [], "off": [], "on": []}
    polled: list[float] = []
    for k in range(args.blocks):
        lat["direct"] += await block(up, direct_raws, args.block_s / 4)
        for side in (("off", "on") if k % 2 == 0 else ("on", "off")):
            if side == "off":
                lat["off"] += await block(port, routed, args.block_s)
            else:
                lat["on"] += await with_dashboards(port, routed, args.block_s, args, polled)
    d50, d99 = pct(lat["direct"], 50), pct(lat["direct"], 99)
    out: dict[str, object] = {"direct_p50_ms": d50, "direct_p99_ms": d99}
    for side in ("off", "on"):
        p50, p99 = pct(lat[side], 50), pct(lat[side], 99)
        out |= {f"{side}_n": len(lat[side]), f"{side}_p50_ms": p50, f"{side}_p99_ms": p99,
                f"overhead_{side}_p50_ms": p50 - d50, f"overhead_{side}_p99_ms": p99 - d99}
    out |= {"ratio_p50": out["on_p50_ms"] / out["off_p50_ms"],
            "ratio_p99": out["on_p99_ms"] / out["off_p99_ms"],
            "overhead_ratio_p50": out["overhead_on_p50_ms"] / out["overhead_off_p50_ms"],
            "polls": len(polled), "stats_p50_ms": pct(polled, 50),
            "stats_p99_ms": pct(polled, 99)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dashboards", type=int, default=5, help="open dashboards (pollers)")
    ap.add_argument("--refresh-s", type=float, default=5.0, help="the page's refresh period")
    ap.add_argument("--window-s", type=float, default=3600.0, help="the window polled")
    ap.add_argument("--blocks", type=int, default=6, help="blocks per side")
    ap.add_argument("--block-s", type=float, default=8.0, help="seconds of requests a block")
    ap.add_argument("--seed-rows", type=int, default=20_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CONTEXTFORGE_MASTER_KEY": KEY}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        config = bench_config(tmp, up := free_port())
        seed(f"sqlite:///{tmp / 'traffic.sqlite3'}", args.seed_rows, time.time())
        upstream = [sys.executable, str(ROOT / "benchmarks/_immediate_upstream.py"), str(up)]
        with running(upstream, f"http://127.0.0.1:{up}/v1/models", tmp / "upstream.log",
                     env=env):
            port = free_port()
            argv = [sys.executable, "-m", "service.cli", "serve", "--config", str(config),
                    "--port", str(port)]
            with running(argv, f"http://127.0.0.1:{port}/healthz", tmp / "gateway.log",
                         cwd=ROOT, env=env):
                result = asyncio.run(measure(up, port, args))
    result |= {"dashboards": args.dashboards, "refresh_s": args.refresh_s,
               "window_s": args.window_s,
               "blocks": args.blocks, "block_s": args.block_s, "seed_rows": args.seed_rows,
               "machine": f"{cpu_model()}, {os.cpu_count()} cores, "
                          f"Python {platform.python_version()}",
               "date": time.strftime("%Y-%m-%d")}
    report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def report(r: dict) -> None:
    print(f"routed requests (model auto, c=1), {r['blocks']} interleaved blocks of "
          f"{r['block_s']:g} s per side; {r['dashboards']} dashboards polling every "
          f"{r['refresh_s']:g} s (window {r['window_s']:g} s); log seeded with "
          f"{r['seed_rows']} rows")
    print(f"{'':26}{'n':>7}{'p50 ms':>10}{'p99 ms':>10}{'added p50':>11}{'added p99':>11}")
    print(f"{'upstream direct':26}{'':>7}{r['direct_p50_ms']:>10.2f}{r['direct_p99_ms']:>10.2f}")
    for side, name in (("off", "no dashboard"), ("on", "dashboards open")):
        print(f"{name:26}{r[f'{side}_n']:>7}{r[f'{side}_p50_ms']:>10.2f}"
              f"{r[f'{side}_p99_ms']:>10.2f}{r[f'overhead_{side}_p50_ms']:>11.2f}"
              f"{r[f'overhead_{side}_p99_ms']:>11.2f}")
    print(f"ratio open/none: p50 {r['ratio_p50']:.3f}, p99 {r['ratio_p99']:.3f}, "
          f"added p50 {r['overhead_ratio_p50']:.3f}")
    print(f"/admin/stats as the pollers saw it: {r['polls']} polls, p50 "
          f"{r['stats_p50_ms']:.1f} ms, p99 {r['stats_p99_ms']:.1f} ms")
    print(f"machine: {r['machine']} (shared with other work: compare ratios)")


if __name__ == "__main__":
    raise SystemExit(main())
