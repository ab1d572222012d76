"""What the dashboard shows, computed from the traffic log over one time window.

``traffic_stats`` reads the log's rows in ``[since, until)`` (of one tenant, or all) with a few
SQL aggregates plus two bounded row reads (the latest ``MAX_ROWS`` answers, for percentiles and
per-row quality, which SQL cannot aggregate portably on SQLite and PostgreSQL alike) and
returns JSON-ready builtins: requests/s over time, latency and time-to-first-token
percentiles by provider and model, error rate by provider, routing distribution per route, cache
hit rate and the money hits saved, spend by tenant, project and model over time, predicted
versus scored quality per model, and cost per unit of quality per route. Budgets' burn-down is
``router.stats_budgets``. Blocking (database reads): call it in a worker thread.

Conventions: a row's *provider* is its deployment's provider (``openai:https://...`` ->
``openai``), ``cache`` for a cache hit and ``none`` for a request refused before any
deployment; money saved by a hit is what its tokens cost at the answering model's catalog
prices; quality per row is the mean of its scorers' scores (``contextforge eval score``) where
there are any, and the router's prediction for the chosen model otherwise.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np

from router.traffic import CandidateLog, TrafficLog

# Row reads for percentiles and quality stop at the latest this many: a day of heavy traffic
# must not turn one dashboard refresh into a scan of millions of rows.
MAX_ROWS = 20_000
# The fewest series points a chart shows; buckets are the largest step giving at least this.
POINTS = 60
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
          86400)
TOP = 8  # spend series: the biggest groups, the rest summed as "other"

Price = Callable[[str], tuple[float, float] | None]  # model -> USD per 1M (input, output)
Providers = Callable[[str], str | None]  # model -> the provider of all its deployments
_CANDIDATES = msgspec.json.Decoder(list[CandidateLog])


def bucket_seconds(window_s: float) -> int:
    """The series' step for a window: the largest round step giving >= ``POINTS`` points."""
    fitting = [s for s in _STEPS if window_s / s >= POINTS]
    return fitting[-1] if fitting else _STEPS[0]


class _Query:
    """The window's WHERE clause and its parameters, and the log's dialect."""

    def __init__(self, log: TrafficLog, since: float, until: float, tenant: str | None,
                 join: str = ""):
        self.log, self.since, self.until, self.tenant, self.join = (log, since, until, tenant,
                                                                     join)
        where, params = ["r.ts >= ?", "r.ts < ?"], [since, until]
        if tenant is not None:
            where.append("r.tenant = ?")
            params.append(tenant)
        self.where, self.params = " AND ".join(where), params

    def bucket(self, step: int) -> tuple[str, list[Any]]:
        """The SQL of a row's bucket index (ts >= since, so truncation is floor)."""
        if self.log.kind == "sqlite":
            return "CAST((ts - ?) / ? AS INTEGER)", [self.since, step]
        return "FLOOR((ts - ?) / ?)::bigint", [self.since, step]

    def rows(self, select: str, tail: str = "", extra: Sequence[Any] = ()) -> list[tuple]:
        """``SELECT {select} FROM requests r`` in the window; ``extra`` params go first."""
        return self.log.read(f"SELECT {select} FROM requests r{self.join} WHERE {self.where} "
                             f"{tail}", [*extra, *self.params], flush=False)


def provider_of(deployment: str | None, cache: str | None) -> str:
    if cache is not None and cache.startswith("hit"):
        return "cache"
    if not deployment:
        return "none"
    return deployment.split(":", 1)[0]


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), digits)


def _series(q: _Query, step: int, columns: str) -> tuple[list[float], list[tuple]]:
    """Per-bucket aggregates: the bucket start times and one row of ``columns`` per bucket
    (zeros where the bucket had no rows)."""
    expr, params = q.bucket(step)
    found = {int(r[0]): r[1:] for r in q.rows(f"{expr} AS b, {columns}", "GROUP BY b",
                                              params)}
    n = max(1, math.ceil((q.until - q.since) / step))
    width = len(next(iter(found.values()))) if found else columns.count(",") + 1
    times = [round(q.since + i * step, 3) for i in range(n)]
    return times, [tuple(found.get(i, (0,) * width)) for i in range(n)]


