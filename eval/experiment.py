"""Fit-and-predict experiments on routing tables, without writing artifacts.

What the routing-quality benchmark and cross-validation run: embed a train/test pair of tables
the way a trained router would (boilerplate learned on the train rows only), fit an estimator,
and return predicted quality and cost for the test rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone

from router.encoders import RoutingEncoder
from router.features import SurfaceScaler
from router.text import learn_boilerplate, routing_text
from training.data import count_tokens
from training.embed_cache import embed_cached
from training.estimators import ESTIMATORS, fit_with_tasks
from training.fit import default_layers, fit_cost_model
from training.table import RoutingTable


@dataclass
class Features:
    """Router inputs and token counts of one train/test pair, computed once and reused."""

    x_train: np.ndarray
    x_test: np.ndarray
    tokens_train: np.ndarray
    tokens_test: np.ndarray


def features(train: RoutingTable, test: RoutingTable, encoder: RoutingEncoder, *,
             surface: bool = True, layers: Sequence[int] | None = None) -> Features:
    """What a router trained on ``train`` reads for both tables: embeddings of the routing
    texts (with the mean hidden states of ``layers``; ``None``: the encoder's default), with
    the surface features scaled on the train rows when ``surface``."""
    layers = default_layers(encoder) if layers is None else tuple(layers)
    boilerplate = learn_boilerplate(train.prompts)
    texts_train = [routing_text(p, boilerplate) for p in train.prompts]
    scaler = SurfaceScaler.fit(train.prompts, texts_train) if surface else None

    def x(prompts: list[str], texts: list[str]) -> np.ndarray:
        e = embed_cached(encoder, texts, layers=layers)
        return e if scaler is None else scaler.join(e, prompts, texts)
    return Features(x(train.prompts, texts_train),
                    x(test.prompts, [routing_text(p, boilerplate) for p in test.prompts]),
                    count_tokens(train.prompts), count_tokens(test.prompts))


def predicted_costs(train: RoutingTable, f: Features) -> np.ndarray:
    """(n_test, m) expected cost from the per-model cost model fitted on the train rows."""
    cm = fit_cost_model(f.tokens_train, train.costs)
    a, b = np.asarray(cm.intercept), np.asarray(cm.per_input_token)
    return np.maximum(a + b * f.tokens_test[:, None], 0.0)


def fit_predict(kind_or_estimator, train: RoutingTable, f: Features) -> np.ndarray:
    """(n_test, m) predicted quality of an estimator (a kind name or an unfitted estimator)."""
    est = (ESTIMATORS[kind_or_estimator]() if isinstance(kind_or_estimator, str)
           else clone(kind_or_estimator))
    est = fit_with_tasks(est, f.x_train, train.scores, train.tasks)
    return est.predict(f.x_test).astype(np.float64)


def task_prior(train: RoutingTable, test: RoutingTable) -> np.ndarray:
    """The task-prior baseline: each model's mean train score on the prompt's (known) task.

    It is told every prompt's task, which production traffic never is: a router that does not
    beat it learned nothing from the prompt beyond its task.
    """
    overall = np.nanmean(train.scores, axis=0)
    out = np.empty((len(test), len(train.models)))
    for i, task in enumerate(test.tasks):
        rows = train.scores[train.tasks == task]
        out[i] = np.nanmean(rows, axis=0) if len(rows) else overall
    return out


def cross_val_predict(kind: str, table: RoutingTable, encoder: RoutingEncoder, folds: int = 5,
                      seed: int = 0, surface: bool = True, layers: Sequence[int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predicted quality and cost for every row (fixed seed-``seed`` folds)."""
    assign = np.random.default_rng(seed).permutation(len(table)) % folds
    pred_q = np.empty(table.scores.shape)
    pred_c = np.empty(table.costs.shape)
    for k in range(folds):
        train, test = table.select(assign != k), table.select(assign == k)
        f = features(train, test, encoder, surface=surface, layers=layers)
        pred_q[assign == k] = fit_predict(kind, train, f)
        pred_c[assign == k] = predicted_costs(train, f)
    return pred_q, pred_c
