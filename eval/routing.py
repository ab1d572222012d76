"""``contextforge eval routing``: a router's cost-quality curve against single models and the
oracle, on one split of a routing table, with the keys DESIGN.md fixes."""

from __future__ import annotations

from typing import Any

import numpy as np

from eval import metrics
from router.artifact import TrainedRouter
from router.encoders import RoutingEncoder
from training.data import count_tokens, load
from training.embed_cache import embed_cached
from training.encoders import encoder_for
from training.table import RoutingTable


def eval_rows(table: RoutingTable, split: str | None) -> RoutingTable:
    """The rows to evaluate: one split, complete rows only (every model scored and priced)."""
    rows = table if not split else table.split(split)
    if len(rows) == 0:
        have = sorted({s for s in table.splits.tolist() if s}) or ["(none)"]
        raise ValueError(f"{table.name}: no rows in split {split!r}; splits: {', '.join(have)}")
    complete = ~np.isnan(rows.scores).any(axis=1) & ~np.isnan(rows.costs).any(axis=1)
    if not complete.any():
        raise ValueError(f"{table.name}: no row has every model's score and cost")
    return rows if complete.all() else rows.select(complete)


def curve_summary(scores: np.ndarray, costs: np.ndarray, pred_q: np.ndarray,
                  pred_c: np.ndarray, models: list[str]) -> dict[str, Any]:
    """Every figure of one evaluation from true and predicted (n, m) blocks."""
    single = metrics.single_models(scores, costs, models)
    points = np.array([[v["cost"], v["quality"]] for v in single.values()])
    best = max(single, key=lambda m: (single[m]["quality"], -single[m]["cost"]))
    c_min, c_max = float(points[:, 0].min()), float(points[:, 0].max())
    curve = metrics.sweep_tradeoff(pred_q, pred_c, scores, costs,
                                   metrics.default_lambdas(pred_q, pred_c, n=120))
    oq, oc = metrics.oracle(scores, costs)
    at_best = metrics.cost_at_quality(curve, single[best]["quality"])
    out: dict[str, Any] = {
        "n": len(scores),
        "models": list(models),
        "single": single,
        "best_single": {"model": best, **single[best]},
        "oracle": {"quality": oq, "cost": oc},
        "random": {"curve": metrics.random_router_curve(scores, costs).tolist()},
        "router": {
            "quality": float(curve[0, 1]),
            "cost": float(curve[0, 0]),
            "aiq": metrics.aiq(curve, c_min, c_max),
            "curve": metrics.upper_hull(curve).tolist(),
        },
        "zero_router_aiq": metrics.zero_router_aiq(points, c_min, c_max),
        "cost_at_best_quality": at_best,
        "cost_share_at_best_quality": None if at_best is None else at_best / single[best]["cost"],
    }
    if len(models) == 2:
        out.update(two_model_metrics(scores, costs, pred_q))
    return out


def two_model_metrics(scores: np.ndarray, costs: np.ndarray, pred_q: np.ndarray
                      ) -> dict[str, Any]:
    """RouteLLM's APGR and CPT: threshold sweep on the predicted lead of the pricier model."""
    strong = int(np.argmax(np.nanmean(costs, axis=0)))
    weak = 1 - strong
    lead = pred_q[:, strong] - pred_q[:, weak]
    share, quality = metrics.threshold_curve_two_model(lead, scores[:, strong], scores[:, weak])
    qs, qw = float(scores[:, strong].mean()), float(scores[:, weak].mean())
    if qs == qw:  # PGR is undefined: there is no gap to recover
        return {"strong": strong, "apgr": None, "cpt50": None, "cpt80": None}
    return {
        "strong": strong,
        "apgr": metrics.apgr(share, quality, qw, qs),
        "cpt50": metrics.cpt(share, quality, qw, qs, 0.5),
        "cpt80": metrics.cpt(share, quality, qw, qs, 0.8),
    }


def predict_rows(router: TrainedRouter, rows: RoutingTable, encoder: RoutingEncoder
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The router's predicted quality and cost for each row."""
    x = embed_cached(encoder, router.routing_texts(rows.prompts), layers=router.layers)
    tokens = count_tokens(rows.prompts)
    return router.predict(x, rows.prompts).astype(np.float64), router.estimate_costs(tokens)


def evaluate_routing(router: TrainedRouter, data: str | RoutingTable, *, split: str = "test",
                     encoder: RoutingEncoder | None = None, per_task: bool = True
                     ) -> dict[str, Any]:
    """Evaluate ``router`` on ``data``'s ``split``; returns the ``eval routing --json`` dict.
    ``encoder``: default, the one the router was trained on (``training.encoders``)."""
    table = load(data) if isinstance(data, str) else data
    if table.models != router.models:
        raise ValueError(f"router {router.spec.name!r} predicts {router.models}, "
                         f"{table.name} has {table.models}")
    rows = eval_rows(table, split)
    encoder = encoder or encoder_for(router)
    pred_q, pred_c = predict_rows(router, rows, encoder)
    result = {"dataset": table.name, "split": split, "router_name": router.spec.name,
              "router_kind": router.spec.kind, "cost_source": table.cost_source}
    result.update(summarize(rows, pred_q, pred_c, per_task=per_task))
    return result


def evaluate_on(router: TrainedRouter, data: str | RoutingTable, *, split: str = "test",
                encoder: RoutingEncoder | None = None) -> dict[str, Any]:
    """``evaluate_routing`` over the models ``data`` and ``router`` share, for a router that
    predicts more models than the data holds (one trained on a dataset plus traffic)."""
    table = load(data) if isinstance(data, str) else data
    shared = [m for m in table.models if m in router.models]
    if len(shared) < 2:
        raise ValueError(f"router {router.spec.name!r} and {table.name} share fewer than two "
                         f"models: {shared}")
    keep = [table.models.index(m) for m in shared]
    cols = [router.models.index(m) for m in shared]
    table = RoutingTable(name=table.name, prompts=table.prompts, models=shared,
                         scores=table.scores[:, keep], costs=table.costs[:, keep],
                         tasks=table.tasks, splits=table.splits, cost_source=table.cost_source)
    rows = eval_rows(table, split)
    encoder = encoder or encoder_for(router)
    pred_q, pred_c = predict_rows(router, rows, encoder)
    result = {"dataset": table.name, "split": split, "router_name": router.spec.name,
              "router_kind": router.spec.kind, "cost_source": table.cost_source}
    result.update(summarize(rows, pred_q[:, cols], pred_c[:, cols], per_task=True))
    return result


def summarize(rows: RoutingTable, pred_q: np.ndarray, pred_c: np.ndarray, *,
              per_task: bool = True) -> dict[str, Any]:
    """:func:`curve_summary` of all rows, plus one per task when there are several."""
    result = curve_summary(rows.scores, rows.costs, pred_q, pred_c, rows.models)
    tasks = sorted(set(rows.tasks.tolist()))
    if per_task and len(tasks) > 1:
        result["tasks"] = {}
        for t in tasks:
            m = rows.tasks == t
            s = curve_summary(rows.scores[m], rows.costs[m], pred_q[m], pred_c[m], rows.models)
            result["tasks"][t] = {k: s[k] for k in ("n", "best_single", "oracle", "router",
                                                    "zero_router_aiq", "cost_at_best_quality",
                                                    "cost_share_at_best_quality")}
    return result
