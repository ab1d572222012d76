"""``contextforge eval ab``: two routers compared offline, on labelled data or logged traffic.

On labelled data both routers are replayed on the same prompts of one split, each choosing
among the data's models: a router predicts a data model with its own column, or, when it did not
learn that model, with the column of the model it stands in for (``router.catalog
.prediction_column``, the gateway's rule; stand-ins come from a config's catalog). The figures are
``eval routing``'s (the willingness-to-pay sweep, its first point, AIQ), and B - A differences get
paired bootstrap intervals: each replicate resamples the prompts once and scores both routers on
that resample.

On logged traffic the routers cannot be replayed against outcomes nobody observed, so their
quality and cost are estimated off-policy from the log (``eval.ope``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from eval import metrics, ope
from eval.routing import eval_rows
from router.artifact import TrainedRouter
from router.catalog import prediction_column
from router.encoders import RoutingEncoder
from router.traffic import TrafficLog
from training.data import count_tokens, load
from training.embed_cache import embed_cached
from training.encoders import encoder_for
from training.fit import training_rows
from training.table import RoutingTable

SWEEP_POINTS = 120  # as eval routing's curve


@dataclass(frozen=True)
class Replay:
    """One router's predicted quality and cost of each evaluated model on each prompt."""

    router: TrainedRouter
    quality: np.ndarray  # (n, m) in the order of the evaluated models
    cost: np.ndarray  # (n, m) USD
    borrowed: dict[str, str] = field(default_factory=dict)  # model -> stand-in column used

    def describe(self) -> dict[str, Any]:
        """Who this is, for reports: name, folder and the stand-ins it borrowed."""
        path = None if self.router.path is None else str(self.router.path)
        return {"router": self.router.spec.name, "path": path, "stand_ins": self.borrowed}


def prediction_columns(router_models: Sequence[str], models: Sequence[str],
                       stands_in: Mapping[str, str | None] | None = None) -> list[int]:
    """The router column predicting each of ``models`` (``prediction_column``); ValueError
    naming every model the router can predict neither by its own column nor by a stand-in."""
    stands_in = stands_in or {}
    cols = [prediction_column(router_models, m, stands_in.get(m)) for m in models]
    missing = [m for m, c in zip(models, cols, strict=True) if c is None]
    if missing:
        hint = ("their catalog stand-ins are not router models either" if stands_in else
                "pass --config with a catalog whose models name a `stands_in_for`")
        raise ValueError(f"no column for {', '.join(missing)} ({hint}); "
                         f"it predicts {', '.join(router_models)}")
    return [int(c) for c in cols if c is not None]


class Price(NamedTuple):
    """A catalog model's prices (USD per million tokens) and expected answer length: what the
    gateway's decisions read (``router.catalog.Catalog.cost_usd``)."""

    input: float
    output: float
    expected_output_tokens: int


def catalog_prices(models) -> dict[str, Price]:
    """``Price`` of each catalog ``ModelEntry`` (a config's ``models``)."""
    return {m.name: Price(m.input_price, m.output_price, m.expected_output_tokens)
            for m in models}


def replay(router: TrainedRouter, models: Sequence[str], fallback_cost: np.ndarray, *,
           prompts: Sequence[str] | None = None, embeddings: np.ndarray | None = None,
           stands_in: Mapping[str, str | None] | None = None,
           encoder: RoutingEncoder | None = None,
           prices: Mapping[str, Price] | None = None) -> Replay:
    """``router``'s predictions for ``models`` on ``prompts`` (embedded with ``encoder``, by
    default the router's own), or on ready ``embeddings`` when the prompts are unknown.

    Cost, as the router decides with it: with ``prices`` (a catalog's), what the gateway's own
    decisions use for those models, the prompt's tokens and the expected answer at the
    catalog's prices, for every router alike (a router's cost model is fitted on whatever its
    training rows billed, e.g. only short multiple-choice answers of a model learned from
    traffic, and the gateway never reads it). Otherwise the router's cost model for models it
    has its own column for; a borrowed column's cost model prices the stand-in, not the model,
    so those models get ``fallback_cost`` (m,), the caller's plain mean cost of each model (the
    data's training rows, or the log), as they do when there are no prompts to count tokens of.
    """
    try:
        cols = prediction_columns(router.models, models, stands_in)
    except ValueError as exc:
        raise ValueError(f"router {router.spec.name!r} ({router.path}): {exc}") from None
    if prompts is not None:
        encoder = encoder or encoder_for(router)
        x = embed_cached(encoder, router.routing_texts(list(prompts)), layers=router.layers)
        q = router.predict(x, list(prompts))
        own_cost = router.estimate_costs(count_tokens(list(prompts)))[:, cols]
    elif embeddings is not None:
        q = router.predict(embeddings)
        own_cost = np.full((len(q), len(cols)), np.nan)
    else:
        raise ValueError("replay: give the prompts or their embeddings")
    own = np.array([m in router.models for m in models]) & ~np.isnan(own_cost).all(axis=0)
    fallback = np.broadcast_to(np.asarray(fallback_cost, dtype=float), own_cost.shape)
    cost = np.where(own, own_cost, fallback)
    if prices and prompts is not None:
        tokens = count_tokens(list(prompts)).astype(np.float64)
        for j, m in enumerate(models):
            if m in prices:
                p = prices[m]
                cost[:, j] = (tokens * p.input + p.expected_output_tokens * p.output) / 1e6
    borrowed = {m: router.models[c] for m, c in zip(models, cols, strict=True)
                if m not in router.models}
    return Replay(router, q[:, cols].astype(np.float64), cost, borrowed)


