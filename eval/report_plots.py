"""The usage report's PNG plots (matplotlib's Agg canvas: no pyplot, no global backend, no
display needed). Each function draws one file from ``eval.report_data.ReportData`` and returns
its path, or None when the report holds nothing to draw (no scores, no A/B arms, ...)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eval.report_data import ReportData

TOP = 12  # bars per chart: the biggest (the report's tables list them all)


def _figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (9, 4.2)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes.ravel()


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _dates(by_day: Sequence[dict]) -> list[dt.date]:
    return [dt.date.fromisoformat(r["day"]) for r in by_day]


def _date_axis(ax, days: Sequence[dt.date]) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    if len(set(days)) < 2:  # one day: give the locator a span to place ticks in
        ax.set_xlim(days[0] - dt.timedelta(days=1), days[0] + dt.timedelta(days=1))
    locator = AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.grid(True, alpha=0.3)


def _label(value: object) -> str:
    return "(none)" if value is None else str(value)


def _top(rows: Sequence[dict], key: str, value: str) -> tuple[list[str], list[float], str]:
    """The ``TOP`` biggest rows by ``value``, biggest last (a horizontal bar chart shows it at
    the top), and a note for the title when there were more (an "other" bar summing many
    small ones would dwarf the ones shown)."""
    ranked = sorted(rows, key=lambda r: -r[value])[:TOP]
    note = f" (top {TOP} of {len(rows)})" if len(rows) > TOP else ""
    return ([_label(r[key]) for r in ranked][::-1], [float(r[value]) for r in ranked][::-1],
            note)


def plot_cost(data: ReportData, path: Path) -> Path:
    """Cost per request: its distribution (requests that cost something, log scale) and the
    mean per day."""
    fig, (hist, daily) = _figure(1, 2, (10, 4.2))
    paid = data.cost_per_request[data.cost_per_request > 0]
    if len(paid):
        lo, hi = paid.min(), paid.max()
        bins = np.geomspace(lo, hi * 1.0001, 30) if hi > lo else 10
        hist.hist(paid, bins=bins, color="#4c72b0")
        if hi > lo:
            from matplotlib.ticker import NullFormatter

            hist.set_xscale("log")
            hist.xaxis.set_minor_formatter(NullFormatter())  # labels on decades only
    free = len(data.cost_per_request) - len(paid)
    hist.set_title(f"cost per request ({free} at $0 not shown)" if free else "cost per request")
    hist.set_xlabel("USD")
    hist.set_ylabel("requests")
    days = _dates(data.by_day)
    daily.plot(days, [r["cost_usd"] / r["requests"] for r in data.by_day], marker=".")
    daily.set_title("mean cost per request, by day (UTC)")
    daily.set_ylabel("USD")
    _date_axis(daily, days)
    return _save(fig, path)


def plot_tokens(data: ReportData, path: Path) -> Path:
    """Input and output tokens per day."""
    fig, (ax,) = _figure()
    days = _dates(data.by_day)
    ax.plot(days, [r["input_tokens"] for r in data.by_day], marker=".", label="input")
    ax.plot(days, [r["output_tokens"] for r in data.by_day], marker=".", label="output")
    ax.set_title("tokens per day (UTC)")
    ax.set_ylabel("tokens")
    ax.legend()
    _date_axis(ax, days)
    return _save(fig, path)


def plot_models(data: ReportData, path: Path) -> Path:
    """Requests and spend per model."""
    fig, (count, spend) = _figure(1, 2, (10, 4.2))
    names, values, note = _top(data.by_model, "model", "requests")
    count.barh(names, values, color="#4c72b0")
    count.set_title(f"requests per model{note}")
    names, values, note = _top(data.by_model, "model", "cost_usd")
    spend.barh(names, values, color="#dd8452")
    spend.set_title(f"spend per model (USD){note}")
    return _save(fig, path)


def plot_people(data: ReportData, path: Path) -> Path:
    """Spend per user and per project (each labelled with its tenant)."""
    fig, (users, projects) = _figure(1, 2, (10, 4.6))
    for ax, rows, key, title in ((users, data.by_user, "user", "spend per user (USD)"),
                                 (projects, data.by_project, "project",
                                  "spend per project (USD)")):
        labelled = [{**r, "who": f"{_label(r['tenant'])}/{_label(r[key])}"} for r in rows]
        names, values, note = _top(labelled, "who", "cost_usd")
        ax.barh(names, values, color="#55a868")
        ax.set_title(title + note)
    return _save(fig, path)


def plot_quality(data: ReportData, path: Path) -> Path | None:
    """Mean score per model, one colour per scorer, with ±2 standard errors."""
    if not data.quality:
        return None
    fig, (ax,) = _figure()
    scorers = sorted({q.scorer for q in data.quality})
    models = sorted({_label(q.model) for q in data.quality})
    width = 0.8 / len(scorers)
    for i, scorer in enumerate(scorers):
        mine = {_label(q.model): q for q in data.quality if q.scorer == scorer}
        x = [j + i * width for j, m in enumerate(models) if m in mine]
        ax.bar(x, [mine[m].mean for m in models if m in mine], width,
               yerr=[2 * mine[m].stderr for m in models if m in mine], capsize=3, label=scorer)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models))], models, rotation=20,
                  ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean score (±2 s.e.)")
    ax.set_title("quality per model (scores written by eval score)")
    ax.legend(title="scorer", fontsize="small")
    return _save(fig, path)


def plot_arms(data: ReportData, path: Path) -> Path | None:
    """Per A/B arm: requests, cost per request, p50 latency and mean score."""
    if not data.arms:
        return None
    fig, axes = _figure(1, 4, (12, 3.8))
    labels = [f"{a.route}/{_label(a.arm)}" for a in data.arms]
    # The first scorer's (alphabetically) mean; an arm it did not score gets no bar.
    scorer = min((q.scorer for a in data.arms for q in a.quality), default=None)
    score = [next((q.mean for q in a.quality if q.scorer == scorer), np.nan)
             for a in data.arms]
    panels = (("requests", [a.requests for a in data.arms]),
              ("USD per request", [a.cost_usd / a.requests for a in data.arms]),
              ("p50 latency (ms)", [a.latency_p50_ms or 0.0 for a in data.arms]),
              (f"mean score ({scorer or 'none'})", score))
    for ax, (title, values) in zip(axes, panels, strict=True):
        ax.barh(labels[::-1], values[::-1], color="#8172b3")
        ax.set_title(title, fontsize="medium")
    for ax in axes[1:]:
        ax.set_yticklabels([])
    return _save(fig, path)


def plot_forecast(data: ReportData, path: Path) -> Path | None:
    """Each forecast tenant's spend this month (cumulative) and the forecast total with its
    backtest error, against its budget where one is set."""
    made = [f for f in data.forecasts if f.total_usd is not None]
    if not made:
        return None
    note = f" (top {TOP} of {len(made)})" if len(made) > TOP else ""
    made = sorted(made, key=lambda f: f.total_usd)[-TOP:]  # the biggest at the top
    fig, (ax,) = _figure(size=(9, 0.5 * len(made) + 1.8))
    names = [_label(f.tenant) for f in made]
    ax.barh(names, [f.spent_to_date_usd for f in made], color="#4c72b0", label="spent so far")
    ax.barh(names, [f.total_usd - f.spent_to_date_usd for f in made],
            left=[f.spent_to_date_usd for f in made], color="#a1c9f4",
            xerr=[f.backtest.mae_usd for f in made], capsize=4,
            label="forecast rest (± backtest MAE)")
    budgets = [(i, f.budget_usd) for i, f in enumerate(made) if f.budget_usd is not None]
    if budgets:
        ax.scatter([b for _, b in budgets], [i for i, _ in budgets], marker="|", s=400,
                   color="#c44e52", label="budget", zorder=5)
    ax.set_xlabel("USD")
    ax.set_title(f"spend forecast for {made[0].period}{note}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


PLOTS = {
    "cost_per_request.png": plot_cost,
    "tokens.png": plot_tokens,
    "models.png": plot_models,
    "users_projects.png": plot_people,
    "quality.png": plot_quality,
    "ab_arms.png": plot_arms,
    "forecast.png": plot_forecast,
}


def write_plots(data: ReportData, out: Path) -> dict[str, Path]:
    """Every plot the data has something for, into ``out``: file name -> path."""
    written = {}
    for name, draw in PLOTS.items():
        path = draw(data, out / name)
        if path is not None:
            written[name] = path
    return written
