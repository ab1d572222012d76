"""What the dashboard shows, computed from the traffic log over one time window.

``traffic_stats`` reads the log's rows in ``[since, until)`` (of one tenant, or all) with three
queries — two SQL aggregates (one per time bucket, one per route/model/deployment/outcome) and
one read of the latest ``MAX_ROWS`` answers, for percentiles and per-row quality, which SQL
cannot aggregate portably on SQLite and PostgreSQL alike — and returns JSON-ready builtins:
requests/s over time, latency and time-to-first-token percentiles by provider and model, error
rate by provider, routing distribution per route, cache hit rate and the money hits saved,
spend by tenant, project and model over time, predicted versus scored quality per model, and
cost per unit of quality per route. Budgets' burn-down is ``router.stats_budgets``. Blocking
(database reads): call it in a worker thread. Each query scans the window once, so the cost
grows with the window's rows: three scans, not one per figure.

Conventions: a row's *provider* is its deployment's provider (``openai:https://...`` ->
``openai``), ``cache`` for a cache hit, and for a request that reached none (refused, or
failed at every deployment) its model's provider when there is one, else ``none``; money saved
by a hit is what its tokens cost at the answering model's catalog prices; quality per row is
the mean of its scorers' scores (``contextforge eval score``) where there are any, and the
router's prediction for the chosen model otherwise.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
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
_ERR = "CASE WHEN r.status >= 400 THEN 1 ELSE 0 END"
# Not LIKE 'hit%': with parameters, psycopg reads a % as a placeholder.
_HIT = "CASE WHEN SUBSTR(r.cache, 1, 3) = 'hit' THEN 1 ELSE 0 END"
_SCORE = ("(SELECT AVG(s.score) FROM scores s WHERE s.request_id = r.id "
          "AND s.score IS NOT NULL)")

Price = Callable[[str], tuple[float, float] | None]  # model -> USD per 1M (input, output)
Providers = Callable[[str], str | None]  # model -> the provider of all its deployments
_CANDIDATES = msgspec.json.Decoder(list[CandidateLog])


def bucket_seconds(window_s: float) -> int:
    """The series' step for a window: the largest round step giving >= ``POINTS`` points."""
    fitting = [s for s in _STEPS if window_s / s >= POINTS]
    return fitting[-1] if fitting else _STEPS[0]


def provider_of(deployment: str | None, cache: str | None) -> str:
    if cache is not None and cache.startswith("hit"):
        return "cache"
    if not deployment:
        return "none"
    return deployment.split(":", 1)[0]


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), digits)


class _Window:
    """The window's rows: its WHERE clause, its buckets, and the log's dialect."""

    def __init__(self, log: TrafficLog, since: float, until: float, tenant: str | None):
        self.log, self.since, self.until = log, since, until
        self.step = bucket_seconds(until - since)
        self.n = max(1, math.ceil((until - since) / self.step))
        self.t = [round(since + i * self.step, 3) for i in range(self.n)]
        where, self.params = ["r.ts >= ?", "r.ts < ?"], [since, until]
        if tenant is not None:
            where.append("r.tenant = ?")
            self.params.append(tenant)
        self.where = " AND ".join(where)

    def bucket(self) -> str:
        """The SQL of a row's bucket index (ts >= since, so truncation is floor)."""
        if self.log.kind == "sqlite":
            return f"CAST((r.ts - {self.since!r}) / {self.step} AS INTEGER)"
        return f"FLOOR((r.ts - {self.since!r}) / {self.step})::bigint"

    def read(self, select: str, tail: str = "") -> list[tuple]:
        return self.log.read(f"SELECT {select} FROM requests r WHERE {self.where} {tail}",
                             self.params, flush=False)


# --- over time: requests, errors, hits and spend per bucket -------------------------------

def _over_time(w: _Window) -> dict[str, Any]:
    rows = w.read(f"{w.bucket()} AS b, r.tenant, r.project, r.model, COUNT(*), SUM({_ERR}), "
                  f"SUM({_HIT}), COALESCE(SUM(r.cost_usd), 0)",
                  "GROUP BY b, r.tenant, r.project, r.model")
    count, errors, hits = [0] * w.n, [0] * w.n, [0] * w.n
    for b, _t, _p, _m, n, e, h, _usd in rows:
        i = min(int(b), w.n - 1)
        count[i] += int(n)
        errors[i] += int(e or 0)
        hits[i] += int(h or 0)
    total = sum(count)
    requests = {"total": total, "errors": sum(errors),
                "per_s": _round(total / max(w.until - w.since, 1e-9), 4),
                "series": {"t": w.t, "requests_per_s": [_round(c / w.step) for c in count],
                           "errors_per_s": [_round(e / w.step) for e in errors],
                           "cache_hit_rate": [_round(h / c, 4) if c else None
                                              for h, c in zip(hits, count, strict=True)]}}
    spend: dict[str, Any] = {"total_usd": _round(sum(float(r[7]) for r in rows), 8),
                             "series": {"t": w.t}}
    for col, group in ((1, "tenant"), (2, "project"), (3, "model")):
        totals: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for r in rows:
            totals[r[col] or "none"] += float(r[7])
            counts[r[col] or "none"] += int(r[4])
        keep = set(sorted(totals, key=lambda g: -totals[g])[:TOP])
        series: dict[str, list[float]] = {}
        for r in rows:
            name = (r[col] or "none") if (r[col] or "none") in keep else "other"
            series.setdefault(name, [0.0] * w.n)[min(int(r[0]), w.n - 1)] += float(r[7])
        spend[f"by_{group}"] = [{group: g, "cost_usd": _round(totals[g], 8),
                                 "requests": counts[g]}
                                for g in sorted(totals, key=lambda g: -totals[g])]
        spend["series"][group] = {k: [_round(v, 8) for v in vs] for k, vs in series.items()}
    return {"requests": requests, "spend": spend}


