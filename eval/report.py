"""The usage report (``contextforge report``): ``report.md`` and its PNG plots in one folder.

``write_report`` reads the figures (``eval.report_data``), draws the plots
(``eval.report_plots``) and writes the Markdown that shows them beside their tables: totals,
cost per request, tokens, models, tenants, users, projects, quality scores per model, A/B arms
and each tenant's spend forecast for the month with its backtest error (``eval.forecast``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.forecast import MEAN_DAYS, MIN_WINDOWS, TREND_DAYS, Forecast
from eval.report_data import Arm, ReportData, Window, gather
from eval.report_plots import write_plots
from router.traffic import TrafficLog

MAX_ROWS = 25  # rows per user or project table; the rest are counted


def usd(x: float) -> str:
    """About four significant figures, never scientific: $1,234.57, $12.35, $0.0001235."""
    if abs(x) < 5e-11:  # float noise (a backtest error of 1e-17): nothing a bill shows
        return "$0"
    decimals = min(10, max(2, 3 - math.floor(math.log10(abs(x)))))
    return f"${x:,.{decimals}f}"


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _name(value: object) -> str:
    return "(none)" if value is None else str(value).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], text: int = 1,
           ) -> list[str]:
    """A Markdown table: the first ``text`` columns left-aligned (names), the rest right
    (figures)."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < text else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _per_request(r: dict[str, Any]) -> str:
    return usd(r["cost_usd"] / r["requests"]) if r["requests"] else "-"


def _summary(d: ReportData) -> list[str]:
    t = d.totals
    return ["## Summary", "", *_table(
        ["requests", "errors", "cache hits", "input tokens", "output tokens", "spend",
         "per request"],
        [[f"{t['requests']:,}", f"{t['errors']:,}", f"{t['cache_hits']:,}",
          f"{t['input_tokens']:,}", f"{t['output_tokens']:,}", usd(t["cost_usd"]),
          _per_request(t)]], text=0)]


def _cost(d: ReportData) -> list[str]:
    c = d.cost_per_request
    p50, p90, p99 = np.percentile(c, [50, 90, 99])
    return ["## Cost per request", "",
            "Every request in the window; cache hits and errors count at the cost logged ($0 "
            "when none).", "",
            *_table(["mean", "p50", "p90", "p99", "max"],
                    [[usd(float(c.mean())), usd(p50), usd(p90), usd(p99), usd(float(c.max()))]],
                    text=0),
            "![cost per request](cost_per_request.png)", "",
            "## Tokens", "", "![tokens per day](tokens.png)", ""]


def _models(d: ReportData) -> list[str]:
    total = d.totals["requests"]
    rows = [[_name(r["model"]), f"{r['requests']:,}", f"{r['requests'] / total:.1%}",
             f"{r['input_tokens']:,}", f"{r['output_tokens']:,}", usd(r["cost_usd"]),
             _per_request(r)] for r in d.by_model]
    return ["## Models", "",
            *_table(["model", "requests", "share", "input tokens", "output tokens", "spend",
                     "per request"], rows),
            "![requests and spend per model](models.png)", ""]


def _breakdown(title: str, key: str, rows: list[dict[str, Any]]) -> list[str]:
    shown = [[_name(r["tenant"]), _name(r[key]), f"{r['requests']:,}",
              f"{r['input_tokens']:,}", f"{r['output_tokens']:,}", usd(r["cost_usd"])]
             for r in rows[:MAX_ROWS]]
    lines = [f"## {title}", "", *_table(
        ["tenant", key, "requests", "input tokens", "output tokens", "spend"], shown, text=2)]
    if len(rows) > MAX_ROWS:
        rest = rows[MAX_ROWS:]
        lines += [f"... and {len(rest)} more ({usd(sum(r['cost_usd'] for r in rest))}).", ""]
    return lines


def _people(d: ReportData) -> list[str]:
    lines = []
    if d.window.tenant is None:
        lines += ["## Tenants", "", *_table(
            ["tenant", "requests", "errors", "input tokens", "output tokens", "spend"],
            [[_name(r["tenant"]), f"{r['requests']:,}", f"{r['errors']:,}",
              f"{r['input_tokens']:,}", f"{r['output_tokens']:,}", usd(r["cost_usd"])]
             for r in d.by_tenant])]
    lines += _breakdown("Users", "user", d.by_user)
    lines += _breakdown("Projects", "project", d.by_project)
    return [*lines, "![spend per user and project](users_projects.png)", ""]


