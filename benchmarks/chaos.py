"""Chaos: one model on three deployments, one failing half its requests and one hanging for a
while, under a steady load through the gateway.

    python benchmarks/chaos.py [--requests 2000] [--rate 100] [--stream]
                               [--format openai|anthropic] [--json FILE]

Three fault-injecting upstreams (``tests/upstreams/faults.py``, one process each, 50 ms to
answer by default) serve ``gpt-4o`` through the OpenAI-compatible adapter; the gateway
(``contextforge serve`` on the shipped config with those three deployments) runs in its own
process with: a 1 s per-deployment timeout; breakers that open on 5 failures in a row or on a
30% failure rate over the last 1 s (at least 10 calls) and cool down 2 s; hedging on (a call
later than the 90th percentile of its deployment's recent ones races another deployment, at
most 10% of requests; ``--no-hedge`` turns it off). Requests go out
on an open-loop schedule (``--rate`` a second, each on time whatever the earlier ones are
doing), each prompt carrying a nonce the upstream echoes:

1. healthy: ``--healthy-requests`` with every deployment well (the p99 baseline);
2. chaos: ``--requests``; from ``--flaky`` (start, end s) ``d1`` answers half its requests with
   503 (or ``--flaky-fault``: a reset, a malformed body, a cut stream), from ``--hang`` ``d2``
   sends nothing until the gateway gives up; then all recover.

Reported (DESIGN.md's ``chaos`` keys first): ``requests``, ``answered`` (a whole answer with the
request's own nonce: a stream must end with a finish reason and ``[DONE]``), ``clear_errors``
(a 5xx with an error body, or a stream ending in an error event), ``lost`` (everything else: no
answer, a truncated one, someone else's), ``p99_ms`` (chaos, over every response) and
``healthy_p99_ms``; ``shift_s``: for each bad deployment, from its fault's start until the
last of its arrivals followed by more than ``--half-open-calls`` others within ``--gap`` s
(after that it only sees its breaker's trial calls, at most that many in a row), the slower of
the two, ``null`` when traffic never left; per-phase p50/p99,
the breakers' transitions (polled from ``GET /admin/deployments`` every 100 ms), each
deployment's arrivals per second, and duplicates (a nonce answered twice upstream, or an
answer delivered to the wrong request).
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
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from gateway_overhead import cpu_model, free_port, running  # noqa: E402

from tests.upstreams.faults import ANTHROPIC_KEY, OPENAI_KEY  # noqa: E402

MASTER = "sk-chaos-master-0123456789"
AUTH = {"authorization": f"Bearer {MASTER}"}
NAMES = ("d0", "d1", "d2")  # healthy, flaky, hanging
# What the flaky deployment does to half its requests (``--flaky-fault``); ``cut`` resets a
# stream after its role chunk and first word (a plain answer: half-way through its body).
FLAKY = {"503": {"kind": "status", "status": 503}, "reset": {"kind": "reset"},
         "malformed": {"kind": "malformed"}, "cut": {"kind": "cut", "after_chunks": 2}}


def write_config(tmp: Path, ports: dict[str, int], args: argparse.Namespace) -> Path:
    """The shipped config with ``gpt-4o`` on the three fault upstreams."""
    base = ROOT / "contextforge.yaml"
    cfg = yaml.safe_load(base.read_text())
    for key, field in (("encoder", "path"), ("encoder", "text_path"), ("router", "path")):
        if field in cfg.get(key, {}):
            cfg[key][field] = str(ROOT / cfg[key][field])
    anthropic = args.format == "anthropic"
    kind, key = ("anthropic", ANTHROPIC_KEY) if anthropic else ("openai-compatible", OPENAI_KEY)
    cfg["providers"] = [{"name": n, "type": kind, "api_key": key, "timeout_s": args.timeout_s,
                         "endpoint": f"http://127.0.0.1:{p}" + ("" if anthropic else "/v1")}
                        for n, p in ports.items()]
    for m in cfg["models"]:
        if m["name"] == "gpt-4o":
            m["deployments"] = [{"provider": n, "model": "sim-gpt-4o"} for n in NAMES]
    cfg["default_deployment"] = {"provider": "d0"}
    cfg["dispatch"] = {
        **cfg.get("dispatch", {}),
        "breaker": {"consecutive_failures": args.failure_threshold,
                    "failure_rate": args.failure_rate, "window_s": args.window_s,
                    "min_requests": args.min_requests, "cooldown_s": args.cooldown_s,
                    "half_open_calls": args.half_open_calls},
        "hedge": {"enabled": not args.no_hedge, "percentile": args.hedge_percentile,
                  "max_share": args.hedge_share, "min_delay_ms": 20},
    }
    cfg["server"] = {**cfg.get("server", {}), "master_key": MASTER}
    cfg["traffic"]["dsn"] = f"sqlite:///{tmp / 'traffic.sqlite3'}"
    cfg["admin"] = {"state_path": str(tmp / "admin.json")}
    path = tmp / "chaos.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def schedules(args: argparse.Namespace) -> dict[str, dict]:
    """Each deployment's fault schedule for the chaos phase (windows from its start)."""
    base = {"kind": "latency", "seconds": args.upstream_ms / 1e3}
    flaky = {**FLAKY[args.flaky_fault], "rate": 0.5, "start_s": args.flaky[0],
             "end_s": args.flaky[1]}
    hang = {"kind": "hang_before", "start_s": args.hang[0], "end_s": args.hang[1]}
    return {"d0": {"faults": [base]}, "d1": {"faults": [base, flaky], "seed": 1},
            "d2": {"faults": [base, hang]}}


