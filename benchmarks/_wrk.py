"""wrk (C, epoll) as the load tool: POSTs of JSON bodies, percentiles read from its summary.

    result = run_wrk("http://127.0.0.1:8000/v1/chat/completions", bodies, connections=32,
                     seconds=10)

wrk costs far less CPU per request than any Python client, which matters on a two-core
machine where the load tool, the server and the upstream share the cores. It comes from
Debian (``apt-get install -y wrk``). ``_wrk_post.lua`` cycles through the bodies and prints
its summary as one JSON line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).resolve().parent / "_wrk_post.lua"


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: answered requests, their rate and latency percentiles (ms), failures."""

    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # non-2xx answers + socket errors + timeouts


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, bodies: list[bytes], *, connections: int, seconds: float,
            threads: int = 1, timeout_s: float = 10.0) -> WrkResult:
    """Closed loop: ``connections`` keep-alive connections, each sending back to back."""
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as f:
        f.write(b"\n".join(bodies) + b"\n")
        f.flush()
        cmd = ["wrk", "-t", str(min(threads, connections)), "-c", str(connections),
               "-d", f"{seconds:g}s", "--timeout", f"{timeout_s:g}s", "-s", str(LUA), url,
               "--", f.name]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    s = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(s[k] for k in ("status_errors", "connect_errors", "read_errors",
                                "write_errors", "timeouts"))
    ok = s["requests"] - s["status_errors"]
    return WrkResult(requests=ok, rps=ok / (s["duration_us"] / 1e6),
                     p50_ms=s["p50_us"] / 1e3, p90_ms=s["p90_us"] / 1e3,
                     p99_ms=s["p99_us"] / 1e3, max_ms=s["max_us"] / 1e3, errors=errors)
