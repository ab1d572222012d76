"""How long ``contextforge report`` takes, and how much memory, on a traffic log of N rows.

    python benchmarks/usage_report.py [--rows 100000] [--json FILE]

A fresh SQLite log of ``--rows`` requests spread over 74 days (20 tenants, 300 users, 40
projects, 6 models, a third of the rows on an A/B split, one in ten scored), then the report
of the whole log as of its 75th day, in a child process (the CLI as a user runs it): wall
seconds, the child's CPU seconds and its peak RSS. The gateway is not involved: a report is an
offline read of the log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.traffic import ScoreRow, TrafficLog, TrafficRecord  # noqa: E402

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAYS = 74


def build(path: Path, rows: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    dsn = f"sqlite:///{path}"
    log = TrafficLog(dsn)
    ts = np.sort(rng.uniform(START.timestamp(), START.timestamp() + DAYS * 86400, rows))
    scores = []
    for i in range(rows):
        arm = ("v1" if i % 2 else "v2") if i % 3 == 0 else None
        log.write(TrafficRecord(
            id=f"r{i}", ts=float(ts[i]), status=200 if rng.random() > 0.03 else 500,
            tenant=f"t{i % 20}", user_id=f"u{i % 300}", project=f"p{i % 40}", route="auto",
            arm=arm, model=f"m{i % 6}", cache="hit-exact" if i % 11 == 0 else "miss",
            input_tokens=int(rng.integers(10, 900)), output_tokens=int(rng.integers(5, 400)),
            cost_usd=float(rng.uniform(1e-5, 0.05)), latency_ms=float(rng.uniform(50, 2000))))
        if i % 10 == 0:
            scores.append(ScoreRow(f"r{i}", "reference", float(rng.random() < 0.7),
                                   ts=float(ts[i])))
    log.flush()
    log.write_scores(scores)
    log.close()
    return dsn


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dsn = build(Path(tmp) / "traffic.sqlite3", args.rows)
        until = (START + dt.timedelta(days=DAYS)).date().isoformat()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "service.cli", "report", "--logs", dsn,
                        "--until", until, "--out", str(Path(tmp) / "out")],
                       cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        plots = len(list((Path(tmp) / "out").glob("*.png")))
    figures = {"rows": args.rows, "report_s": round(wall, 2),
               "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime
                              - before.ru_stime, 2),
               "peak_rss_mib": round(after.ru_maxrss / 1024, 1), "plots": plots}
    print(f"{'rows':>10} {'report s':>9} {'cpu s':>7} {'peak MiB':>9} {'plots':>6}")
    print(f"{figures['rows']:>10,} {figures['report_s']:>9} {figures['cpu_s']:>7} "
          f"{figures['peak_rss_mib']:>9} {figures['plots']:>6}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