async def one(client: httpx.AsyncClient, nonce: str, stream: bool = False) -> dict:
    """One request: when it went, how long it took, and what came back."""
    body: dict = {"model": "gpt-4o", "messages": [
        {"role": "user", "content": f"chaos question nonce={nonce}"}]}
    if stream:
        body["stream"] = True
    t0 = time.perf_counter()
    try:
        r = await client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        return {"nonce": nonce, "t": t0, "ms": (time.perf_counter() - t0) * 1e3,
                "outcome": "lost", "why": type(exc).__name__}
    ms = (time.perf_counter() - t0) * 1e3
    outcome, why = judge(r, nonce)
    return {"nonce": nonce, "t": t0, "ms": ms, "outcome": outcome, "why": why}


def judge(r: httpx.Response, nonce: str) -> tuple[str, str]:
    """(outcome, why): ``answered`` (a whole answer carrying ``nonce``), ``clear_error`` (a 5xx
    with an error body, or a stream that ends with an error event) or ``lost``."""
    if r.status_code == 200 and r.headers.get("content-type", "").startswith(
            "text/event-stream"):
        return _judge_stream(r.text, nonce)
    try:
        data = r.json()
    except ValueError:
        data = None
    if r.status_code == 200 and isinstance(data, dict):
        text = (data.get("choices") or [{}])[0].get("message", {}).get("content") or ""
        return _judge_text(text, nonce, finished=True)
    if r.status_code >= 500 and isinstance(data, dict) and "error" in data:
        return "clear_error", f"{r.status_code} {data['error'].get('code')}"
    return "lost", f"HTTP {r.status_code}"


def _judge_stream(raw: str, nonce: str) -> tuple[str, str]:
    text, finished = "", False
    for line in raw.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if "error" in event:
            return "clear_error", f"error event {event['error'].get('code')}"
        for choice in event.get("choices") or []:
            text += choice.get("delta", {}).get("content") or ""
            finished |= bool(choice.get("finish_reason"))
    done = raw.rstrip().endswith("data: [DONE]")
    return _judge_text(text, nonce, finished=finished and done)


def _judge_text(text: str, nonce: str, *, finished: bool) -> tuple[str, str]:
    words = set(text.split())
    if f"nonce={nonce}" in words:
        return ("answered", "") if finished else ("lost", "truncated")
    return "lost", "misdelivered" if any(w.startswith("nonce=") for w in words) else "no nonce"


async def load(client: httpx.AsyncClient, prefix: str, n: int, rate: float,
               stream: bool = False) -> list[dict]:
    """``n`` requests, the i-th sent at ``i / rate`` s whatever the others are doing."""
    loop = asyncio.get_running_loop()
    start, tasks = loop.time(), []
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        tasks.append(asyncio.create_task(one(client, f"{prefix}{i}", stream)))
    return await asyncio.gather(*tasks)


async def poll_breakers(client: httpx.AsyncClient, t0: float, out: list, stop: asyncio.Event,
                        ports: dict[int, str]) -> None:
    """(s since chaos start, deployment, breaker state) whenever a state changes."""
    last: dict[str, str] = {}
    while not stop.is_set():
        try:
            r = await client.get("/admin/deployments", headers=AUTH)
            for d in r.json()["data"]:
                if d["model"] != "gpt-4o":
                    continue
                name = ports[int(d["deployment"].rsplit(":", 1)[1].split("/")[0])]
                if last.get(name) != d["breaker"]:
                    last[name] = d["breaker"]
                    out.append((round(time.perf_counter() - t0, 2), name, d["breaker"]))
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        await asyncio.sleep(0.1)


