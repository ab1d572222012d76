"""Fit a router from a routing table and write its artifact folder.

``train_router`` is what ``contextforge train`` runs: load the data, learn the boilerplate to
strip, embed (cached; the encoder ``training.encoders`` names, with the inner layers of
``DEFAULT_LAYERS`` for a transformer, see ``Encoder.encode_routing``), append the surface
features (``router.features``), fit the estimator on the ``train`` split, fit the per-model
cost model, compute out-of-fold predictions for threshold calibration, and save.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.base import clone

from router.artifact import CostModel, DataRef, EncoderRef, RouterSpec, save_router
from router.encoders import RoutingEncoder
from router.features import SurfaceScaler
from router.text import learn_boilerplate, routing_text
from training.data import count_tokens, load
from training.embed_cache import embed_cached
from training.encoders import load_choice
from training.estimators import (
    ESTIMATORS,
    EnsembleRouter,
    KnnRouter,
    LinearRouter,
    fit_with_tasks,
)
from training.table import RoutingTable

DEFAULT_KIND = "taskmix"
# Inner MiniLM layers whose mean hidden states routers read beside the embedding: chosen by
# 5-fold CV on the train rows of RouterBench, RouteLLM-MMLU and RouterDC (benchmarks/README.md).
DEFAULT_LAYERS = (2, 3, 4)
LAYERS_HELP = ("encoder layers whose mean hidden states the router reads beside the embedding: "
               f"comma-separated, or 'none' (default: {','.join(map(str, DEFAULT_LAYERS))})")


def parse_layers(text: str) -> tuple[int, ...]:
    """``"2,3,4"`` -> ``(2, 3, 4)``; ``"none"`` or ``""`` -> ``()`` (command-line ``--layers``)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(k) for k in text.split(","))
    except ValueError:
        raise ValueError(f"--layers {text!r}: give comma-separated layer numbers, e.g. 2,3,4, "
                         "or 'none'") from None


def default_layers(encoder: RoutingEncoder) -> tuple[int, ...]:
    """``DEFAULT_LAYERS`` for a transformer; none for a static table, which has no layers."""
    return DEFAULT_LAYERS if encoder.kind == "onnx" else ()



def table_sha256(table: RoutingTable) -> str:
    """A hash of the table's content (prompts, models, scores, costs, splits)."""
    h = hashlib.sha256()
    for part in (table.prompts, table.models, list(table.splits)):
        h.update("\x1f".join(map(str, part)).encode())
    h.update(np.ascontiguousarray(table.scores, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(table.costs, dtype=np.float64).tobytes())
    return h.hexdigest()


def training_rows(table: RoutingTable) -> RoutingTable:
    """The ``train`` split, or every row when the data has no train split."""
    return table.split("train") if (table.splits == "train").any() else table


def fit_cost_model(tokens: np.ndarray, costs: np.ndarray) -> CostModel:
    """Per model, least squares ``cost = a + b * input_tokens`` with a, b >= 0."""
    a, b = [], []
    for j in range(costs.shape[1]):
        seen = ~np.isnan(costs[:, j])
        t, c = tokens[seen].astype(float), costs[seen, j]
        slope = 0.0
        if len(t) > 1 and t.std() > 0:
            slope = max(0.0, float(np.cov(t, c, bias=True)[0, 1] / t.var()))
        intercept = max(0.0, float(c.mean() - slope * t.mean())) if len(c) else 0.0
        a.append(intercept)
        b.append(slope)
    return CostModel(intercept=a, per_input_token=b)


def out_of_fold(estimator, x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0,
                tasks: np.ndarray | None = None) -> np.ndarray:
    """Predictions for every row from a model that did not see it (k-fold); ``tasks`` go to
    the estimators that learn from them, as in the final fit."""
    assign = np.random.default_rng(seed).permutation(len(x)) % folds
    out = np.zeros(y.shape, dtype=np.float64)
    for f in range(folds):
        keep = assign != f
        est = fit_with_tasks(clone(estimator), x[keep], y[keep],
                             None if tasks is None else tasks[keep])
        out[assign == f] = est.predict(x[assign == f])
    return out


def frozen_hyperparameters(est):
    """A copy of a fitted estimator whose CV-chosen settings are fixed (cheap to refit)."""
    if isinstance(est, LinearRouter):
        return clone(est).set_params(cs=(est.c_,))
    if isinstance(est, KnnRouter):
        return clone(est).set_params(ks=(est.k_,), temperatures=(est.temperature_,))
    if isinstance(est, EnsembleRouter):
        return clone(est).set_params(members=[frozen_hyperparameters(m) for m in est.members_])
    return clone(est)


def train_router(
    data: str | RoutingTable,
    out: Path,
    *,
    kind: str | None = None,
    encoder: RoutingEncoder | None = None,
    name: str | None = None,
    calibrate: bool = True,
    surface: bool = True,
    layers: Sequence[int] | None = None,
) -> Path:
    """Train a router of ``kind`` on ``data`` (a built-in name, a file path or a table).

    ``encoder``: what it reads (default: ``training.encoders.DEFAULT_ENCODER``), recorded in
    its spec by id and sha256. ``surface``: it reads surface features (length, numbers,
    script) beside the embedding; ``layers``: the encoder layers whose mean hidden states it
    reads too (``()``: the sentence embedding alone; ``None``: ``default_layers``)."""
    kind = kind or DEFAULT_KIND
    if kind not in ESTIMATORS:
        raise ValueError(f"unknown router kind {kind!r}; known: {', '.join(ESTIMATORS)}")
    table = load(data) if isinstance(data, str) else data
    train = training_rows(table)
    if len(train) < 10:
        raise ValueError(f"{table.name}: {len(train)} training rows; need at least 10")
    encoder = encoder or load_choice()
    layers = default_layers(encoder) if layers is None else tuple(layers)
    encoder.check_layers(layers)
    boilerplate = learn_boilerplate(train.prompts)
    texts = [routing_text(p, boilerplate) for p in train.prompts]
    x = embed_cached(encoder, texts, layers=layers)
    scaler = SurfaceScaler.fit(train.prompts, texts) if surface else None
    if scaler is not None:
        x = scaler.join(x, train.prompts, texts)
    y = train.scores
    est = fit_with_tasks(ESTIMATORS[kind](), x, y, train.tasks)
    calibration = None
    if calibrate:
        oof = out_of_fold(frozen_hyperparameters(est), x, y, tasks=train.tasks)
        keep = np.random.default_rng(0).permutation(len(x))[:2000]
        calibration = oof[np.sort(keep)]
    tokens = count_tokens(train.prompts)
    spec = RouterSpec(
        name=name or Path(out).name,
        kind=kind,
        models=list(table.models),
        params={},
        encoder=EncoderRef(id=encoder.id, sha256=encoder.sha256),
        data=DataRef(name=table.name, sha256=table_sha256(table), rows=len(train),
                     splits=sorted(set(train.splits.tolist()))),
        cost_model=fit_cost_model(tokens, train.costs),
        boilerplate=sorted(boilerplate),
        surface=scaler,
        layers=list(layers),
        created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    )
    return save_router(Path(out), spec, est.predictor_, calibration)
