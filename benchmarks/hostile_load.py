"""What one hostile client costs everyone else: a maximal prompt, and a storm of admin changes.

    python benchmarks/hostile_load.py [--json FILE] [--seconds 5] [--root DIR]

Runs ``contextforge serve`` on the default config (simulated providers, its own traffic log and
admin state in a scratch folder, a master key for the admin API) and measures:

- ``big_*``: one ~7.5 MB chat prompt (under the 8 MiB body limit; ~1.5M tokens) while this
  client polls ``/healthz`` every 5 ms: the longest ``/healthz`` wait (``big_healthz_max_ms``),
  the big request's status and time, and the server's RSS before and after.
- ``storm_*``: chat latency (p50, p99, max) for a named model (``gpt-4o``), sequential, first
  alone (``quiet_*``) and then while a second connection PUTs a catalog model back to back
  (each PUT validates and rebuilds the engine and the dispatchers), and the PUT rate.

``--root`` runs the server from another checkout (e.g. a worktree of an older commit), with
this script's client, for before/after figures in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _http_load import Connection, post  # noqa: E402
from gateway_overhead import free_port, tree_rss_mib, wait_healthy  # noqa: E402

KEY = "sk-bench-master"
MODEL_PUT = {"name": "bench-model", "input_price": 1.0, "output_price": 2.0,
             "context_window": 8000, "stands_in_for": "gpt-4-1106-preview"}


def big_body() -> bytes:
    words = "the quick brown fox jumps over the lazy dog while 1234 naive routers count "
    text = words * (7_500_000 // len(words))
    return json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]}).encode()


def maximal_prompt(url: str, pid: int) -> dict[str, float]:
    body = big_body()
    rss_before = tree_rss_mib(pid)
    out: dict[str, float] = {}

    def send() -> None:
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/v1/chat/completions", content=body, timeout=300,
                       headers={"content-type": "application/json"})
        out["big_status"], out["big_request_s"] = r.status_code, time.perf_counter() - t0

    waits = []
    worker = threading.Thread(target=send)
    with httpx.Client(base_url=url, timeout=300) as c:  # a frozen server answers late
        worker.start()
        while worker.is_alive():
            t0 = time.perf_counter()
            c.get("/healthz")
            waits.append(time.perf_counter() - t0)
            time.sleep(0.005)
    worker.join()
    return {**out, "big_body_mb": len(body) / 1e6, "big_healthz_max_ms": max(waits) * 1e3,
            "big_healthz_p50_ms": float(np.median(waits)) * 1e3,
            "rss_before_mib": rss_before, "rss_after_mib": tree_rss_mib(pid)}


async def chat_times(port: int, seconds: float) -> tuple[float, float, float]:
    """(p50, p99, max) of sequential named-model chat latency, in ms."""
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    conn = await Connection.open(port)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        status, _, _ = await conn.request(post("/v1/chat/completions", body.encode()))
        assert status == 200, status
        times.append(time.perf_counter() - t0)
    await conn.close()
    ms = np.array(times) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 99)), float(ms.max())


async def put_storm(url: str, stop: asyncio.Event) -> int:
    n = 0
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {KEY}"},
                                 timeout=30) as c:
        while not stop.is_set():
            r = await c.put(f"/admin/models/{MODEL_PUT['name']}", json=MODEL_PUT)
            assert r.status_code in (200, 201), r.text
            n += 1
    return n


async def storm(url: str, port: int, seconds: float) -> dict[str, float]:
    quiet = await chat_times(port, seconds)
    stop = asyncio.Event()
    puts = asyncio.create_task(put_storm(url, stop))
    loud = await chat_times(port, seconds)
    stop.set()
    n = await puts
    return {"quiet_chat_p50_ms": quiet[0], "quiet_chat_p99_ms": quiet[1],
            "storm_chat_p50_ms": loud[0], "storm_chat_p99_ms": loud[1],
            "storm_chat_max_ms": loud[2], "storm_puts_per_s": n / seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--root", default=str(ROOT), help="the checkout whose server to run")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = yaml.safe_load((root / "contextforge.yaml").read_text())
        for section, key in (("encoder", "path"), ("encoder", "text_path"), ("router", "path")):
            if key in cfg.get(section, {}):  # relative to the checkout, not the scratch folder
                cfg[section][key] = str(root / cfg[section][key])
        port = free_port()
        cfg["server"] = {**cfg.get("server", {}), "port": port, "master_key": KEY}
        cfg["traffic"] = {**cfg.get("traffic", {}), "dsn": f"sqlite:///{tmp}/t.sqlite3"}
        cfg["admin"] = {"state_path": f"{tmp}/admin.json"}
        config = Path(tmp) / "c.yaml"
        config.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "PYTHONPATH": str(root)}
        server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--config",
                                   str(config)], cwd=root, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(f"{url}/healthz", server)
            result = {"root": str(root), **maximal_prompt(url, server.pid)}
            result.update(asyncio.run(storm(url, port, args.seconds)))
        finally:
            server.terminate()
            server.wait(30)
    for k, v in result.items():
        print(f"{k:24} {v:.2f}" if isinstance(v, float) else f"{k:24} {v}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