async def drive(url: str, ups: dict[str, str], ports: dict[int, str],
                args: argparse.Namespace) -> dict:
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=args.client_timeout_s, headers=AUTH,
                                 limits=limits) as client, httpx.AsyncClient() as admin:
        base = {"faults": [{"kind": "latency", "seconds": args.upstream_ms / 1e3}]}
        for u in ups.values():
            await admin.post(f"{u}/_faults", json=base)
        await load(client, "w", int(args.rate), args.rate, args.stream)  # warm-up
        healthy = await load(client, "h", args.healthy_requests, args.rate, args.stream)
        for u in ups.values():
            await admin.post(f"{u}/_faults/reset")
        t0 = time.perf_counter()
        for name, sched in schedules(args).items():  # windows count from here
            await admin.post(f"{ups[name]}/_faults", json=sched)
        transitions: list = []
        stop = asyncio.Event()
        poller = asyncio.create_task(poll_breakers(client, t0, transitions, stop, ports))
        hedges_before = await hedges(client)
        chaos = await load(client, "c", args.requests, args.rate, args.stream)
        stop.set()
        await poller
        hedged = await hedges(client) - hedges_before
        tallies = {n: (await admin.get(f"{u}/_faults")).json()["tally"] for n, u in ups.items()}
    for r in chaos:
        r["t"] -= t0
    return {"healthy": healthy, "chaos": chaos, "transitions": transitions, "tallies": tallies,
            "hedged": hedged}


async def hedges(client: httpx.AsyncClient) -> int:
    """Hedges the gateway sent so far (``contextforge_hedged_requests_total``, every label)."""
    text = (await client.get("/metrics")).text
    return round(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("contextforge_hedged_requests_total{")))


def pct(rows: list[dict], q: float) -> float | None:
    ms = [r["ms"] for r in rows if r["outcome"] != "lost"]
    return round(float(np.percentile(ms, q)), 1) if ms else None


def shift(arrivals: list[float], start: float, end: float, gap: float,
          burst: int = 1) -> float | None:
    """Seconds from ``start`` to the last arrival in [start, end) followed by more than
    ``burst`` others within ``gap`` s: traffic. Fewer are a half-open breaker's trial calls
    (``half_open_calls`` of them, one after another) or sparse probes. ``None`` if arrivals
    stayed dense to the end."""
    inside = sorted(t for t in arrivals if start <= t < end)
    dense = [a for i, a in enumerate(inside)
             if i + burst < len(inside) and inside[i + burst] - a <= gap]
    if not dense:
        return 0.0
    if dense[-1] > end - 2 * gap:
        return None
    return round(dense[-1] - start, 2)


