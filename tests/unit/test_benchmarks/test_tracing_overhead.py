"""The tracing overhead benchmark runs and writes its figures (benchmarks/tracing_overhead.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_it_times_every_mode_and_kind_and_writes_json(tmp_path):
    out = tmp_path / "tracing.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/tracing_overhead.py"),
                          "--requests", "3", "--rounds", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    figures = json.loads(out.read_text())
    rows = {(r["kind"], r["mode"]): r for r in figures["rows"]}
    assert set(rows) == {(k, m) for k in ("pinned", "pinned-stream", "routed")
                         for m in ("off", "unsampled", "dropped", "memory")}
    assert all(r["n"] == 3 and r["p50_us"] > 0 for r in rows.values())
    assert all(rows[k, "off"]["extra_p50_us"] == 0 for k in ("pinned", "routed"))
    assert figures["off_checks_ns"] > 0
    assert "checks left on the path with tracing off" in run.stdout
