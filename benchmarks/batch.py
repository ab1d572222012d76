"""A 1,000-line batch through the gateway, and what it costs live traffic meanwhile.

    python benchmarks/batch.py [--lines 1000] [--live 4] [--seconds 10] [--json FILE]

The gateway runs in its own process (``_batch_server.py``: the shipped config, every model on
the simulated provider answering after ``--ttft-ms``, the default ``batch.concurrency`` 4).
Three phases, each measured with the same load tool (``_http_load.py``):
- ``live``: ``--live`` clients send routed chat requests (``model: auto``) back to back for
  ``--seconds``: p50 / p99 and requests/s, with no batch;
- ``batch``: a ``--lines`` batch of routed chat requests uploaded and run alone: the time
  from ``POST /v1/batches`` to ``completed``, and lines/s;
- ``with_live``: the same batch again, with the live load for ``--seconds`` beside it: the
  live p50 / p99 (what a batch costs live traffic), the lines the batch ran meanwhile (what
  live traffic costs the batch; none when it keeps ``batch.yield_above`` requests in
  flight), and the batch's time to completion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _http_load import closed_loop, post

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3 if xs else float("nan")


def live_bodies(n: int = 200) -> list[bytes]:
    return [post("/v1/chat/completions", json.dumps({
        "model": "auto", "messages": [{"role": "user", "content": f"live question {i}: "
                                       "what is the capital of France?"}]}).encode())
            for i in range(n)]


def batch_file(n: int, tag: str) -> bytes:
    return "".join(json.dumps({
        "custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "auto", "messages": [{"role": "user", "content":
                                                f"{tag} question {i}: explain recursion"}]}})
        + "\n" for i in range(n)).encode()


def run_batch(url: str, n: int, tag: str) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=60) as c:
        f = c.post("/v1/files", files={"file": ("in.jsonl", batch_file(n, tag))},
                   data={"purpose": "batch"}).json()
        t0 = time.perf_counter()
        b = c.post("/v1/batches", json={"input_file_id": f["id"], "completion_window": "24h",
                                        "endpoint": "/v1/chat/completions"}).json()
        while b["status"] not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(0.1)
            b = c.get(f"/v1/batches/{b['id']}").json()
        took = time.perf_counter() - t0
        out = c.get(f"/v1/files/{b['output_file_id']}/content").text.splitlines()
        ids = {json.loads(x)["custom_id"] for x in out}
    assert b["status"] == "completed" and len(out) == len(ids) == n, b
    return {"batch_s": round(took, 2), "lines_per_s": round(n / took, 1)}


def live_load(port: int, clients: int, seconds: float) -> dict[str, float]:
    ok, lat, errors = asyncio.run(closed_loop(port, live_bodies(), clients, seconds))
    return {"live_p50_ms": round(pct(lat, 0.5), 1), "live_p99_ms": round(pct(lat, 0.99), 1),
            "live_rps": round(ok / seconds, 1), "live_errors": errors}


def lines_done(url: str, batch_id: str) -> int:
    counts = httpx.get(f"{url}/v1/batches/{batch_id}", timeout=10).json()["request_counts"]
    return counts["completed"] + counts["failed"]


def busy(url: str, port: int, a: argparse.Namespace) -> dict[str, float]:
    """The live load for ``--seconds`` while a batch runs: the live figures, and how many
    lines the batch ran meanwhile (none, when the live load keeps the runner yielding);
    then the batch's time to completion once the load stops."""
    with httpx.Client(base_url=url, timeout=60) as c:
        f = c.post("/v1/files", files={"file": ("in.jsonl", batch_file(a.lines, "b"))},
                   data={"purpose": "batch"}).json()
        t0 = time.perf_counter()
        b = c.post("/v1/batches", json={"input_file_id": f["id"], "completion_window": "24h",
                                        "endpoint": "/v1/chat/completions"}).json()
    out = live_load(port, a.live, a.seconds)
    during = lines_done(url, b["id"])
    while lines_done(url, b["id"]) < a.lines:
        time.sleep(0.1)
    return {**out, "lines_during_live": during,
            "lines_per_s_during_live": round(during / a.seconds, 1),
            "batch_s": round(time.perf_counter() - t0, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=1000)
    p.add_argument("--live", type=int, default=4, help="live clients")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "_batch_server.py"),
                                 "--port", str(port), "--dir", tmp, "--ttft-ms",
                                 str(a.ttft_ms), "--concurrency", str(a.concurrency)],
                                cwd=ROOT, env=env)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            live_load(port, a.live, 2.0)  # warm up
            alone = live_load(port, a.live, a.seconds)
            batch = run_batch(url, a.lines, "alone")
            beside = busy(url, port, a)
            result = {"lines": a.lines, "concurrency": a.concurrency, "ttft_ms": a.ttft_ms,
                      "live_clients": a.live, **alone, **batch, "with_live": beside}
        finally:
            proc.terminate()
            proc.wait(30)
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