# --- by outcome: errors per provider, routing per route, the cache ------------------------

def _by_outcome(w: _Window, price: Price, providers: Providers) -> dict[str, Any]:
    rows = w.read(f"r.route, r.model, r.deployment, r.cache, {_ERR} AS e, COUNT(*), "
                  "COALESCE(SUM(r.input_tokens), 0), COALESCE(SUM(r.output_tokens), 0)",
                  "GROUP BY r.route, r.model, r.deployment, r.cache, e")
    failed: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    routed: dict[tuple[str, str], int] = defaultdict(int)
    looked, hits, saved, tiers = 0, 0, 0.0, defaultdict(int)
    for route, model, deployment, cache, err, n, tokens_in, tokens_out in rows:
        n = int(n)
        provider = provider_of(deployment, cache)
        if provider == "none" and model:  # failed at every deployment: its model's provider
            provider = providers(model) or provider
        failed[provider][0] += n
        failed[provider][1] += n if err else 0
        if route is not None and model is not None and not err:
            routed[(route, model)] += n
        if cache is not None and cache != "bypass":
            looked += n
            if cache.startswith("hit"):
                hits += n
                tiers[cache.removeprefix("hit-")] += n
                prices = price(model) if model else None
                if prices is not None:
                    saved += (int(tokens_in) * prices[0] + int(tokens_out) * prices[1]) / 1e6
    per_route: dict[str, int] = defaultdict(int)
    for (route, _model), n in routed.items():
        per_route[route] += n
    return {
        "errors": sorted(({"provider": p, "requests": n, "errors": e,
                           "error_rate": _round(e / n, 4)} for p, (n, e) in failed.items()),
                         key=lambda r: -r["requests"]),
        "routing": sorted(({"route": route, "model": model, "requests": n,
                            "share": _round(n / per_route[route], 4)}
                           for (route, model), n in routed.items()),
                          key=lambda r: (r["route"], -r["requests"])),
        "cache": {"lookups": looked, "hits": hits, "hits_by_tier": dict(tiers),
                  "hit_rate": _round(hits / looked, 4) if looked else None,
                  "saved_usd": _round(saved, 8)},
    }


# --- the latest answers: latency percentiles, quality, cost per quality --------------------

def _percentiles(values: list[float]) -> list[float | None]:
    if not values:
        return [None, None, None]
    return [_round(v, 2) for v in np.percentile(np.asarray(values), [50, 95, 99])]


def _latency(rows: list[tuple]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(
        lambda: ([], []))
    for _route, model, deployment, cache, latency, ttft, _c, _cost, _score in rows:
        if latency is None:
            continue
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


def _predicted(candidates: str | None, model: str) -> float | None:
    if candidates:
        for c in _CANDIDATES.decode(candidates):
            if c.model == model:
                return c.predicted_quality
    return None


def _quality(rows: list[tuple]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Predicted versus scored quality per model, and cost per unit of quality per route,
    from routed (not cached) answers."""
    models: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"p": [], "s": []})
    routes: dict[str, dict[str, list[float]]] = defaultdict(
        lambda: {"cost": [], "q": [], "scored": []})
    for route, model, _d, cache, _lat, _ttft, candidates, cost, score in rows:
        if model is None or (cache is not None and cache.startswith("hit")):
            continue
        predicted, m = _predicted(candidates, model), models[model]
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
    quality = [{"model": model, "requests": max(len(m["p"]), len(m["s"])),
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


def traffic_stats(log: TrafficLog, *, since: float, until: float, tenant: str | None = None,
                  price: Price = lambda _m: None, providers: Providers = lambda _m: None,
                  ) -> dict[str, Any]:
    """The dashboard's figures for ``[since, until)`` (see the module docstring); ``price``
    gives a model's catalog prices (what a cache hit saved), ``providers`` the provider a
    request that reached no deployment is counted against."""
    log.flush()  # once: the rows answered so far are in every figure
    w = _Window(log, since, until, tenant)
    latest = w.read(f"r.route, r.model, r.deployment, r.cache, r.latency_ms, r.ttft_ms, "
                    f"r.candidates, r.cost_usd, {_SCORE}",
                    f"AND r.status < 400 ORDER BY r.ts DESC LIMIT {MAX_ROWS}")
    quality, value = _quality(latest)
    return {"since": since, "until": until, "bucket_s": w.step, "tenant": tenant,
            **_over_time(w), **_by_outcome(w, price, providers), "latency": _latency(latest),
            "quality": quality, "value": value}