def _quality(d: ReportData) -> list[str]:
    head = ["## Quality per model", ""]
    if not d.quality:
        return [*head, "No scores on this window's requests: `contextforge eval score --logs "
                "DSN` writes them beside the rows.", ""]
    per_request = {r["model"]: r["cost_usd"] / r["requests"] for r in d.by_model}
    rows = []
    for q in d.quality:
        cost = per_request.get(q.model)
        rows.append([q.scorer, _name(q.model), f"{q.scored:,}", f"{q.mean:.3f}",
                     f"{2 * q.stderr:.3f}", usd(cost) if cost is not None else "-",
                     usd(cost / q.mean) if cost is not None and q.mean > 0 else "-"])
    return [*head, "Mean score of the scored answers (0..1), ±2 standard errors; USD per "
            "quality point is the model's spend per request over its mean score.", "",
            *_table(["scorer", "model", "scored", "mean score", "± 2 s.e.", "per request",
                     "USD per quality point"], rows, text=2),
            "![quality per model](quality.png)", ""]


def _arm_scores(a: Arm) -> str:
    return "; ".join(f"{q.scorer} {q.mean:.3f} (n={q.scored})" for q in a.quality) or "-"


def _arms(d: ReportData) -> list[str]:
    head = ["## A/B arms", ""]
    if not d.arms:
        return [*head, "No route split its traffic between router versions in this window.", ""]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:,.1f}"

    rows = [[_name(a.route), _name(a.arm), f"{a.requests:,}", f"{a.errors:,}",
             usd(a.cost_usd), usd(a.cost_usd / a.requests), ms(a.latency_p50_ms),
             ms(a.latency_p95_ms), _arm_scores(a)] for a in d.arms]
    return [*head, *_table(["route", "arm", "requests", "errors", "spend", "per request",
                            "p50 ms", "p95 ms", "scores"], rows, text=2),
            "![A/B arms](ab_arms.png)", ""]


def _forecast_row(f: Forecast) -> list[str]:
    spent = f"{usd(f.spent_to_date_usd)} ({f.days_elapsed} d)"
    budget = usd(f.budget_usd) if f.budget_usd is not None else "-"
    if f.total_usd is None or f.backtest is None:
        return [_name(f.tenant), spent, "too little history", "-", "-", "-", "-", budget, "-"]
    b = f.backtest
    share = f.budget_share
    return [_name(f.tenant), spent, usd(f.total_usd), usd(b.mae_usd),
            "-" if b.mape is None else f"{b.mape:.1%}", str(b.windows), f.method or "-", budget,
            "-" if share is None else f"{share:.0%}"]


def _forecasts(d: ReportData) -> list[str]:
    if not d.forecasts:
        return []
    f0 = d.forecasts[0]
    lines = [f"## Spend forecast for {f0.period}", "",
             f"As of {_when(d.window.until)}: spend on the month's {f0.days_elapsed} complete "
             f"days, plus a forecast of the {f0.days_left} days left (today included). Each "
             f"tenant's forecast comes from whichever of two daily models backtests better on "
             f"its own history: the mean of the last {MEAN_DAYS} days, or a linear trend over "
             f"the last {TREND_DAYS}. The backtest forecasts every past {f0.days_left}-day "
             f"window from the days before it; its mean absolute error (MAE, USD) and mean "
             f"absolute percentage error (MAPE) are the error to expect here. The forecast "
             f"reads the tenant's whole history before this report's end, not only the "
             f"window.", "",
             *_table(["tenant", "spent so far", "forecast total", "± backtest MAE", "MAPE",
                      "windows", "method", "budget", "forecast / budget"],
                     [_forecast_row(f) for f in d.forecasts])]
    short = [f for f in d.forecasts if f.total_usd is None]
    if short:
        lines += [f"- {_name(f.tenant)}: {f.note} (at least {MIN_WINDOWS} backtest windows)."
                  for f in short] + [""]
    if any(f.total_usd is not None for f in d.forecasts):
        lines += ["![spend forecast](forecast.png)", ""]
    return lines


def render(d: ReportData, *, source: str) -> str:
    """The report's Markdown (the plots it names are written beside it by ``write_report``)."""
    w = d.window
    scope = f"tenant **{_name(w.tenant)}**" if w.tenant is not None else "all tenants"
    start = _when(w.since) if w.since is not None else "the log's start"
    lines = ["# Usage report", "",
             f"- Window: {start} to {_when(w.until)}, {scope}",
             f"- Requests logged from {_when(d.first_ts)} to {_when(d.last_ts)}",
             f"- Traffic log: {source}", ""]
    for section in (_summary, _cost, _models, _people, _quality, _arms, _forecasts):
        lines += section(d)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(log: TrafficLog, window: Window, out: Path, *, source: str,
                 budget_for: Callable[[str | None], float | None] | None = None,
                 ) -> dict[str, Path]:
    """Write ``report.md`` and its plots into ``out`` (created); name -> path of each file.
    ``EmptyWindow`` (a ``ValueError``) when the window holds no request."""
    data = gather(log, window, budget_for=budget_for)
    out.mkdir(parents=True, exist_ok=True)
    written = write_plots(data, out)
    md = out / "report.md"
    md.write_text(render(data, source=source))
    return {"report.md": md, **written}
