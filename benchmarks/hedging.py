"""Hedging: p99 with hedged requests on versus off, under one deployment with slow spells, in
one run.

    python benchmarks/hedging.py [--requests 2000] [--rate 100] [--spike-share 0.05]
                                 [--spike-ms 500] [--percentile 95] [--share 0.1] [--json FILE]

Three fault-injecting upstreams (``tests/upstreams/faults.py``) serve ``gpt-4o``, each
answering in ``--upstream-ms``; the third, besides, takes ``--spike-ms`` more on
``--spike-share`` of its requests (a deployment with a heavy tail: a busy replica, a slow
region). Two gateways on the same upstreams and config, one with ``dispatch.hedge`` on
(``--percentile`` of each deployment's recent timings, at most ``--share`` of requests) and one
with it off, take turns: request ``i`` goes to one, ``i + 1`` to the other, at ``--rate`` in all
(open loop), so both meet the same spikes, load and machine. Reported per gateway: p50, p95,
p99 and the slowest, answered and lost; for the hedging one, the hedges sent (its
``contextforge_hedged_requests_total``) as a share of its requests: the extra upstream calls
that bought the tail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from chaos import AUTH, fault_upstreams, gateway, hedges, one  # noqa: E402
from gateway_overhead import cpu_model  # noqa: E402

ARMS = ("hedge", "no_hedge")


async def drive(urls: dict[str, str], ups: dict[str, str], args: argparse.Namespace) -> dict:
    base = {"kind": "latency", "seconds": args.upstream_ms / 1e3}
    spike = {"kind": "latency", "seconds": args.spike_ms / 1e3, "rate": args.spike_share}
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
    clients = {a: httpx.AsyncClient(base_url=u, timeout=30.0, headers=AUTH, limits=limits)
               for a, u in urls.items()}
    try:
        async with httpx.AsyncClient() as admin:
            for name, u in ups.items():
                faults = [base, spike] if name == "d2" else [base]
                await admin.post(f"{u}/_faults", json={"faults": faults, "seed": 7})
        # warm-up: every deployment's recent timings, before anything is measured
        await asyncio.gather(*(load_arm(clients, "w", args.warmup, args.rate)))
        before = {a: await hedges(c) for a, c in clients.items()}
        rows = await asyncio.gather(*load_arm(clients, "r", args.requests, args.rate))
        after = {a: await hedges(c) for a, c in clients.items()}
    finally:
        for c in clients.values():
            await c.aclose()
    out: dict = {a: [] for a in ARMS}
    for r in (x for batch in rows for x in batch):
        out[r.pop("arm")].append(r)
    return {"rows": out, "hedged": {a: after[a] - before[a] for a in ARMS}}


def load_arm(clients: dict[str, httpx.AsyncClient], prefix: str, n: int, rate: float):
    """``n`` requests per gateway, alternating between them, ``rate`` a second in all."""

    async def run() -> list[dict]:
        loop = asyncio.get_running_loop()
        start, tasks = loop.time(), []
        for i in range(2 * n):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            arm = ARMS[i % 2]
            tasks.append(asyncio.create_task(_tagged(arm, one(clients[arm], f"{prefix}{i}"))))
        return await asyncio.gather(*tasks)

    return [run()]


async def _tagged(arm: str, call) -> dict:
    row = await call
    row["arm"] = arm
    return row


def summarise(run: dict, args: argparse.Namespace) -> dict:
    out: dict = {}
    for arm in ARMS:
        rows = run["rows"][arm]
        ms = np.array([r["ms"] for r in rows if r["outcome"] == "answered"])
        out[arm] = {
            "requests": len(rows), "answered": len(ms),
            "lost": sum(r["outcome"] == "lost" for r in rows),
            **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
            "max_ms": round(float(ms.max()), 1),
            "hedged": run["hedged"][arm],
            "hedged_share": round(run["hedged"][arm] / len(rows), 4),
        }
    h, n = out["hedge"], out["no_hedge"]
    out["p99_ratio"] = round(h["p99_ms"] / n["p99_ms"], 3)
    out["settings"] = {k: getattr(args, k) for k in (
        "requests", "rate", "upstream_ms", "spike_ms", "spike_share", "percentile", "share")}
    out["machine"] = f"{cpu_model()}, {os.cpu_count()} cores"
    out["date"] = time.strftime("%Y-%m-%d")
    return out


def report(r: dict) -> None:
    print(f"{'':28}{'hedging on':>14}{'hedging off':>14}")
    for key in ("requests", "answered", "lost", "p50_ms", "p95_ms", "p99_ms", "max_ms",
                "hedged", "hedged_share"):
        a, b = r["hedge"][key], r["no_hedge"][key]
        if key == "hedged_share":
            a, b = f"{a:.1%}", f"{b:.1%}"
        print(f"{key:28}{a!s:>14}{b!s:>14}")
    s = r["settings"]
    print(f"p99 on / off: {r['p99_ratio']:.2f}x at {r['hedge']['hedged_share']:.1%} extra "
          f"upstream calls; d2 takes +{s['spike_ms']:g} ms on {s['spike_share']:.0%} of its "
          f"requests; every upstream {s['upstream_ms']:g} ms; hedge after p{s['percentile']:g},"
          f" cap {s['share']:.0%}; {s['rate']:g} req/s in all; {r['machine']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="per gateway")
    ap.add_argument("--warmup", type=int, default=200, help="per gateway")
    ap.add_argument("--rate", type=float, default=100.0, help="requests a second, both together")
    ap.add_argument("--upstream-ms", type=float, default=50.0)
    ap.add_argument("--spike-ms", type=float, default=500.0)
    ap.add_argument("--spike-share", type=float, default=0.05)
    ap.add_argument("--percentile", type=float, default=95.0)
    ap.add_argument("--share", type=float, default=0.1, help="the hedged share's cap")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmpdir, contextlib.ExitStack() as stack:
        tmp = Path(tmpdir)
        ports = stack.enter_context(fault_upstreams(tmp))
        urls = {}
        for arm in ARMS:
            conf = argparse.Namespace(
                format="openai", timeout_s=5.0, failure_threshold=5, failure_rate=0.5,
                window_s=60.0, min_requests=20, cooldown_s=2.0, half_open_calls=3,
                no_hedge=arm == "no_hedge", hedge_percentile=args.percentile,
                hedge_share=args.share)
            (tmp / arm).mkdir()
            urls[arm] = stack.enter_context(gateway(tmp / arm, ports, conf))
        ups = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
        run = asyncio.run(drive(urls, ups, args))
    result = summarise(run, args)
    report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