def tradeoff_picks(pred_quality: np.ndarray, pred_cost: np.ndarray,
                   lambdas: Sequence[float] | np.ndarray) -> np.ndarray:
    """(L, n) the model each row goes to at each lambda: ``metrics.sweep_tradeoff``'s rule
    (argmax quality - lambda * cost, near-ties to the lower predicted cost), kept per row so
    resamples only re-average; lambda = 1 / willingness-to-pay is the gateway's tradeoff."""
    pq, pc = np.asarray(pred_quality, dtype=float), np.asarray(pred_cost, dtype=float)
    out = np.empty((np.size(lambdas), len(pq)), dtype=np.intp)
    for i, lam in enumerate(np.ravel(lambdas)):
        util = pq - lam * pc
        best = util.max(axis=1, keepdims=True)
        near = util >= best - 1e-12 * (np.abs(best) + 1.0)
        out[i] = np.argmin(np.where(near, pc, np.inf), axis=1)
    return out


# ---- labelled data ------------------------------------------------------------------------------


def compare_on_table(scores: np.ndarray, costs: np.ndarray, a: Replay, b: Replay, *,
                     replicates: int = 1000, seed: int = 0,
                     willingness_to_pay: float | None = None) -> dict[str, Any]:
    """A vs B on true (n, m) ``scores`` and ``costs``: each router's operating point, AIQ and
    curve, and B - A with paired bootstrap 95% intervals.

    The operating point is the curve's first point (lambda 0: best predicted quality), as
    ``eval routing`` reports, or the tradeoff at ``willingness_to_pay`` when given. Every
    router's choice per prompt per lambda is fixed once; a replicate re-weights prompts by how
    often it drew them, so all replicates cost one matrix product per router.
    """
    n = len(scores)
    counts = ope.resample_counts(n, replicates, seed)
    op = 0.0 if willingness_to_pay is None else 1.0 / willingness_to_pay
    single_b = counts @ costs / n  # (B, m): each replicate's single-model mean costs
    bounds = (single_b.min(axis=1), single_b.max(axis=1))
    # AIQ's range is the single models' cost range, on the data and on each resample.
    c_min, c_max = float(costs.mean(axis=0).min()), float(costs.mean(axis=0).max())
    sides, samples = {}, {}
    for name, r in (("a", a), ("b", b)):
        lambdas = metrics.default_lambdas(r.quality, r.cost, n=SWEEP_POINTS)
        picks = tradeoff_picks(r.quality, r.cost, np.concatenate([[op], lambdas]))
        rows = np.arange(n)
        q_rows, c_rows = scores[rows, picks], costs[rows, picks]  # (L + 1, n)
        curve = np.column_stack([c_rows[1:].mean(axis=1), q_rows[1:].mean(axis=1)])
        sides[name] = {**r.describe(), "quality": float(q_rows[0].mean()),
                       "cost": float(c_rows[0].mean()), "aiq": metrics.aiq(curve, c_min, c_max),
                       "curve": metrics.upper_hull(curve).tolist()}
        qb, cb = counts @ q_rows.T / n, counts @ c_rows.T / n  # (B, L + 1)
        aiq_b = np.array([metrics.aiq(np.column_stack([cb[k, 1:], qb[k, 1:]]),
                                      bounds[0][k], bounds[1][k]) for k in range(replicates)])
        samples[name] = {"quality": qb[:, 0], "cost": cb[:, 0], "aiq": aiq_b}
    diff = {key: ope.summary(sides["b"][key] - sides["a"][key],
                             samples["b"][key] - samples["a"][key])
            for key in ("quality", "cost", "aiq")}
    return {"n": n, "willingness_to_pay": willingness_to_pay, **sides, "diff": diff,
            "bootstrap": replicates, "seed": seed}