def _requests(q: _Query, step: int) -> dict[str, Any]:
    t, rows = _series(q, step, "COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), "
                               "SUM(CASE WHEN cache LIKE 'hit%' THEN 1 ELSE 0 END)")
    total, errors = sum(int(r[0]) for r in rows), sum(int(r[1] or 0) for r in rows)
    hits = [int(r[2] or 0) for r in rows]
    return {"total": total, "errors": errors,
            "per_s": _round(total / max(q.until - q.since, 1e-9), 4),
            "series": {"t": t, "requests_per_s": [_round(int(r[0]) / step) for r in rows],
                       "errors_per_s": [_round(int(r[1] or 0) / step) for r in rows],
                       "cache_hit_rate": [_round(h / int(r[0]), 4) if r[0] else None
                                          for h, r in zip(hits, rows, strict=True)]}}


def _percentiles(values: list[float]) -> list[float | None]:
    if not values:
        return [None, None, None]
    return [_round(v, 2) for v in np.percentile(np.asarray(values), [50, 95, 99])]


def _latency(q: _Query) -> list[dict[str, Any]]:
    """Successful answers' latency and TTFT percentiles by (provider, model), latest rows."""
    rows = q.rows("deployment, cache, model, latency_ms, ttft_ms",
                  f"AND status < 400 AND latency_ms IS NOT NULL ORDER BY ts DESC "
                  f"LIMIT {MAX_ROWS}")
    groups: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(
        lambda: ([], []))
    for deployment, cache, model, latency, ttft in rows:
        lat, first = groups[(provider_of(deployment, cache), model or "none")]
        lat.append(float(latency))
        if ttft is not None:
            first.append(float(ttft))
    out = []
    for (provider, model), (lat, first) in groups.items():
        p, f = _percentiles(lat), _percentiles(first)
        out.append({"provider": provider, "model": model, "requests": len(lat),
                    "p50_ms": p[0], "p95_ms": p[1], "p99_ms": p[2],
                    "ttft_p50_ms": f[0], "ttft_p95_ms": f[1], "ttft_p99_ms": f[2]})
    return sorted(out, key=lambda r: -r["requests"])


def _errors(q: _Query, providers: Providers) -> list[dict[str, Any]]:
    """Requests and failures by provider; a request that failed at every deployment (its row
    names none) counts against its model's provider, when its deployments share one."""
    rows = q.rows("deployment, cache, model, COUNT(*), "
                  "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END)",
                  "GROUP BY deployment, cache, model")
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for deployment, cache, model, n, errors in rows:
        provider = provider_of(deployment, cache)
        if provider == "none" and model:
            provider = providers(model) or provider
        c = counts[provider]
        c[0] += int(n)
        c[1] += int(errors or 0)
    return sorted(({"provider": p, "requests": n, "errors": e, "error_rate": _round(e / n, 4)}
                   for p, (n, e) in counts.items()), key=lambda r: -r["requests"])


def _routing(q: _Query) -> list[dict[str, Any]]:
    """Routed answers per (route, model), each with its share of the route."""
    rows = q.rows("route, model, COUNT(*)", "AND route IS NOT NULL AND model IS NOT NULL "
                  "AND status < 400 GROUP BY route, model")
    per_route: dict[str, int] = defaultdict(int)
    for route, _model, n in rows:
        per_route[route] += int(n)
    out = [{"route": route, "model": model, "requests": int(n),
            "share": _round(int(n) / per_route[route], 4)} for route, model, n in rows]
    return sorted(out, key=lambda r: (r["route"], -r["requests"]))


def _cache(q: _Query, price: Price) -> dict[str, Any]:
    rows = q.rows("cache, model, COUNT(*), COALESCE(SUM(input_tokens), 0), "
                  "COALESCE(SUM(output_tokens), 0)",
                  "AND cache IS NOT NULL AND cache <> 'bypass' GROUP BY cache, model")
    looked, hits, tiers, saved = 0, 0, defaultdict(int), 0.0
    for cache, model, n, tokens_in, tokens_out in rows:
        looked += int(n)
        if cache.startswith("hit"):
            hits += int(n)
            tiers[cache.removeprefix("hit-")] += int(n)
            prices = price(model) if model else None
            if prices is not None:
                saved += (int(tokens_in) * prices[0] + int(tokens_out) * prices[1]) / 1e6
    return {"lookups": looked, "hits": hits, "hits_by_tier": dict(tiers),
            "hit_rate": _round(hits / looked, 4) if looked else None,
            "saved_usd": _round(saved, 8)}


def _top(totals: dict[str, float]) -> list[str]:
    return [k for k, _ in sorted(totals.items(), key=lambda kv: -kv[1])][:TOP]


