"""Off-policy estimates of a router's quality and cost from logged bandit feedback: pure numpy.

The gateway logs, per answered request, the model it chose ``a_i``, the probability ``p_i``
with which its (logging) policy chose it (1 when it was not exploring), the answer's score
``r_i`` in [0, 1] and its cost ``c_i``. A candidate (target) router would have chosen
``pi(x_i)``; with ``w_i = 1[pi(x_i) = a_i] / p_i`` and a reward model ``q(x, .)`` (the router's
own predictions):

* IPS   = mean(w r)                                  unbiased when p > 0 wherever pi can go
* SNIPS = sum(w r) / sum(w)                          self-normalised: lower variance, small bias
* DR    = mean(q(x, pi(x)) + w (r - q(x, a)))        unbiased if either the propensities or the
                                                     reward model are right

The same three for cost, with the router's estimated cost as the reward model. Confidence
intervals are percentile bootstraps over logged rows; estimates that compare two targets
resample the same rows for both (paired). References: Dudík, Langford & Li (2011), "Doubly
Robust Policy Evaluation and Learning"; Swaminathan & Joachims (2015) on self-normalisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class LoggedBandit:
    """Logged requests as bandit feedback: one entry per answered, scored request.

    ``prompts[i]`` or ``embeddings[i]`` (what a router reads) identify the context; a row may
    lack its prompt text (``None``) when the log kept only the embedding.
    """

    prompts: list[str | None]
    embeddings: np.ndarray | None  # (n, d) float32, or None when the log kept none
    models: list[str]  # the logged action a_i
    propensities: np.ndarray  # (n,) p_i in (0, 1]
    rewards: np.ndarray  # (n,) r_i in [0, 1]
    costs: np.ndarray  # (n,) c_i in USD

    def __post_init__(self) -> None:
        n = len(self.models)
        for label, value in (("prompts", self.prompts), ("propensities", self.propensities),
                             ("rewards", self.rewards), ("costs", self.costs)):
            if len(value) != n:
                raise ValueError(f"logged bandit: {len(value)} {label} for {n} rows")
        if self.embeddings is not None and len(self.embeddings) != n:
            raise ValueError(f"logged bandit: {len(self.embeddings)} embeddings for {n} rows")
        p = np.asarray(self.propensities, dtype=float)
        if n and not ((p > 0) & (p <= 1)).all():
            raise ValueError("logged bandit: propensities must be in (0, 1]")

    def __len__(self) -> int:
        return len(self.models)


def bandit_from_rows(rows: Iterable[Mapping[str, Any]]) -> LoggedBandit:
    """Bandit feedback from logged rows with keys ``prompt, embedding, model, propensity,
    score, cost_usd``.

    Rows without a ``score`` (not scored yet) or a ``model`` (no answer) carry no feedback
    and are skipped; a missing ``propensity`` means the logging policy did not explore (1.0).
    A kept row without a cost, or with neither prompt nor embedding, is an error.
    """
    prompts: list[str | None] = []
    embeddings: list[np.ndarray | None] = []
    models: list[str] = []
    p: list[float] = []
    r: list[float] = []
    c: list[float] = []
    for i, row in enumerate(rows):
        if row.get("score") is None or not row.get("model"):
            continue
        emb = row.get("embedding")
        if not row.get("prompt") and emb is None:
            raise ValueError(f"logged row {i}: neither a prompt nor an embedding to route on")
        if row.get("cost_usd") is None:
            raise ValueError(f"logged row {i}: an answer without cost_usd")
        prompts.append(row.get("prompt") or None)
        embeddings.append(None if emb is None else np.asarray(emb, dtype=np.float32))
        models.append(str(row["model"]))
        prop = row.get("propensity")
        p.append(1.0 if prop is None else float(prop))
        r.append(float(row["score"]))
        c.append(float(row["cost_usd"]))
    # Embeddings only help when every row has one: a router reads all rows the same way.
    has_all = bool(embeddings) and all(e is not None for e in embeddings)
    return LoggedBandit(prompts=prompts, embeddings=np.stack(embeddings) if has_all else None,
                        models=models, propensities=np.array(p), rewards=np.array(r),
                        costs=np.array(c))


# ---- estimators on arrays --------------------------------------------------------------------


def importance_weights(target: np.ndarray, logged: np.ndarray,
                       propensities: np.ndarray) -> np.ndarray:
    """``w_i = 1[target_i == logged_i] / p_i`` (arm indices)."""
    agree = np.asarray(target) == np.asarray(logged)
    return agree / np.asarray(propensities, dtype=float)


def ips(w: np.ndarray, values: np.ndarray) -> float:
    """Inverse propensity scoring: ``mean(w * values)``."""
    return float(np.mean(w * values))


def snips(w: np.ndarray, values: np.ndarray) -> float:
    """Self-normalised IPS: ``sum(w * values) / sum(w)``; NaN when the target never agrees."""
    total = float(np.sum(w))
    return float(np.sum(w * values) / total) if total > 0 else float("nan")


def dr_terms(w: np.ndarray, values: np.ndarray, model_target: np.ndarray,
             model_logged: np.ndarray) -> np.ndarray:
    """Per-row doubly robust terms ``q(x, pi(x)) + w (r - q(x, a))``; DR is their mean."""
    return model_target + w * (values - model_logged)


def doubly_robust(w: np.ndarray, values: np.ndarray, model_target: np.ndarray,
                  model_logged: np.ndarray) -> float:
    """Doubly robust estimate: the mean of :func:`dr_terms`."""
    return float(np.mean(dr_terms(w, values, model_target, model_logged)))


def effective_sample_size(w: np.ndarray) -> float:
    """Kish's ``(sum w)^2 / sum w^2``: how many rows the weighted estimate is worth."""
    sq = float(np.sum(np.square(w)))
    return float(np.sum(w)) ** 2 / sq if sq > 0 else 0.0


