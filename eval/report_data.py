"""The figures of a usage report, read from the traffic log (``contextforge report``).

Sums by tenant, user, project, model and day come from ``router.usage`` (the same SQL as
``GET /admin/usage``); what it does not group — each request's cost and latency, scores beside
rows (``contextforge eval score``), A/B arms — is read here, through the same window: rows with
``since <= ts < until`` and, with ``tenant``, of that tenant only. Each request's cost and
latency are read into memory (two floats a row); everything else is aggregated by the database.
The spend forecast (``eval.forecast``) reads every day before ``until``, not only the window:
its backtest needs the months before.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eval.forecast import Forecast, forecast_month
from router.traffic import TrafficLog
from router.usage import usage


class EmptyWindow(ValueError):
    """The window holds no requests: nothing to report."""


@dataclass(frozen=True)
class Window:
    """Which rows a report covers; ``until`` is also the forecast's "now"."""

    until: float
    since: float | None = None
    tenant: str | None = None

    def where(self, alias: str = "") -> tuple[str, list[Any]]:
        """A SQL condition (``?`` placeholders) on the requests table and its parameters."""
        a = f"{alias}." if alias else ""
        where, params = [f"{a}ts < ?"], [self.until]
        if self.since is not None:
            where.append(f"{a}ts >= ?")
            params.append(self.since)
        if self.tenant is not None:
            where.append(f"{a}tenant = ?")
            params.append(self.tenant)
        return " AND ".join(where), params


@dataclass(frozen=True)
class Quality:
    """One scorer's verdicts on one model's (or one A/B arm's) answers."""

    scorer: str
    model: str | None
    scored: int
    mean: float
    stderr: float


@dataclass
class Arm:
    """One arm of a split route (``arm`` None: the route's rows no arm decided)."""

    route: str
    arm: str | None
    requests: int
    errors: int
    cost_usd: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    quality: list[Quality] = field(default_factory=list)


@dataclass
class ReportData:
    window: Window
    first_ts: float
    last_ts: float
    totals: dict[str, Any]
    by_day: list[dict[str, Any]]  # oldest first
    by_model: list[dict[str, Any]]
    by_tenant: list[dict[str, Any]]
    by_user: list[dict[str, Any]]  # with its tenant
    by_project: list[dict[str, Any]]  # with its tenant
    cost_per_request: np.ndarray  # USD, every request (no cost logged: 0)
    quality: list[Quality]
    arms: list[Arm]
    forecasts: list[Forecast]


def gather(log: TrafficLog, window: Window, *,
           budget_for: Callable[[str | None], float | None] | None = None) -> ReportData:
    """Every figure of the report; ``EmptyWindow`` if the window holds no request.
    ``budget_for(tenant)``: the tenant's monthly budget (USD), shown beside its forecast."""
    span = {"since": window.since, "until": window.until, "tenant": window.tenant}
    totals = usage(log, [], **span)
    if not totals or totals[0]["requests"] == 0:
        raise EmptyWindow(_empty_message(window))
    where, params = window.where()
    rows = log.read(f"SELECT ts, COALESCE(cost_usd, 0) FROM requests WHERE {where}", params)
    ts = np.array([r[0] for r in rows], dtype=float)
    return ReportData(
        window=window, first_ts=float(ts.min()), last_ts=float(ts.max()), totals=totals[0],
        by_day=sorted(usage(log, ["day"], **span), key=lambda r: r["day"]),
        by_model=usage(log, ["model"], **span),
        by_tenant=usage(log, ["tenant"], **span),
        by_user=usage(log, ["tenant", "user"], **span),
        by_project=usage(log, ["tenant", "project"], **span),
        cost_per_request=np.array([r[1] for r in rows], dtype=float),
        quality=[q for _, q in _scores(log, window, "model")],
        arms=_arms(log, window),
        forecasts=_forecasts(log, window, budget_for),
    )


def _empty_message(window: Window) -> str:
    def iso(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    span = f"from {iso(window.since)} " if window.since is not None else ""
    who = f" for tenant {window.tenant!r}" if window.tenant is not None else ""
    return f"no requests in the traffic log {span}before {iso(window.until)}{who}"


def _scores(log: TrafficLog, window: Window, *group: str) -> list[tuple[tuple, Quality]]:
    """Mean score (and its standard error) per scorer and ``group`` columns of the requests,
    each with the group's values. Verdicts without a value (unscorable) are left out."""
    where, params = window.where("r")
    cols = "".join(f", r.{g}" for g in group)
    rows = log.read(
        f"SELECT s.scorer{cols}, COUNT(s.score), AVG(s.score), AVG(s.score * s.score) "
        f"FROM scores s JOIN requests r ON r.id = s.request_id "
        f"WHERE s.score IS NOT NULL AND {where} GROUP BY s.scorer{cols} ORDER BY s.scorer{cols}",
        params)
    out = []
    for row in rows:
        keys = tuple(row[1:1 + len(group)])
        n, mean, square = int(row[-3]), float(row[-2]), float(row[-1])
        # The sample variance from the two sums; rounding can take it a hair below zero.
        var = max(square - mean * mean, 0.0) * n / (n - 1) if n > 1 else 0.0
        model = keys[group.index("model")] if "model" in group else None
        out.append((keys, Quality(scorer=row[0], model=model, scored=n, mean=mean,
                                  stderr=math.sqrt(var / n))))
    return out


def _arms(log: TrafficLog, window: Window) -> list[Arm]:
    """Each arm of every route that A/B-split some of its traffic in the window."""
    where, params = window.where()
    rows = log.read(
        "SELECT route, arm, CASE WHEN status >= 400 THEN 1 ELSE 0 END, COALESCE(cost_usd, 0), "
        f"latency_ms FROM requests WHERE {where} AND route IN (SELECT DISTINCT route FROM "
        f"requests WHERE arm IS NOT NULL AND {where})", [*params, *params])
    groups: dict[tuple[str, str | None], list[tuple]] = defaultdict(list)
    for route, arm, error, cost, latency in rows:
        groups[(route, arm)].append((error, cost, latency))
    scores: dict[tuple, list[Quality]] = defaultdict(list)
    for keys, quality in _scores(log, window, "route", "arm"):
        scores[keys].append(quality)
    out = []
    for (route, arm), members in sorted(groups.items(),
                                        key=lambda kv: (kv[0][0] or "", kv[0][1] or "")):
        latency = np.array([m[2] for m in members if m[2] is not None], dtype=float)
        out.append(Arm(
            route=route, arm=arm, requests=len(members), errors=sum(m[0] for m in members),
            cost_usd=float(sum(m[1] for m in members)),
            latency_p50_ms=float(np.percentile(latency, 50)) if len(latency) else None,
            latency_p95_ms=float(np.percentile(latency, 95)) if len(latency) else None,
            quality=scores.get((route, arm), [])))
    return out


def _forecasts(log: TrafficLog, window: Window,
               budget_for: Callable[[str | None], float | None] | None) -> list[Forecast]:
    """This month's forecast for every tenant with spend before ``until`` (the whole log's
    history, not only the window's)."""
    days: dict[str | None, dict[str, float]] = defaultdict(dict)
    for row in usage(log, ["tenant", "day"], until=window.until, tenant=window.tenant):
        days[row["tenant"]][row["day"]] = row["cost_usd"]
    return [forecast_month(tenant, by_day, window.until,
                           budget_usd=budget_for(tenant) if budget_for else None)
            for tenant, by_day in sorted(days.items(), key=lambda kv: kv[0] or "")]
