"""What the gateway adds to a request against an upstream that answers at once, beside LiteLLM.

    python benchmarks/gateway_overhead.py [--peer litellm] [--seconds 10] [--json FILE]

One run: the immediate upstream (``_immediate_upstream.py``); the gateway (``contextforge
serve`` on the default config, every model deployed on that upstream through the
OpenAI-compatible adapter, traffic log on, one worker); then, with ``--peer litellm``, the
LiteLLM proxy (one worker, no routing, ``_peer_litellm.py``) on the same upstream, started after
the gateway has stopped so neither competes with the other for the two cores.

Each system is measured at the same points with the same load tool:
- ``c=1``: one keep-alive connection, back to back, for ``--seconds``: p50 / p99; what a
  system adds is its percentile minus the upstream's own (``direct``, measured just before it).
- ``c=32`` (``--connections``): closed loop for ``--seconds``: requests/s and p99.
- streaming: time to the first body byte, gateway minus direct, alternating blocks of
  sequential requests (``--n`` per side).
- start: from launch to the first healthy answer; RSS: the process tree's after the load.
Ours is measured twice: ``model: "auto"`` (embed + route, the DESIGN keys ``gateway_*``,
``routed_rps``...) and a named catalog model (``named_*``: no routing, the path LiteLLM takes).

The load tool is wrk (``apt-get install -y wrk``): C, a fraction of a Python client's CPU per
request on a machine whose two cores it shares with the servers. Without wrk, ``--load python``
falls back to ``_http_load.py``. Time to first byte is always ``_http_load.py``'s: wrk times
whole responses only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _peer_litellm as litellm  # noqa: E402
from _http_load import closed_loop, post, sequential  # noqa: E402
from _wrk import have_wrk, run_wrk  # noqa: E402

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
NAMED = "gpt-4o"  # a catalog model: the gateway skips routing, LiteLLM serves it by name
PATH = "/v1/chat/completions"
# (name, ours key, peer key, how ours must compare with the peer's figure, factor)
TARGETS = [
    ("named: added p50 at c=1", "named_overhead_p50_ms", "overhead_p50_ms", "<=", 0.1),
    ("named: req/s at c=32", "named_rps", "routed_rps", ">=", 10.0),
    ("named: p99 at c=32", "named_p99_ms_at_connections", "routed_p99_ms_at_connections", "<=",
     0.1),
    ("auto: added p50 at c=1", "overhead_p50_ms", "overhead_p50_ms", "<=", 0.2),
    ("auto: req/s at c=32", "routed_rps", "routed_rps", ">=", 6.0),
    ("start-up to healthy", "start_s", "start_s", "<=", 0.25),
    ("RSS after the load", "rss_mib", "rss_mib", "<=", 1.0),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> float:
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


@contextmanager
def running(argv: list[str], health_url: str, log: Path, **popen):
    """Start a server; yield (process, seconds from launch to its first healthy answer)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), **popen)  # noqa: SIM115
    try:
        wait_healthy(health_url, proc)
        yield proc, time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_config(tmp: Path, upstream_port: int, base: Path = ROOT / "contextforge.yaml") -> Path:
    """``base`` (the shipped config by default) with every model on the immediate upstream."""
    cfg = yaml.safe_load(base.read_text())
    for key, field in (("encoder", "path"), ("encoder", "text_path"), ("router", "path")):
        if field in cfg.get(key, {}):
            cfg[key][field] = str(base.resolve().parent / cfg[key][field])
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
        out.append(json.dumps(body).encode())
    return out


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants (LiteLLM's CLI may fork workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


class Load:
    """One load point (rps, p50, p99, errors) with wrk or the Python client."""

    def __init__(self, tool: str, seconds: float, warmup: float):
        self.tool, self.seconds, self.warmup = tool, seconds, warmup

    def point(self, port: int, raws: list[bytes], connections: int) -> dict[str, float]:
        if self.warmup > 0:
            self._run(port, raws, connections, self.warmup)
        return self._run(port, raws, connections, self.seconds)

    def _run(self, port: int, raws: list[bytes], connections: int,
             seconds: float) -> dict[str, float]:
        if self.tool == "wrk":
            r = run_wrk(f"http://127.0.0.1:{port}{PATH}", raws, connections=connections,
                        seconds=seconds)
            return {"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors}
        n, lat, errors = asyncio.run(closed_loop(port, [post(PATH, b) for b in raws],
                                                 connections, seconds))
        return {"rps": n / seconds, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                "errors": errors}


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1e3, q)) if xs else float("nan")