def ab_on_data(a: TrainedRouter, b: TrainedRouter, data: str | RoutingTable, *,
               split: str = "test", stands_in: Mapping[str, str | None] | None = None,
               replicates: int = 1000, seed: int = 0, willingness_to_pay: float | None = None,
               encoders: Mapping[str, RoutingEncoder] | None = None,
               prices: Mapping[str, Price] | None = None) -> dict[str, Any]:
    """Replay routers ``a`` and ``b`` on ``data``'s ``split``; the ``eval ab --json`` dict.
    ``prices``: a catalog's, so both decide with the costs the gateway would (``replay``).

    ``stands_in``: data model -> the model whose router column predicts it when a router has
    none of its own (a catalog's ``stands_in_for``); without it each router must predict every
    data model itself. ``encoders``: by encoder id, default each router's own.
    """
    table = load(data) if isinstance(data, str) else data
    rows = eval_rows(table, split)
    # What a model costs when a router borrows its quality column: its mean on training rows.
    with np.errstate(all="ignore"):
        fallback = np.nanmean(training_rows(table).costs, axis=0)
    enc = _encoders((a, b), encoders)
    ra, rb = (replay(r, rows.models, fallback, prompts=rows.prompts, stands_in=stands_in,
                     encoder=enc[r.spec.encoder.id], prices=prices) for r in (a, b))
    single = metrics.single_models(rows.scores, rows.costs, rows.models)
    points = np.array([[v["cost"], v["quality"]] for v in single.values()])
    oq, oc = metrics.oracle(rows.scores, rows.costs)
    return {"mode": "data", "dataset": table.name, "split": split, "models": rows.models,
            "cost_source": table.cost_source,
            "decision_costs": "catalog prices" if prices else "router cost models",
            **compare_on_table(rows.scores, rows.costs, ra, rb, replicates=replicates,
                               seed=seed, willingness_to_pay=willingness_to_pay),
            "single": single, "oracle": {"quality": oq, "cost": oc},
            "zero_router_aiq": metrics.zero_router_aiq(points)}


def _encoders(routers: Sequence[TrainedRouter],
              given: Mapping[str, RoutingEncoder] | None) -> dict[str, RoutingEncoder]:
    """Each router's encoder by id, loaded once when both read the same one."""
    out = dict(given or {})
    for r in routers:
        if r.spec.encoder.id not in out:
            out[r.spec.encoder.id] = encoder_for(r)
        else:
            r.check_encoder(out[r.spec.encoder.id])
    return out


# ---- logged traffic -----------------------------------------------------------------------------


def bandit_from_log(log: TrafficLog, *, scorer: str = "reference",
                    since: float | None = None) -> ope.LoggedBandit:
    """The log's scored, answered rows as bandit feedback (batched reads; see
    ``TrafficLog.batches``). Rows without a propensity (answered after a fallback) are no
    bandit samples and are left out; a model the caller named has propensity 1.0."""
    rows = ({"prompt": r.prompt, "embedding": r.embedding, "model": r.model,
             "propensity": r.propensity, "score": score, "cost_usd": r.cost_usd}
            for batch in log.batches(scored_by=scorer, since=since, answered=True)
            for r, score in batch if r.propensity is not None)
    return ope.bandit_from_rows(rows)


def ab_on_logs(a: TrainedRouter, b: TrainedRouter, bandit: ope.LoggedBandit, *,
               willingness_to_pay: float, stands_in: Mapping[str, str | None] | None = None,
               replicates: int = 1000, seed: int = 0,
               encoders: Mapping[str, RoutingEncoder] | None = None,
               prices: Mapping[str, Price] | None = None) -> dict[str, Any]:
    """Off-policy estimates of ``a`` and ``b`` on logged bandit feedback; the ``eval ab
    --logs --json`` dict (``prices``: as in ``replay``).

    Each router chooses among the logged models by the gateway's tradeoff at
    ``willingness_to_pay``; its predicted quality and cost are the reward models of DR.
    """
    if not len(bandit):
        raise ValueError("the log holds no scored answers to estimate from")
    models = sorted(set(bandit.models))
    logged = np.array([models.index(m) for m in bandit.models])
    fallback = np.array([bandit.costs[logged == j].mean() for j in range(len(models))])
    prompts = bandit.prompts if all(p is not None for p in bandit.prompts) else None
    if prompts is None and bandit.embeddings is None:
        raise ValueError("some logged rows have no prompt text and the log kept no embeddings")
    enc = _encoders((a, b), encoders) if prompts is not None else {}
    counts = ope.resample_counts(len(bandit), replicates, seed)
    rows = np.arange(len(bandit))
    sides: dict[str, Any] = {}
    parts = {}
    for name, router in (("a", a), ("b", b)):
        r = replay(router, models, fallback, prompts=prompts, embeddings=bandit.embeddings,
                   stands_in=stands_in, encoder=enc.get(router.spec.encoder.id), prices=prices)
        target = tradeoff_picks(r.quality, r.cost, [1.0 / willingness_to_pay])[0]
        sides[name] = {**r.describe(), **ope.evaluate_target(
            target, logged, bandit.propensities, bandit.rewards, bandit.costs, r.quality,
            r.cost, counts)}
        w = ope.importance_weights(target, logged, bandit.propensities)
        parts[name] = (w, {"quality": (r.quality[rows, target], r.quality[rows, logged]),
                           "cost": (r.cost[rows, target], r.cost[rows, logged])})
    (wa, ma), (wb, mb) = parts["a"], parts["b"]
    diff = {key: ope.paired_dr_diff(wa, wb, values, ma[key], mb[key], counts)
            for key, values in (("quality", bandit.rewards), ("cost", bandit.costs))}
    return {"mode": "logs", "n": len(bandit), "models": models,
            "willingness_to_pay": willingness_to_pay, **sides,
            "logging": ope.logging_policy(bandit.rewards, bandit.costs, counts),
            "diff": diff, "bootstrap": replicates, "seed": seed}


