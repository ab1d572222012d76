"""Routing metrics: pure numpy, no I/O.

Conventions
-----------
* A "point" is ``(cost, quality)``; arrays of points have shape ``(k, 2)``.
* Per-prompt tables ``scores`` / ``costs`` have shape ``(n, m)`` (prompts x models).

References
----------
* RouterBench (Hu et al., 2024, "RouterBench: A Benchmark for Multi-LLM Routing System";
  code ``withmartian/routerbench``, ``evaluation/AIQ.py``): the non-decreasing convex hull of a
  router's (cost, quality) points and AIQ = 1/(c_max - c_min) * integral of R~(c) dc.
* RouteLLM (Ong et al., 2024; code ``lm-sys/RouteLLM``, ``routellm/evals/evaluate.py`` and
  ``routellm/evals/benchmarks.py``): PGR, APGR and CPT(x%) of a strong/weak model pair.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def single_models(scores: ArrayLike, costs: ArrayLike, models: list[str]) -> dict[str, dict]:
    """Mean quality and mean cost of each model, ignoring NaN per column.

    Returns ``{model: {"quality": float, "cost": float}}`` in the order of ``models``.
    """
    s, c = np.asarray(scores, dtype=float), np.asarray(costs, dtype=float)
    q, k = np.nanmean(s, axis=0), np.nanmean(c, axis=0)
    return {m: {"quality": float(q[j]), "cost": float(k[j])} for j, m in enumerate(models)}


def oracle(scores: ArrayLike, costs: ArrayLike) -> tuple[float, float]:
    """Quality and cost of the per-prompt oracle: the best score, ties to the cheapest model.

    NaN scores (missing outcomes) are never chosen; NaN costs lose cost ties.
    """
    s, c = np.asarray(scores, dtype=float), np.asarray(costs, dtype=float)
    s_ = np.where(np.isnan(s), -np.inf, s)
    best = s_.max(axis=1, keepdims=True)
    pick = np.argmin(np.where(s_ >= best, np.nan_to_num(c, nan=np.inf), np.inf), axis=1)
    rows = np.arange(s.shape[0])
    return float(s[rows, pick].mean()), float(c[rows, pick].mean())


def random_router_curve(scores: ArrayLike, costs: ArrayLike, n_points: int = 11) -> FloatArray:
    """Expected (cost, quality) of sending a random share p of calls to the best model.

    The rest go to the cheapest model; p runs over ``linspace(0, 1, n_points)``. By linearity of
    expectation this is the straight segment between the two single models' mean points.
    """
    q = np.nanmean(np.asarray(scores, dtype=float), axis=0)
    c = np.nanmean(np.asarray(costs, dtype=float), axis=0)
    cheap = np.lexsort((-q, c))[0]  # cheapest; ties -> better quality
    best = np.lexsort((c, -q))[0]  # best quality; ties -> cheaper
    p = np.linspace(0.0, 1.0, n_points)
    return np.column_stack([(1 - p) * c[cheap] + p * c[best], (1 - p) * q[cheap] + p * q[best]])


def upper_hull(points: ArrayLike) -> FloatArray:
    """Non-decreasing upper convex hull of (cost, quality) points, sorted by cost.

    RouterBench's R~: the upper (concave) hull, cut at its highest point, so points that cost
    more without giving more quality are dropped, and so are points below a chord between two
    others (mixing those two at random does at least as well). Collinear points are dropped too.
    NaN rows are ignored. Returns shape ``(h, 2)``, ``h >= 1`` when any finite point is given.
    """
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    p = p[np.isfinite(p).all(axis=1)]
    p = p[np.lexsort((-p[:, 1], p[:, 0]))]  # cost ascending, quality descending
    hull: list[FloatArray] = []
    for pt in p:
        if hull and pt[0] == hull[-1][0]:
            continue  # same cost, no better quality
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = hull[-2], hull[-1]
            if (x1 - x0) * (pt[1] - y0) - (y1 - y0) * (pt[0] - x0) >= 0:
                hull.pop()  # hull[-1] lies on or below the chord hull[-2] -> pt
            else:
                break
        hull.append(pt)
    h = np.array(hull).reshape(-1, 2)
    return h[: int(np.argmax(h[:, 1])) + 1] if len(h) else h


def aiq(points: ArrayLike, c_min: float, c_max: float) -> float:
    """Average Improvement in Quality (RouterBench): mean height of the hull over [c_min, c_max].

    ``AIQ = 1/(c_max - c_min) * integral_{c_min}^{c_max} R~(c) dc`` (RouterBench paper), with
    R~ the :func:`upper_hull` interpolated linearly between vertices (mixing two settings at
    random), flat after its last vertex. Conventions, identical for routers and the zero router:

    * ``c_min``/``c_max`` are the cheapest and the most expensive single model's mean cost, so
      router and zero-router AIQ share one range.
    * Hull parts outside [c_min, c_max] are clipped (the hull is evaluated at the bounds).
    * Below the hull's cheapest point R~ = 0: no quality is attainable on that budget. This is
      what RouterBench's code does (it integrates from the cheapest hull point only).
    * If ``c_max <= c_min`` the result is R~(c_max).

    RouterBench's code (``evaluation/AIQ.py``) divides the area by ``max cost`` rather than by
    ``c_max - c_min``; we follow the paper so that a flat hull at quality q has AIQ exactly q.
    """
    h = upper_hull(points)
    if len(h) == 0:
        return 0.0
    value = _hull_value(h, np.array([c_max]))[0]
    if c_max <= c_min:
        return float(value)
    lo = max(c_min, h[0, 0])
    if lo >= c_max:
        return 0.0
    inner = h[(h[:, 0] > lo) & (h[:, 0] < c_max), 0]
    xs = np.concatenate([[lo], inner, [c_max]])
    area = np.trapezoid(_hull_value(h, xs), xs)
    return float(area / (c_max - c_min))


def _hull_value(hull: FloatArray, c: FloatArray) -> FloatArray:
    """R~(c): linear between hull vertices, flat after the last one, 0 before the first."""
    return np.interp(c, hull[:, 0], hull[:, 1], left=0.0, right=hull[-1, 1])


def zero_router_aiq(
    single_points: ArrayLike, c_min: float | None = None, c_max: float | None = None
) -> float:
    """AIQ of the single models' hull (RouterBench's "zero router"); bounds default to theirs."""
    p = np.asarray(single_points, dtype=float).reshape(-1, 2)
    lo = float(np.nanmin(p[:, 0])) if c_min is None else c_min
    hi = float(np.nanmax(p[:, 0])) if c_max is None else c_max
    return aiq(p, lo, hi)


def cost_at_quality(points: ArrayLike, target: float, atol: float = 1e-12) -> float | None:
    """Least cost at which the :func:`upper_hull` reaches ``target`` quality, or None.

    Between hull vertices the cost is interpolated linearly (mixing two settings at random).
    ``atol`` absorbs float noise when the target is a point of the curve itself.
    """
    h = upper_hull(points)
    if len(h) == 0 or target > h[-1, 1] + atol:
        return None
    if target <= h[0, 1]:
        return float(h[0, 0])
    return float(np.interp(min(target, h[-1, 1]), h[:, 1], h[:, 0]))


# ---- two-model (RouteLLM) metrics -------------------------------------------------------------


def pgr(q: ArrayLike, q_weak: float, q_strong: float) -> FloatArray | float:
    """Performance Gap Recovered: ``(q - q_weak) / (q_strong - q_weak)`` (RouteLLM)."""
    if q_strong == q_weak:
        raise ValueError("PGR is undefined when the strong and weak models score the same")
    out = (np.asarray(q, dtype=float) - q_weak) / (q_strong - q_weak)
    return float(out) if out.ndim == 0 else out


def apgr(strong_share: ArrayLike, quality: ArrayLike, q_weak: float, q_strong: float) -> float:
    """Average PGR, as RouteLLM's ``apgr_metric`` computes it.

    RouteLLM sorts the curve by strong-call share, takes ``AUC = trapz(quality, share)`` and the
    AUCs of the constant weak and strong qualities over the same share points, and returns
    ``(AUC - weak_auc) / (strong_auc - weak_auc)``. That equals the trapezoid integral of PGR
    over the share divided by the share range (1 when the curve spans 0..100% strong calls,
    as RouteLLM's threshold sweep does). Shares are fractions in [0, 1] here.
    """
    x, y = _sorted_curve(strong_share, quality)
    span = x[-1] - x[0]
    if span <= 0:
        raise ValueError("APGR needs at least two distinct strong-call shares")
    return float(np.trapezoid(np.asarray(pgr(y, q_weak, q_strong)), x) / span)


def cpt(
    strong_share: ArrayLike,
    quality: ArrayLike,
    q_weak: float,
    q_strong: float,
    pgr_target: float,
) -> float | None:
    """Call-Performance Threshold: least strong-call share whose quality reaches the PGR target.

    RouteLLM (``pct_call_metric``) computes ``np.interp(q_weak + x * (q_strong - q_weak),
    accuracy, strong_percentage)`` on the curve sorted by share, i.e. linear interpolation that
    assumes quality rises with the share. We interpolate on the first segment (in share order)
    that crosses the target, which is the same on a monotone curve, stays defined on a
    non-monotone one, and returns None when the target is never reached (where ``np.interp``
    would silently clamp). ``pgr_target`` is a fraction (0.5 for CPT(50%)); so is the result.
    """
    x, y = _sorted_curve(strong_share, quality)
    target = q_weak + pgr_target * (q_strong - q_weak)
    hit = np.flatnonzero(y >= target)
    if len(hit) == 0:
        return None
    i = int(hit[0])
    if i == 0:
        return float(x[0])
    frac = (target - y[i - 1]) / (y[i] - y[i - 1])
    return float(x[i - 1] + frac * (x[i] - x[i - 1]))


def _sorted_curve(strong_share: ArrayLike, quality: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Curve arrays sorted by share (stable, so equal shares keep their input order)."""
    x, y = np.asarray(strong_share, dtype=float), np.asarray(quality, dtype=float)
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def threshold_curve_two_model(
    score_strong_pref: ArrayLike,
    strong_correct: ArrayLike,
    weak_correct: ArrayLike,
    n_points: int | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Curve of a threshold sweep on a per-prompt router score (higher = send to strong).

    Sending the top-k scored prompts to the strong model gives mean quality
    ``mean(weak) + cumsum(strong - weak)[k-1] / n``. A threshold cannot split prompts with tied
    scores, so the exact value is taken only at tie-group boundaries and interpolated linearly
    inside a group: the expected quality when the tied prompts sent are picked at random. This is
    deterministic and never rewards the input order (a constant score gives the random router).

    Returns ``(share, quality)``: shares k/n for k = 0..n, or ``n_points`` evenly spaced k.
    """
    s = np.nan_to_num(np.asarray(score_strong_pref, dtype=float), nan=-np.inf)
    gain = np.asarray(strong_correct, dtype=float) - np.asarray(weak_correct, dtype=float)
    n = len(s)
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    cum = np.concatenate([[0.0], np.cumsum(gain[order])])
    bounds = np.concatenate([[0], np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1, [n]])
    ks = np.arange(n + 1) if n_points is None else np.unique(np.rint(np.linspace(0, n, n_points)))
    base = float(np.mean(np.asarray(weak_correct, dtype=float)))
    quality = base + np.interp(ks, bounds, cum[bounds]) / n
    return ks / n, quality


# ---- willingness-to-pay sweeps -------------------------------------------------------------------


def sweep_tradeoff(
    pred_quality: ArrayLike,
    pred_cost: ArrayLike,
    true_scores: ArrayLike,
    true_costs: ArrayLike,
    lambdas: ArrayLike,
) -> FloatArray:
    """For each lambda, route each row to argmax(pred_quality - lambda * pred_cost).

    RouterBench's willingness-to-pay sweep. Near-ties in utility go to the lower predicted cost.
    Mask unavailable models with ``pred_quality = -inf``. Returns ``(L, 2)`` rows of
    (mean true cost, mean true quality).
    """
    pq, pc = np.asarray(pred_quality, dtype=float), np.asarray(pred_cost, dtype=float)
    ts, tc = np.asarray(true_scores, dtype=float), np.asarray(true_costs, dtype=float)
    rows = np.arange(pq.shape[0])
    out = np.empty((np.size(lambdas), 2))
    for i, lam in enumerate(np.ravel(lambdas)):
        util = pq - lam * pc
        best = util.max(axis=1, keepdims=True)
        near = util >= best - 1e-12 * (np.abs(best) + 1.0)
        pick = np.argmin(np.where(near, pc, np.inf), axis=1)
        out[i] = tc[rows, pick].mean(), ts[rows, pick].mean()
    return out


def default_lambdas(pred_quality: ArrayLike, pred_cost: ArrayLike, n: int = 50) -> FloatArray:
    """Lambda grid from "always best predicted quality" (0) to "always cheapest".

    A row switches from model j to a cheaper model i at lambda = (q_j - q_i) / (c_j - c_i). The
    grid is 0, then ``n - 2`` geometric steps between the 1st and 99th percentiles of those
    positive ratios over all rows (near-equal costs can make the extremes span many decades),
    then their maximum, at which every row picks its cheapest model (with the cheaper-wins
    tie-break of :func:`sweep_tradeoff`).
    """
    pq, pc = np.asarray(pred_quality, dtype=float), np.asarray(pred_cost, dtype=float)
    dq = pq[:, :, None] - pq[:, None, :]
    dc = pc[:, :, None] - pc[:, None, :]
    ok = (dq > 0) & (dc > 0) & np.isfinite(dq) & np.isfinite(dc)
    ratios = dq[ok] / dc[ok]
    if ratios.size == 0:
        return np.zeros(1)
    lo, hi = np.quantile(ratios, [0.01, 0.99])
    grid = np.geomspace(lo, hi, max(n - 2, 1)) if hi > lo else np.array([hi])
    return np.concatenate([[0.0], grid, [ratios.max()]])