async def first_bytes(up: int, port: int, raws: list[bytes], n: int,
                      block: int = 50) -> tuple[list[float], list[float]]:
    """Seconds to the first streamed byte, direct and through ``port``, alternating blocks
    so machine noise hits both alike."""
    direct_raws = [post(PATH, b) for b in bodies(NAMED, stream=True)]
    raws = [post(PATH, b) for b in raws]
    await sequential(up, direct_raws)  # warm: connections, caches, lazy imports
    await sequential(port, raws * 2)
    direct: list[float] = []
    through: list[float] = []
    for start in range(0, n, block):
        k = min(block, n - start)
        direct += [x[1] for x in await sequential(up, [direct_raws[(start + i) % 16]
                                                       for i in range(k)])]
        through += [x[1] for x in await sequential(port, [raws[(start + i) % 16]
                                                          for i in range(k)])]
    return direct, through


def measure(load: Load, up: int, port: int, model: str, connections: int,
            n: int) -> dict[str, float]:
    """Every load point of one system for one ``model``; the upstream's own c=1 figures are
    measured just before, so what the system adds is read against the machine's state of
    the moment."""
    direct = load.point(up, bodies(NAMED), 1)
    one = load.point(port, bodies(model), 1)
    many = load.point(port, bodies(model), connections)
    ttft_d, ttft_g = asyncio.run(first_bytes(up, port, bodies(model, stream=True), n))
    return {
        "direct_p50_ms": direct["p50_ms"], "direct_p99_ms": direct["p99_ms"],
        "p50_ms": one["p50_ms"], "p99_ms": one["p99_ms"],
        "overhead_p50_ms": one["p50_ms"] - direct["p50_ms"],
        "overhead_p99_ms": one["p99_ms"] - direct["p99_ms"],
        "rps": many["rps"], "p99_ms_at_connections": many["p99_ms"],
        "stream_ttft_p50_ms": pct(ttft_g, 50),
        "stream_ttft_overhead_p50_ms": pct(ttft_g, 50) - pct(ttft_d, 50),
        # What streaming itself adds: the first streamed byte against the whole
        # non-streaming answer (a routed stream's first byte waits for the routing).
        "stream_added_p50_ms": pct(ttft_g, 50) - one["p50_ms"],
        "errors": one["errors"] + many["errors"],
    }


def design_keys(m: dict[str, float], prefix: str = "") -> dict[str, float]:
    """``measure``'s figures under DESIGN.md's ``gateway_overhead`` names (``gateway_*``,
    ``routed_rps``) or, with a prefix, as ``named_p50_ms``, ``named_rps``..."""
    rename = {"p50_ms": "gateway_p50_ms", "p99_ms": "gateway_p99_ms", "rps": "routed_rps",
              "p99_ms_at_connections": "routed_p99_ms_at_connections"}
    if prefix:
        return {f"{prefix}{k}": v for k, v in m.items() if not k.startswith("direct_")}
    return {rename.get(k, k): v for k, v in m.items()}


def targets(ours: dict[str, float], peer: dict[str, float]) -> list[dict[str, object]]:
    rows = []
    for name, key, peer_key, op, factor in TARGETS:
        mine, theirs = ours[key], peer[peer_key]
        ratio = mine / theirs if theirs else float("nan")
        passed = ratio <= factor if op == "<=" else ratio >= factor
        rows.append({"target": name, "ours": mine, "litellm": theirs, "ratio": ratio,
                     "limit": f"{op} {factor:g}x", "passed": bool(passed)})
    return rows


def run_ours(args: argparse.Namespace, load: Load, tmp: Path, up: int,
             env: dict[str, str]) -> dict[str, float]:
    port = free_port()
    argv = [sys.executable, "-m", "service.cli", "serve", "--config",
            str(bench_config(tmp, up, args.config)), "--port", str(port)]
    with running(argv, f"http://127.0.0.1:{port}/healthz", tmp / "gateway.log", cwd=ROOT,
                 env=env) as (proc, start_s):
        out = design_keys(measure(load, up, port, "auto", args.connections, args.n))
        out |= design_keys(measure(load, up, port, NAMED, args.connections, args.n), "named_")
        out["rss_mib"], out["start_s"] = tree_rss_mib(proc.pid), start_s
    out["direct_rps"] = load.point(up, bodies(NAMED), args.connections)["rps"]
    return out


