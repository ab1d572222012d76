"""What the gateway adds to a request, against an upstream that answers at once.

    python benchmarks/gateway_overhead.py [--json FILE] [--n 1000] [--seconds 10]

One run, three processes: the immediate upstream (``_immediate_upstream.py``), the gateway
(``contextforge serve`` on the default config, every model deployed on that upstream through
the OpenAI-compatible adapter, traffic log on), and this client (``_http_load.py``).

- ``direct_*`` is client -> upstream; ``gateway_*`` is client -> gateway -> upstream with
  ``model: "auto"`` (embed + predict + policy, then the upstream call, then accounting), a
  different short prompt each request. Sequential, one keep-alive connection, in alternating
  blocks so machine noise hits both alike. ``overhead_p50_ms`` / ``overhead_p99_ms`` are the
  differences of the percentiles.
- ``routed_rps``: closed loop, 32 connections, for ``--seconds``; one gateway worker.
- ``stream_ttft_overhead_p50_ms``: time to the first streamed body byte, gateway minus direct;
  ``stream_added_p50_ms``: a routed stream's first byte minus a routed non-streaming answer's
  whole latency, i.e. what streaming adds beyond routing (which must finish before the first
  byte: the routing headers go out with it).
- ``rss_mib``: the gateway's resident memory after the run; ``start_s``: from launching
  ``contextforge serve`` to its first healthy answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _http_load import closed_loop, post, sequential  # noqa: E402

PROMPTS = [
    "What is the capital of Australia?", "Translate 'good morning' into French.",
    "Is 97 a prime number?", "Name three sorting algorithms.",
    "What does HTTP 429 mean?", "Write a haiku about autumn.",
    "How many legs does a spider have?", "Define photosynthesis in one sentence.",
    "What is 17 times 23?", "Who wrote Pride and Prejudice?",
    "Explain recursion to a child.", "What is the boiling point of water in Kelvin?",
    "Give a synonym for 'happy'.", "Which planet is closest to the sun?",
    "What is a hash table?", "Convert 5 miles to kilometres.",
]
LITELLM = {"overhead_p50_ms": 8.1, "overhead_p99_ms": 9.6, "routed_rps": 123,
           "stream_ttft_overhead_p50_ms": 10.0, "rss_mib": 385, "start_s": 5.7}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> float:
    t0 = time.perf_counter()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - t0
        except httpx.TransportError:
            pass
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{url}: not healthy in {timeout} s")
        time.sleep(0.005)


def bench_config(tmp: Path, upstream_port: int) -> Path:
    cfg = yaml.safe_load((ROOT / "contextforge.yaml").read_text())
    for key in ("encoder", "router"):
        cfg[key]["path"] = str(ROOT / cfg[key]["path"])
    cfg["providers"] = [{"name": "immediate", "type": "openai-compatible",
                         "endpoint": f"http://127.0.0.1:{upstream_port}/v1"}]
    cfg["default_deployment"] = {"provider": "immediate"}
    cfg["traffic"]["dsn"] = f"sqlite:///{tmp / 'traffic.sqlite3'}"
    cfg["admin"] = {"state_path": str(tmp / "admin.json")}
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def bodies(model: str, stream: bool = False) -> list[bytes]:
    out = []
    for p in PROMPTS:
        body = {"model": model, "messages": [{"role": "user", "content": p}]}
        if stream:
            body["stream"] = True
        out.append(post("/v1/chat/completions", json.dumps(body).encode()))
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1e3, q))


async def alternating(up: int, gw: int, n: int, stream: bool, block: int = 100):
    direct, gateway = [], []
    d_raws, g_raws = bodies("gpt-4o", stream), bodies("auto", stream)
    await sequential(up, d_raws * 2)  # warm both paths: connections, caches, lazy imports
    await sequential(gw, g_raws * 2)
    for start in range(0, n, block):
        k = min(block, n - start)
        direct += await sequential(up, [d_raws[(start + i) % len(d_raws)] for i in range(k)])
        gateway += await sequential(gw, [g_raws[(start + i) % len(g_raws)] for i in range(k)])
    return direct, gateway


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--n", type=int, default=1000, help="sequential requests per path")
    ap.add_argument("--seconds", type=float, default=10.0, help="closed-loop duration")
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()

    up_port, gw_port = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        config = bench_config(tmp, up_port)
        upstream = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks/_immediate_upstream.py"), str(up_port)],
            env=env)
        gateway = None
        try:
            wait_healthy(f"http://127.0.0.1:{up_port}/v1/models", upstream)
            t0 = time.perf_counter()
            gateway = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--config", str(config),
                 "--port", str(gw_port)], cwd=ROOT, env=env,
                stdout=subprocess.DEVNULL, stderr=open(tmp / "gateway.log", "w"))  # noqa: SIM115
            wait_healthy(f"http://127.0.0.1:{gw_port}/healthz", gateway)
            start_s = time.perf_counter() - t0

            direct, routed = asyncio.run(alternating(up_port, gw_port, args.n, stream=False))
            d_lat, g_lat = [x[0] for x in direct], [x[0] for x in routed]
            s_direct, s_routed = asyncio.run(alternating(up_port, gw_port, args.n // 2,
                                                         stream=True))
            ttft_d, ttft_g = [x[1] for x in s_direct], [x[1] for x in s_routed]
            n_d, lat_dc, err_d = asyncio.run(closed_loop(up_port, bodies("gpt-4o"),
                                                         args.connections, args.seconds))
            n_g, lat_gc, err_g = asyncio.run(closed_loop(gw_port, bodies("auto"),
                                                         args.connections, args.seconds))
            rss = rss_mib(gateway.pid)
        finally:
            for proc in (gateway, upstream):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)

    result = {
        "direct_p50_ms": pct(d_lat, 50), "direct_p99_ms": pct(d_lat, 99),
        "gateway_p50_ms": pct(g_lat, 50), "gateway_p99_ms": pct(g_lat, 99),
        "overhead_p50_ms": pct(g_lat, 50) - pct(d_lat, 50),
        "overhead_p99_ms": pct(g_lat, 99) - pct(d_lat, 99),
        "direct_rps": n_d / args.seconds, "routed_rps": n_g / args.seconds,
        "routed_p99_ms_at_connections": pct(lat_gc, 99),
        "direct_p99_ms_at_connections": pct(lat_dc, 99),
        "errors": err_d + err_g, "connections": args.connections,
        "stream_ttft_direct_p50_ms": pct(ttft_d, 50), "stream_ttft_gateway_p50_ms": pct(ttft_g, 50),
        "stream_ttft_overhead_p50_ms": pct(ttft_g, 50) - pct(ttft_d, 50),
        # What streaming itself adds: a routed stream's first byte against a routed
        # non-streaming answer's last byte (both through the gateway, same run).
        "stream_added_p50_ms": pct(ttft_g, 50) - pct(g_lat, 50),
        "rss_mib": rss, "start_s": start_s, "n": args.n,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    rows = [
        ("p50 latency, ms", result["direct_p50_ms"], result["gateway_p50_ms"]),
        ("p99 latency, ms", result["direct_p99_ms"], result["gateway_p99_ms"]),
        ("stream first byte p50, ms", result["stream_ttft_direct_p50_ms"],
         result["stream_ttft_gateway_p50_ms"]),
        (f"requests/s ({args.connections} conns)", result["direct_rps"], result["routed_rps"]),
        (f"p99 ms at {args.connections} conns", result["direct_p99_ms_at_connections"],
         result["routed_p99_ms_at_connections"]),
    ]
    print(f"{'':32} {'direct':>10} {'gateway':>10}")
    for label, d, g in rows:
        print(f"{label:32} {d:10.2f} {g:10.2f}")
    print()
    print(f"streaming's own addition to the first byte, p50: "
          f"{result['stream_added_p50_ms']:.2f} ms")
    print()
    print(f"{'':32} {'ours':>10} {'LiteLLM*':>10}")
    for key in ("overhead_p50_ms", "overhead_p99_ms", "routed_rps",
                "stream_ttft_overhead_p50_ms", "rss_mib", "start_s"):
        print(f"{key:32} {result[key]:10.2f} {LITELLM[key]:10.2f}")
    print("* LiteLLM proxy 1.108.7 figures as quoted in the issue (measured on this kind of "
          "machine, not in this run); it neither embeds nor routes.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