def summarise(run: dict, args: argparse.Namespace) -> dict:
    chaos, healthy, tallies = run["chaos"], run["healthy"], run["tallies"]
    count = {k: sum(r["outcome"] == k for r in chaos) for k in ("answered", "clear_error",
                                                                "lost")}
    windows = {"d1": tuple(args.flaky), "d2": tuple(args.hang)}
    shifts = {n: shift(tallies[n]["arrivals"], s, e, args.gap, args.half_open_calls)
              for n, (s, e) in windows.items()}
    fault_end = max(args.flaky[1], args.hang[1])
    during = [r for r in chaos if min(args.flaky[0], args.hang[0]) <= r["t"] < fault_end]
    after = [r for r in chaos if r["t"] >= fault_end]
    # One request's answer made twice upstream (any deployments): the client gets one of
    # them, but the work (and its cost) was doubled. An answer delivered to the wrong
    # request is counted as lost ("misdelivered").
    answered_twice = sum(c > 1 for c in _sum_counts(t["answered_by_nonce"]
                                                    for t in tallies.values()).values())
    seconds = int(args.requests / args.rate) + 1
    per_second = {n: np.histogram(t["arrivals"], bins=seconds, range=(0, seconds))[0].tolist()
                  for n, t in tallies.items()}
    opened = {n: next((t for t, d, s in run["transitions"] if d == n and s == "open"), None)
              for n in windows}
    # Before the fault's end: a lucky half-open probe let traffic back to a bad deployment.
    closed = {n: next((t for t, d, s in run["transitions"]
                       if d == n and s == "closed" and opened[n] is not None and t > opened[n]),
                      None) for n in windows}
    return {
        "requests": len(chaos), "answered": count["answered"],
        "clear_errors": count["clear_error"], "lost": count["lost"],
        "p99_ms": pct(chaos, 99), "healthy_p99_ms": pct(healthy, 99),
        "shift_s": None if None in shifts.values() else max(shifts.values()),
        "success_rate": round(count["answered"] / len(chaos), 4),
        # Requests that waited out a deployment's timeout (a hang) before failing over: p99
        # stays near the healthy one only while these are under 1%.
        "over_timeout": sum(r["ms"] > args.timeout_s * 1e3 for r in chaos),
        "p50_ms": pct(chaos, 50), "healthy_p50_ms": pct(healthy, 50),
        "during_faults_p50_ms": pct(during, 50), "during_faults_p99_ms": pct(during, 99),
        "after_recovery_p50_ms": pct(after, 50), "after_recovery_p99_ms": pct(after, 99),
        "healthy_lost": sum(r["outcome"] != "answered" for r in healthy),
        "shift_s_by_deployment": shifts, "breaker_opened_s": opened,
        "breaker_closed_s": closed, "breaker_transitions": run["transitions"],
        # Calls sent to a bad deployment after its fault began and before its breaker opened
        # (the flaky one answers half of them; the hanging one none).
        "arrivals_before_open": {n: sum(windows[n][0] <= t < (opened[n] or windows[n][1])
                                        for t in tallies[n]["arrivals"]) for n in windows},
        "lost_why": _sum_counts([{r["why"]: 1} for r in chaos if r["outcome"] == "lost"]),
        "clear_errors_why": _sum_counts([{r["why"]: 1} for r in chaos
                                         if r["outcome"] == "clear_error"]),
        "duplicated_answers": answered_twice,
        "hedged": run["hedged"], "hedged_share": round(run["hedged"] / len(chaos), 4),
        "misdelivered": sum(r["why"] == "misdelivered" for r in chaos),
        "arrivals_per_s": per_second,
        "upstream_outcomes": {n: t["outcomes"] for n, t in tallies.items()},
        "settings": {"rate": args.rate, "healthy_requests": args.healthy_requests,
                     "flaky": args.flaky, "hang": args.hang, "timeout_s": args.timeout_s,
                     "cooldown_s": args.cooldown_s, "failure_threshold": args.failure_threshold,
                     "failure_rate": args.failure_rate, "window_s": args.window_s,
                     "min_requests": args.min_requests, "hedge": not args.no_hedge,
                     "half_open_calls": args.half_open_calls,
                     "hedge_percentile": args.hedge_percentile,
                     "hedge_share": args.hedge_share,
                     "upstream_ms": args.upstream_ms, "gap_s": args.gap,
                     "stream": args.stream, "format": args.format,
                     "flaky_fault": args.flaky_fault},
        "machine": f"{cpu_model()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
    }


def _sum_counts(counts) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def report(r: dict) -> None:
    rows = [("requests", r["requests"]), ("answered", r["answered"]),
            ("clear_errors (5xx)", r["clear_errors"]), ("lost", r["lost"]),
            ("success rate", r["success_rate"]),
            ("answers made twice upstream / misdelivered",
             f"{r['duplicated_answers']} / {r['misdelivered']}"),
            ("hedged requests (share of the chaos phase)",
             f"{r['hedged']} ({r['hedged_share']:.1%})"),
            ("healthy p50 / p99 ms", f"{r['healthy_p50_ms']} / {r['healthy_p99_ms']}"),
            ("chaos p50 / p99 ms", f"{r['p50_ms']} / {r['p99_ms']}"),
            ("  during faults p50 / p99 ms",
             f"{r['during_faults_p50_ms']} / {r['during_faults_p99_ms']}"),
            ("  after recovery p50 / p99 ms",
             f"{r['after_recovery_p50_ms']} / {r['after_recovery_p99_ms']}"),
            ("p99 / healthy p99", _ratio(r["p99_ms"], r["healthy_p99_ms"])),
            ("shift_s (flaky d1, hanging d2)", r["shift_s_by_deployment"]),
            ("breaker opened at s", r["breaker_opened_s"]),
            ("calls to it from fault to open", r["arrivals_before_open"]),
            ("requests slower than the timeout", r["over_timeout"]),
            ("breaker closed again at s", r["breaker_closed_s"]),
            ("lost: why", r["lost_why"]), ("5xx: why", r["clear_errors_why"])]
    for label, value in rows:
        print(f"{label:40} {value}")
    print("arrivals per second (chaos phase):")
    for name, counts in r["arrivals_per_s"].items():
        print(f"  {name} " + " ".join(f"{c:3d}" for c in counts))
    s = r["settings"]
    print(f"d1: {s['flaky_fault']} on half its requests {s['flaky'][0]:g}-{s['flaky'][1]:g} s, "
          f"d2 hangs {s['hang'][0]:g}-{s['hang'][1]:g} s; {s['rate']:g} req/s; timeout "
          f"{s['timeout_s']:g} s, breaker {s['failure_threshold']} in a row or "
          f"{s['failure_rate']:.0%} of >= {s['min_requests']} in {s['window_s']:g} s, "
          f"cooldown {s['cooldown_s']:g} s; hedging "
          + (f"p{s['hedge_percentile']:g}, <= {s['hedge_share']:.0%}" if s["hedge"] else "off")
          + f"; {s['format']} upstreams"
          f"{', streamed' if s['stream'] else ''}; {r['machine']}")


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x (target <= 2x)" if a and b else "n/a"


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


