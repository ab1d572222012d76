"""A small traffic log over ~60 days for the usage report's tests (``contextforge report``).

Three tenants, each with a known shape:
- ``acme``: the same two requests every day (ada on big via arm v1 or v2 of route auto, bob on
  small) — a perfectly constant daily spend; every answer scored by ``reference``.
- ``globex``: carl, a random number of requests a day at random costs (a noisy spend), route
  cheap (no A/B), some cache hits at $0 and some errors with no cost.
- ``initech``: dan, only the last ``SHORT_DAYS`` days: too little history for a forecast.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from router.traffic import ScoreRow, TrafficLog, TrafficRecord

AS_OF = dt.datetime(2026, 3, 16, tzinfo=dt.UTC)  # the report's "now": 15 days of March done
FIRST = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
DAYS = (AS_OF - FIRST).days  # 60
SHORT_DAYS = 10
ACME_DAILY = 0.03 + 0.01  # ada's request + bob's


def _ts(day: int, hour: float) -> float:
    return (FIRST + dt.timedelta(days=day, hours=hour)).timestamp()


def build_records(seed: int = 7) -> tuple[list[TrafficRecord], list[ScoreRow]]:
    """Every request of the test log, oldest first, and the scores beside acme's."""
    rng = np.random.default_rng(seed)
    rows: list[TrafficRecord] = []
    scores: list[ScoreRow] = []
    for day in range(DAYS):
        arm = "v1" if day % 2 == 0 else "v2"
        ada = TrafficRecord(
            id=f"acme-{day}-a", ts=_ts(day, 10), status=200, tenant="acme", user_id="ada",
            project="web", route="auto", arm=arm, model="big", cache="miss",
            input_tokens=100, output_tokens=50, cost_usd=0.03, latency_ms=400.0 + day)
        bob = TrafficRecord(
            id=f"acme-{day}-b", ts=_ts(day, 14), status=200, tenant="acme", user_id="bob",
            project="api", route="auto", arm=arm, model="small", cache="miss",
            input_tokens=80, output_tokens=20, cost_usd=0.01, latency_ms=100.0 + day)
        rows += [ada, bob]
        scores += [ScoreRow(ada.id, "reference", 1.0, ts=ada.ts),
                   ScoreRow(bob.id, "reference", float(day % 2), ts=bob.ts)]
        for j in range(int(rng.integers(1, 5))):
            kind = rng.random()
            hit, error = kind < 0.15, 0.15 <= kind < 0.25
            rows.append(TrafficRecord(
                id=f"globex-{day}-{j}", ts=_ts(day, 8 + j), status=502 if error else 200,
                tenant="globex", user_id="carl", route="cheap", model="small",
                cache="hit-exact" if hit else "miss",
                input_tokens=None if error else int(rng.integers(20, 400)),
                output_tokens=None if error else int(rng.integers(5, 200)),
                cost_usd=None if error else 0.0 if hit else float(rng.uniform(0.001, 0.05)),
                latency_ms=float(rng.uniform(50, 900))))
        if day >= DAYS - SHORT_DAYS:
            rows.append(TrafficRecord(
                id=f"initech-{day}", ts=_ts(day, 12), status=200, tenant="initech",
                user_id="dan", project="pilot", route="auto", model="big", cache="miss",
                input_tokens=300, output_tokens=100, cost_usd=0.05, latency_ms=600.0))
    rows.sort(key=lambda r: r.ts)
    return rows, scores


def write_log(dsn: str) -> tuple[list[TrafficRecord], list[ScoreRow]]:
    """The test log written at ``dsn``: the rows and scores it holds."""
    rows, scores = build_records()
    log = TrafficLog(dsn)
    try:
        for r in rows:
            log.write(r)
        log.flush()
        log.write_scores(scores)
    finally:
        log.close()
    return rows, scores


def tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Each ``## Section``'s first table, as rows of {header: cell}."""
    out: dict[str, list[dict[str, str]]] = {}
    section, header, done = None, None, set()
    for line in markdown.splitlines():
        if line.startswith("## "):
            section, header = line[3:].strip(), None
        elif line.startswith("|") and section is not None and section not in done:
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if header is None:
                header = cells
                out[section] = []
            elif not set(line) <= set("|-: "):  # not the alignment row
                out[section].append(dict(zip(header, cells, strict=True)))
        elif header is not None:
            done.add(section)
            header = None
    return out


def money(cell: str) -> float:
    """``$1,234.5`` (or ``$0.6000 (15 d)``) as a float."""
    return float(cell.split()[0].removeprefix("$").replace(",", ""))


def count(cell: str) -> int:
    return int(cell.replace(",", ""))