def _spend(q: _Query, step: int) -> dict[str, Any]:
    """Spend totals by tenant, project and model, and each as a series (per bucket, USD)."""
    expr, params = q.bucket(step)
    n = max(1, math.ceil((q.until - q.since) / step))
    t = [round(q.since + i * step, 3) for i in range(n)]
    out: dict[str, Any] = {"total_usd": 0.0, "series": {"t": t}}
    for group, column in (("tenant", "tenant"), ("project", "project"), ("model", "model")):
        rows = q.rows(f"{expr} AS b, {column} AS g, COALESCE(SUM(cost_usd), 0), COUNT(*)",
                      "GROUP BY b, g", params)
        totals: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for _b, g, usd, count in rows:
            totals[g or "none"] += float(usd)
            counts[g or "none"] += int(count)
        keep = set(_top(totals))
        series: dict[str, list[float]] = {}
        for b, g, usd, _count in rows:
            name = (g or "none") if (g or "none") in keep else "other"
            series.setdefault(name, [0.0] * n)[min(int(b), n - 1)] += float(usd)
        out[f"by_{group}"] = [{group: g, "cost_usd": _round(totals[g], 8), "requests": counts[g]}
                              for g in sorted(totals, key=lambda g: -totals[g])]
        out["series"][group] = {k: [_round(v, 8) for v in vs] for k, vs in series.items()}
        out["total_usd"] = _round(sum(totals.values()), 8)
    return out


def _quality(q: _Query) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Predicted versus scored quality per model, and cost per unit of quality per route,
    from the latest routed (not cached) answers and their scores."""
    rows = q.rows(
        "r.route, r.model, r.candidates, r.cost_usd, sc.s, sc.n",
        f"AND r.status < 400 AND (r.cache IS NULL OR r.cache NOT LIKE 'hit%') "
        f"AND r.model IS NOT NULL ORDER BY r.ts DESC LIMIT {MAX_ROWS}")
    models: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"p": [], "s": []})
    routes: dict[str, dict[str, list[float]]] = defaultdict(
        lambda: {"cost": [], "q": [], "scored": []})
    for route, model, candidates, cost, score, _n in rows:
        predicted = None
        if candidates:
            for c in _CANDIDATES.decode(candidates):
                if c.model == model:
                    predicted = c.predicted_quality
        m = models[model]
        if predicted is not None:
            m["p"].append(float(predicted))
        if score is not None:
            m["s"].append(float(score))
        if route is not None:
            r = routes[route]
            r["cost"].append(float(cost or 0.0))
            quality = score if score is not None else predicted
            if quality is not None:
                r["q"].append(float(quality))
                r["scored"].append(1.0 if score is not None else 0.0)
    quality = [{"model": model, "requests": len(m["p"]) or len(m["s"]),
                "predicted": _round(float(np.mean(m["p"])), 4) if m["p"] else None,
                "scored": _round(float(np.mean(m["s"])), 4) if m["s"] else None,
                "scored_requests": len(m["s"])}
               for model, m in models.items() if m["p"] or m["s"]]
    value = []
    for route, r in routes.items():
        mean_cost = float(np.mean(r["cost"]))
        mean_q = float(np.mean(r["q"])) if r["q"] else None
        value.append({"route": route, "requests": len(r["cost"]),
                      "mean_cost_usd": _round(mean_cost, 8), "quality": _round(mean_q, 4),
                      "scored_share": _round(float(np.mean(r["scored"])), 4)
                      if r["scored"] else None,
                      # USD per request per unit of quality (0..1): what a point of quality costs
                      "usd_per_quality": _round(mean_cost / mean_q, 8) if mean_q else None})
    return (sorted(quality, key=lambda r: -r["requests"]),
            sorted(value, key=lambda r: -r["requests"]))


_SCORED = (" LEFT JOIN (SELECT request_id, AVG(score) AS s, COUNT(*) AS n FROM scores "
           "WHERE score IS NOT NULL GROUP BY request_id) sc ON sc.request_id = r.id")


def traffic_stats(log: TrafficLog, *, since: float, until: float, tenant: str | None = None,
                  price: Price = lambda _m: None, providers: Providers = lambda _m: None,
                  ) -> dict[str, Any]:
    """The dashboard's figures for ``[since, until)`` (see the module docstring); ``price``
    gives a model's catalog prices (what a cache hit saved), ``providers`` the provider a
    request that reached no deployment is counted against."""
    log.flush()  # once: the rows answered so far are in every figure
    q = _Query(log, since, until, tenant)
    step = bucket_seconds(until - since)
    quality, value = _quality(_Query(log, since, until, tenant, join=_SCORED))
    return {"since": since, "until": until, "bucket_s": step, "tenant": tenant,
            "requests": _requests(q, step), "latency": _latency(q), "errors": _errors(q, providers),
            "routing": _routing(q), "cache": _cache(q, price), "spend": _spend(q, step),
            "quality": quality, "value": value}