# ---- bootstrap ---------------------------------------------------------------------------------


def resample_counts(n: int, replicates: int, seed: int) -> np.ndarray:
    """(replicates, n) how often each row is drawn in each bootstrap resample of n rows.

    A mean over a resample is then ``counts @ values / n``: every statistic that is a mean
    (or a ratio of means) of per-row terms costs one matrix product for all replicates.
    """
    if n <= 0:
        raise ValueError("bootstrap: no rows to resample")
    idx = np.random.default_rng(seed).integers(0, n, size=(replicates, n))
    flat = (np.arange(replicates)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=replicates * n).reshape(replicates, n).astype(np.float64)


def ci95(samples: np.ndarray) -> list[float | None]:
    """Percentile 95% interval of bootstrap samples, ignoring NaN (``[None, None]`` if all)."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if not len(s):
        return [None, None]
    lo, hi = np.percentile(s, [2.5, 97.5])
    return [float(lo), float(hi)]


def summary(estimate: float, samples: np.ndarray) -> dict[str, Any]:
    """``{estimate, ci95}`` with NaN as None (JSON has no NaN)."""
    return {"estimate": None if not np.isfinite(estimate) else float(estimate),
            "ci95": ci95(samples)}


# ---- one target policy -------------------------------------------------------------------------


def evaluate_target(target: np.ndarray, logged: np.ndarray, propensities: np.ndarray,
                    rewards: np.ndarray, costs: np.ndarray, pred_quality: np.ndarray,
                    pred_cost: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    """IPS, SNIPS and DR of a target's quality and cost, each with a bootstrap 95% CI, plus
    the effective sample size and the share of rows where the target agrees with the log.

    ``target`` and ``logged`` are (n,) arm indices into the columns of the (n, k)
    ``pred_quality`` / ``pred_cost`` reward models; ``counts`` come from
    :func:`resample_counts`.
    """
    n = len(target)
    rows = np.arange(n)
    w = importance_weights(target, logged, propensities)
    out: dict[str, Any] = {name: {} for name in ESTIMATORS}
    for outcome, values, model in (("quality", rewards, pred_quality),
                                   ("cost", costs, pred_cost)):
        values = np.asarray(values, dtype=float)
        wv = w * values
        terms = dr_terms(w, values, model[rows, target], model[rows, logged])
        with np.errstate(invalid="ignore", divide="ignore"):
            snips_b = (counts @ wv) / (counts @ w)
        out["ips"][outcome] = summary(ips(w, values), counts @ wv / n)
        out["snips"][outcome] = summary(snips(w, values), snips_b)
        out["dr"][outcome] = summary(float(terms.mean()), counts @ terms / n)
    out["ess"] = effective_sample_size(w)
    out["agreement"] = float(np.mean(np.asarray(target) == np.asarray(logged)))
    return out


def paired_dr_diff(w_a: np.ndarray, w_b: np.ndarray, values: np.ndarray,
                   model_a: tuple[np.ndarray, np.ndarray], model_b: tuple[np.ndarray, np.ndarray],
                   counts: np.ndarray) -> dict[str, Any]:
    """DR(B) - DR(A) with a paired bootstrap CI (both evaluated on each resample).

    ``model_a`` / ``model_b``: each router's reward model at (its own choice, the logged arm).
    """
    diff = (dr_terms(w_b, values, *model_b) - dr_terms(w_a, values, *model_a))
    return summary(float(diff.mean()), counts @ diff / len(diff))


def logging_policy(rewards: np.ndarray, costs: np.ndarray, counts: np.ndarray
                   ) -> dict[str, Any]:
    """The logging policy's own quality and cost: plain means, with bootstrap CIs."""
    n = len(rewards)
    return {"quality": summary(float(np.mean(rewards)), counts @ rewards / n),
            "cost": summary(float(np.mean(costs)), counts @ costs / n)}