# ---- Markdown ---------------------------------------------------------------------------------


def render_markdown(result: Mapping[str, Any]) -> str:
    """A short Markdown summary of an ``eval ab`` result: A vs B vs their difference."""
    a, b = result["a"], result["b"]
    names = ", ".join(f"{side}: `{r['router']}`" + (f" ({r['path']})" if r.get("path") else "")
                      for side, r in (("A", a), ("B", b)))
    if result["mode"] == "data":
        where = f"{result['dataset']} [{result['split']}]"
    else:
        where = "logged traffic"
    wtp = result.get("willingness_to_pay")
    point = ("best predicted quality (lambda 0, as `eval routing`)" if wtp is None
             else f"tradeoff at willingness to pay {wtp:g} USD")
    lines = [f"## Offline A/B on {where}, n = {result['n']}", "", names, "",
             f"Operating point: {point}. B - A: paired bootstrap, {result['bootstrap']} "
             f"resamples (seed {result['seed']}), 95% percentile intervals.", ""]
    if result["mode"] == "data":
        lines += _table(["", f"A: {a['router']}", f"B: {b['router']}", "B - A", "95% CI"], [
            [label, _num(a[key], digits), _num(b[key], digits),
             _num(result["diff"][key]["estimate"], digits, sign=True),
             _ci(result["diff"][key]["ci95"], digits)]
            for label, key, digits in (("quality", "quality", 4), ("cost (USD)", "cost", 6),
                                       ("AIQ", "aiq", 4))])
    else:
        lines += _logs_table(result)
    for side, r in (("A", a), ("B", b)):
        if r.get("stand_ins"):
            pairs = ", ".join(f"{m} as {s}" for m, s in r["stand_ins"].items())
            lines += ["", f"{side} predicts by stand-ins: {pairs}."]
    return "\n".join(lines) + "\n"


def _logs_table(result: Mapping[str, Any]) -> list[str]:
    a, b, log = result["a"], result["b"], result["logging"]
    rows = []
    for key, digits in (("quality", 4), ("cost", 6)):
        d = result["diff"][key]
        rows.append([f"{key} (DR)", _num(log[key]["estimate"], digits),
                     _est(a["dr"][key], digits), _est(b["dr"][key], digits),
                     _num(d["estimate"], digits, sign=True), _ci(d["ci95"], digits)])
        for est in ("ips", "snips"):
            rows.append([f"{key} ({est.upper()})", "", _est(a[est][key], digits),
                         _est(b[est][key], digits), "", ""])
    rows.append(["effective sample size", "", f"{a['ess']:.1f}", f"{b['ess']:.1f}", "", ""])
    rows.append(["agrees with the log", "", f"{a['agreement']:.1%}", f"{b['agreement']:.1%}",
                 "", ""])
    return _table(["", "logging policy", f"A: {a['router']}", f"B: {b['router']}",
                   "B - A", "95% CI"], rows)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _num(x: float | None, digits: int, sign: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ci(ci: Sequence[float | None], digits: int) -> str:
    lo, hi = ci
    return f"[{_num(lo, digits, True)}, {_num(hi, digits, True)}]"


def _est(summary: Mapping[str, Any], digits: int) -> str:
    """An estimate with its interval in one cell."""
    return f"{_num(summary['estimate'], digits)} {_ci(summary['ci95'], digits)}"