def run_litellm(args: argparse.Namespace, load: Load, tmp: Path, up: int) -> dict[str, float]:
    version = litellm.ensure_venv(args.peer_venv)
    port = free_port()
    argv, env = litellm.command(args.peer_venv, litellm.write_config(tmp, up, NAMED), port)
    with running(argv, f"http://127.0.0.1:{port}{litellm.HEALTH_PATH}", tmp / "litellm.log",
                 env=env) as (proc, start_s):
        out = design_keys(measure(load, up, port, NAMED, args.connections, args.n))
        out["rss_mib"], out["start_s"] = tree_rss_mib(proc.pid), start_s
    return {**out, "version": version}  # type: ignore[dict-item]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer", choices=["litellm"], help="measure this peer in the same run")
    ap.add_argument("--peer-venv", type=Path, default=ROOT / ".cache/peer-litellm")
    ap.add_argument("--seconds", type=float, default=10.0, help="per load point")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before each point")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--n", type=int, default=300, help="streamed requests per side")
    ap.add_argument("--load", choices=["wrk", "python"], default="wrk" if have_wrk() else "python")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--config", type=Path, default=ROOT / "contextforge.yaml",
                    help="the gateway's config to start from (e.g. one routing on the static "
                         "encoder); its models are all deployed on the immediate upstream")
    args = ap.parse_args()

    load = Load(args.load, args.seconds, args.warmup)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        up = free_port()
        upstream = [sys.executable, str(ROOT / "benchmarks/_immediate_upstream.py"), str(up)]
        with running(upstream, f"http://127.0.0.1:{up}/v1/models", tmp / "upstream.log",
                     env=env):
            result |= run_ours(args, load, tmp, up, env)
            if args.peer == "litellm":
                result["peer"] = {"litellm": run_litellm(args, load, tmp, up)}
    result |= {
        "connections": args.connections, "seconds": args.seconds, "n": args.n,
        "load_tool": wrk_version() if args.load == "wrk" else "_http_load.py",
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.peer:
        result["targets"] = targets(result, result["peer"]["litellm"])  # type: ignore[arg-type,index]
    report(result, args.connections)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def report(r: dict, c: int) -> None:
    peer = r.get("peer", {}).get("litellm")
    cols = ["direct", "auto", NAMED] + ([f"LiteLLM {peer['version']}"] if peer else [])
    rows = [
        ("p50 at c=1, ms", r["direct_p50_ms"], r["gateway_p50_ms"], r["named_p50_ms"],
         peer and peer["gateway_p50_ms"]),
        ("added p50 at c=1, ms", 0.0, r["overhead_p50_ms"], r["named_overhead_p50_ms"],
         peer and peer["overhead_p50_ms"]),
        ("added p99 at c=1, ms", 0.0, r["overhead_p99_ms"], r["named_overhead_p99_ms"],
         peer and peer["overhead_p99_ms"]),
        (f"req/s at c={c}", r["direct_rps"], r["routed_rps"], r["named_rps"],
         peer and peer["routed_rps"]),
        (f"p99 at c={c}, ms", float("nan"), r["routed_p99_ms_at_connections"],
         r["named_p99_ms_at_connections"], peer and peer["routed_p99_ms_at_connections"]),
        ("stream first byte added, p50 ms", 0.0, r["stream_ttft_overhead_p50_ms"],
         r["named_stream_ttft_overhead_p50_ms"], peer and peer["stream_ttft_overhead_p50_ms"]),
        ("start to healthy, s", float("nan"), r["start_s"], r["start_s"],
         peer and peer["start_s"]),
        ("RSS after the load, MiB", float("nan"), r["rss_mib"], r["rss_mib"],
         peer and peer["rss_mib"]),
    ]
    print(f"{'':34}" + "".join(f"{h:>16}" for h in cols))
    for label, *vals in rows:
        print(f"{label:34}" + "".join(f"{v:16.2f}" for v in vals[:len(cols)]))
    print(f"load: {r['load_tool']}, {r['seconds']:g} s per point; {r['machine']}")
    for t in r.get("targets", []):
        print(f"{t['target']:28} ours {t['ours']:9.2f}  LiteLLM {t['litellm']:9.2f}  "
              f"ratio {t['ratio']:6.3f}  target {t['limit']:8}  "
              f"{'PASS' if t['passed'] else 'FAIL'}")


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (out.stdout + out.stderr).split("[")[0].strip() or "wrk"


def cpu_model() -> str:
    if shutil.which("lscpu"):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


if __name__ == "__main__":
    raise SystemExit(main())