@contextlib.contextmanager
def fault_upstreams(tmp: Path) -> Iterator[dict[str, int]]:
    """The three fault upstreams (``NAMES``), each its own process: their ports by name."""
    ports = {n: free_port() for n in NAMES}
    with contextlib.ExitStack() as stack:
        for n, port in ports.items():
            stack.enter_context(running(
                [sys.executable, "-m", "tests.upstreams.faults", str(port)],
                f"http://127.0.0.1:{port}/_faults", tmp / f"{n}.log", cwd=ROOT, env=ENV))
        yield ports


@contextlib.contextmanager
def gateway(tmp: Path, ports: dict[str, int], args: argparse.Namespace) -> Iterator[str]:
    """``contextforge serve`` on ``write_config``'s config in ``tmp``: its URL."""
    port = free_port()
    argv = [sys.executable, "-m", "service.cli", "serve", "--config",
            str(write_config(tmp, ports, args)), "--port", str(port)]
    with running(argv, f"http://127.0.0.1:{port}/readyz", tmp / "gateway.log", cwd=ROOT,
                 env=ENV):
        yield f"http://127.0.0.1:{port}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="in the chaos phase")
    ap.add_argument("--healthy-requests", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0, help="requests a second")
    ap.add_argument("--flaky", type=float, nargs=2, default=[3.0, 13.0], metavar=("START", "END"))
    ap.add_argument("--flaky-fault", choices=sorted(FLAKY), default="503")
    ap.add_argument("--hang", type=float, nargs=2, default=[5.0, 11.0], metavar=("START", "END"))
    ap.add_argument("--timeout-s", type=float, default=1.0, help="per deployment")
    ap.add_argument("--cooldown-s", type=float, default=2.0)
    ap.add_argument("--failure-threshold", type=int, default=5, help="failures in a row")
    ap.add_argument("--failure-rate", type=float, default=0.3)
    ap.add_argument("--window-s", type=float, default=1.0, help="the failure rate's window")
    ap.add_argument("--min-requests", type=int, default=10, help="in the window, to trip")
    ap.add_argument("--half-open-calls", type=int, default=3,
                    help="trial successes that close a breaker")
    ap.add_argument("--no-hedge", action="store_true")
    ap.add_argument("--hedge-percentile", type=float, default=90.0)
    ap.add_argument("--hedge-share", type=float, default=0.1)
    ap.add_argument("--upstream-ms", type=float, default=50.0, help="every upstream's latency")
    ap.add_argument("--gap", type=float, default=0.5, help="s between arrivals still 'traffic'")
    ap.add_argument("--concurrency", type=int, default=512)
    ap.add_argument("--client-timeout-s", type=float, default=30.0)
    ap.add_argument("--stream", action="store_true", help="streamed requests (SSE)")
    ap.add_argument("--format", choices=["openai", "anthropic"], default="openai",
                    help="the upstreams' wire format (the gateway's adapter for them)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmpdir, fault_upstreams(Path(tmpdir)) as ports, \
            gateway(Path(tmpdir), ports, args) as url:
        ups = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
        run = asyncio.run(drive(url, ups, {p: n for n, p in ports.items()}, args))
    result = summarise(run, args)
    report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
