"""Router promotion under a steady load: does any request fail while the live version changes?

    python benchmarks/promotion_load.py [--seconds 20] [--rate 100] [--every 4] [--json FILE]

Runs ``contextforge serve`` on the shipped config (simulated providers, the MiniLM encoder)
with a scratch registry of two versions, ``v1`` and ``v2`` (copies of the shipped router, or
``--second DIR`` as ``v2``), and sends routed chat requests at ``--rate`` a second, each on
time whatever the ones before are doing (open loop), for ``--seconds`` after a second of
warm-up load that is not counted. Every ``--every`` seconds the live version changes,
alternately through the admin API (swapped at once) and ``contextforge models promote`` in its
own process (followed within ``router.poll_s``; the CLI's own start-up, about a second of CPU,
shares the machine with the server).

Reported: requests, failures (any answer but 200, or none), failures sent during a promotion
(``failed_during_promotion``: from the promotion's start until 1 s after the first answer from
the new version), the time each promotion took to reach traffic (``switch_s``), latency
p50/p99 before the first promotion, during promotions and outside them, and the p99 of each
promotion's window (``promotion_p99_ms``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
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

from gateway_overhead import free_port, wait_healthy  # noqa: E402

KEY = "sk-bench-master"
PROMPTS = [
    "What is the capital of Australia? A) Sydney B) Canberra C) Melbourne D) Perth",
    "Write a Python function that returns the n-th Fibonacci number using memoization.",
    "Prove that there are infinitely many primes.",
    "Summarise the plot of Hamlet in three sentences.",
]
AFTER_SWITCH_S = 1.0  # how long after the first answer from the new version a swap lasts


def scratch_config(tmp: Path, port: int, second: Path | None, poll_s: float) -> Path:
    """The shipped config on ``port``, serving from a registry of v1 and v2 in ``tmp``."""
    routers = tmp / "routers"
    shipped = ROOT / "models" / "routers" / "default"
    shutil.copytree(shipped, routers / "v1")
    shutil.copytree(second or shipped, routers / "v2")
    cfg = yaml.safe_load((ROOT / "contextforge.yaml").read_text())
    for key in ("path", "text_path"):
        cfg["encoder"][key] = str(ROOT / cfg["encoder"][key])
    cfg["router"] = {"path": str(routers / "v1"), "poll_s": poll_s}
    cfg["server"] = {**cfg.get("server", {}), "port": port, "master_key": KEY}
    cfg["traffic"] = {**cfg.get("traffic", {}), "dsn": f"sqlite:///{tmp}/t.sqlite3"}
    cfg["admin"] = {"state_path": f"{tmp}/admin.json"}
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


async def one(client: httpx.AsyncClient, body: dict) -> tuple[float, float, int, str | None]:
    """(sent at, latency s, status, router version): status 0 when no answer came."""
    t0 = time.perf_counter()
    try:
        r = await client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError:
        return t0, time.perf_counter() - t0, 0, None
    return t0, time.perf_counter() - t0, r.status_code, r.headers.get("x-contextforge-router")


async def load(client: httpx.AsyncClient, rate: float, seconds: float) -> list:
    loop = asyncio.get_running_loop()
    start, sent = loop.time(), []
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        body = {"model": "auto",
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
        sent.append(asyncio.create_task(one(client, body)))
    return await asyncio.gather(*sent)


async def promote(client: httpx.AsyncClient, version: str, via: str, config: Path) -> None:
    if via == "admin":
        r = await client.post(f"/admin/routers/{version}/promote",
                              headers={"authorization": f"Bearer {KEY}"})
        if r.status_code != 200:
            raise RuntimeError(f"promote {version}: {r.status_code} {r.text}")
        return
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "models", "promote", version, "--config",
        str(config), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await run.communicate()
    if run.returncode != 0:
        raise RuntimeError(f"contextforge models promote {version}: {err.decode()}")


async def drive(url: str, config: Path, args: argparse.Namespace):
    """The load, and (version, via, started at) for each promotion made during it."""
    promotions = []
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 limits=httpx.Limits(max_connections=200)) as client:
        # A second of load first, not counted: the first requests pay for lazy set-up.
        await load(client, args.rate, 1.0)
        traffic = asyncio.create_task(load(client, args.rate, args.seconds))
        t0, n = time.perf_counter(), 1
        while time.perf_counter() - t0 + args.every < args.seconds - 1:
            await asyncio.sleep(t0 + n * args.every - time.perf_counter())
            version, via = ("v2" if n % 2 else "v1"), ("admin" if n % 2 else "cli")
            promotions.append((version, via, time.perf_counter()))
            await promote(client, version, via, config)
            n += 1
        return await traffic, promotions


def summarise(results: list, promotions: list, args: argparse.Namespace) -> dict:
    sent = np.array([r[0] for r in results])
    latency_ms = np.array([r[1] for r in results]) * 1e3
    ok = np.array([r[2] == 200 for r in results])
    versions = [r[3] for r in results]
    during = np.zeros(len(results), dtype=bool)
    switch_s, windows = [], []
    for version, _, started in promotions:
        first = next((s for s, v in zip(sent, versions, strict=True)
                      if s >= started and v == version), None)
        switch_s.append(None if first is None else round(float(first - started), 3))
        end = (first if first is not None else started + args.every) + AFTER_SWITCH_S
        windows.append((sent >= started) & (sent <= end))
        during |= windows[-1]
    before = sent < promotions[0][2] if promotions else np.ones(len(results), dtype=bool)

    def pct(mask: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(latency_ms[mask], q)), 2) if mask.any() else None

    return {
        "requests": len(results), "rate_per_s": args.rate, "seconds": args.seconds,
        "promotions": len(promotions), "via": [p[1] for p in promotions],
        "failed": int((~ok).sum()), "failed_during_promotion": int((~ok & during).sum()),
        "requests_during_promotion": int(during.sum()),
        "switch_s": switch_s, "poll_s": args.poll_s,
        "answered_by": {v: versions.count(v) for v in sorted({v for v in versions if v})},
        "before_p50_ms": pct(before & ok, 50), "before_p99_ms": pct(before & ok, 99),
        "during_p50_ms": pct(during & ok, 50), "during_p99_ms": pct(during & ok, 99),
        "outside_p50_ms": pct(~during & ok, 50), "outside_p99_ms": pct(~during & ok, 99),
        "promotion_p99_ms": [pct(w & ok, 99) for w in windows],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=100.0, help="requests a second")
    ap.add_argument("--every", type=float, default=4.0, help="seconds between promotions")
    ap.add_argument("--poll-s", type=float, default=2.0, help="the gateway's router.poll_s")
    ap.add_argument("--second", type=Path, help="a router folder to promote as v2 (default: "
                    "another copy of the shipped one)")
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        config = scratch_config(Path(tmp), port, args.second, args.poll_s)
        log = open(Path(tmp) / "server.log", "w")  # noqa: SIM115
        server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--config",
                                   str(config)], cwd=ROOT, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(f"{url}/readyz", server)
            results, promotions = asyncio.run(drive(url, config, args))
        finally:
            server.terminate()
            server.wait(30)
            log.close()
        swaps = [line.split(": ", 1)[-1] for line in (Path(tmp) / "server.log").read_text()
                 .splitlines() if "contextforge.registry" in line]
    result = summarise(results, promotions, args)
    result["server_log"] = swaps
    for k, v in result.items():
        if k != "server_log":
            print(f"{k:26} {v}")
    for line in swaps:
        print(f"  server: {line}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
