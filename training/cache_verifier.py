"""Fit the semantic cache's hit verifier (``router.cache.verifier``) on the train part of pairs.

Only rows whose split is ``train`` are read: a histogram gradient-boosted tree ensemble is
fitted on them (exported to numpy node arrays for serving), and its hit threshold is
calibrated on out-of-fold logits of the same rows, so it is chosen on predictions the model
did not fit. The folds are grouped (``grouped_folds``: no question in two folds), as a cache
meets new questions: with ungrouped folds part of the logits' skill was remembering questions.

The threshold is calibrated on the label-0 pairs a cache would actually put before its
verifier (``nearest_selected``: one question is the other's nearest neighbour among the
questions of its fold). A lookup asks the verifier about the nearest entry only, and the
nearest of many is a harder non-duplicate than the average labelled one: a replay of the
shipped cache measured 2.5 % false hits among such candidates with a threshold calibrated on
all label-0 pairs to 0.8 % (benchmarks/README.md, "The response cache"). The threshold is the
lowest one whose false-hit rate on those pairs stays under the target with ``confidence`` (a
one-sided Clopper-Pearson bound). The plain cosine baseline is calibrated the same way.

    python -m training.cache_verifier [--data qqp] [--out models/cache/verifier.npz]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import beta
from sklearn.ensemble import HistGradientBoostingClassifier

from router.cache.verifier import DEFAULT_PATH, FEATURES, Trees, Verifier, pair_matrix
from training.data import Pairs, load_pairs

FOLDS = 5
DEFAULT_TARGET = 0.01
DEFAULT_CONFIDENCE = 0.95
MAX_ITER = 300
DEFAULT_ENCODER = Path(__file__).resolve().parents[1] / "models" / "encoders" / "all-MiniLM-L6-v2"


def calibrate_threshold(scores: np.ndarray, labels: np.ndarray, target: float = DEFAULT_TARGET,
                        confidence: float | None = DEFAULT_CONFIDENCE) -> float:
    """The lowest threshold ``t`` (hits are ``scores >= t``) whose false-hit rate on the label-0
    rows is at most ``target`` — with ``confidence``, its Clopper-Pearson upper bound is.

    ``confidence=None`` bounds the observed rate itself."""
    neg = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(labels) == 0])[::-1]
    n = len(neg)
    if n == 0:
        raise ValueError("no label-0 rows to calibrate a false-hit rate on")
    k = int(np.floor(target * n))  # false hits allowed
    if confidence is not None:
        while k >= 0 and beta.ppf(confidence, k + 1, n - k) > target:
            k -= 1
    if k < 0:
        return float(np.nextafter(neg[0], np.inf))  # not even one false hit is affordable
    if k >= n:
        return float(neg[-1])
    # Strictly above the (k+1)-th highest negative: at most k negatives reach it, ties included.
    return float(np.nextafter(neg[k], np.inf))


def question_groups(text_a: Sequence[str], text_b: Sequence[str]) -> np.ndarray:
    """A group id per pair: pairs that share a text, directly or through other pairs, get one
    id (connected components of the graph whose nodes are texts and whose edges are pairs)."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(text_a, text_b, strict=True):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[ra] = rb
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(root(a), len(ids)) for a in text_a])


def grouped_folds(groups: np.ndarray, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """A fold number per row: whole groups go to folds in a seeded random order, each to the
    fold with the fewest rows so far (folds end up within one group's size of each other)."""
    ids, sizes = np.unique(groups, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(ids))
    fold_of = np.empty(len(ids), dtype=int)
    filled = np.zeros(folds, dtype=int)
    for g in order:
        fold_of[g] = f = int(np.argmin(filled))
        filled[f] += sizes[g]
    return fold_of[np.searchsorted(ids, groups)]


def nearest_selected(text_a: Sequence[str], text_b: Sequence[str], vec_a: np.ndarray,
                     vec_b: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Whether each pair is one a cache's lookup would decide: b is a's nearest neighbour
    (cosine) among the other questions of its group (its fold; all pairs when ``groups`` is
    None), or a is b's. Texts are questions: equal strings are one question."""
    groups = np.zeros(len(text_a), dtype=int) if groups is None else np.asarray(groups)
    selected = np.zeros(len(text_a), dtype=bool)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        ids: dict[str, int] = {}
        vectors: list[np.ndarray] = []
        for i in rows:
            for text, vec in ((text_a[i], vec_a[i]), (text_b[i], vec_b[i])):
                if text not in ids:
                    ids[text] = len(ids)
                    vectors.append(vec)
        nearest = _nearest_other(np.asarray(vectors, dtype=np.float32))
        for i in rows:
            a, b = ids[text_a[i]], ids[text_b[i]]
            selected[i] = nearest[a] == b or nearest[b] == a
    return selected


def _nearest_other(vectors: np.ndarray, block: int = 4096) -> np.ndarray:
    """Each row's nearest other row by inner product (exact, in blocks)."""
    out = np.empty(len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), block):
        sims = vectors[start:start + block] @ vectors.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        out[start:start + block] = sims.argmax(axis=1)
    return out


def pair_vectors(encoder, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's vectors of each pair's two texts (from the embedding cache)."""
    from training.embed_cache import embed_cached

    return embed_cached(encoder, pairs.text_a), embed_cached(encoder, pairs.text_b)


def _model(seed: int, max_iter: int = MAX_ITER) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.1,
                                          max_leaf_nodes=31, random_state=seed)


def export_trees(model: HistGradientBoostingClassifier) -> Trees:
    """A fitted binary ``HistGradientBoostingClassifier`` as numpy node arrays (its numeric
    splits only: the features here have no missing values and no categories)."""
    roots, parts, offset = [], [], 0
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        roots.append(offset)
        parts.append((nodes["feature_idx"], nodes["num_threshold"],
                      np.where(leaf, -1, nodes["left"].astype(np.int64) + offset),
                      np.where(leaf, -1, nodes["right"].astype(np.int64) + offset),
                      nodes["value"]))
        offset += len(nodes)
    feature, threshold, left, right, value = (np.concatenate(c) for c in zip(*parts, strict=True))
    return Trees(roots=np.array(roots), feature=feature.astype(np.int64), threshold=threshold,
                 left=left, right=right, value=value,
                 baseline=float(np.ravel(model._baseline_prediction)[0]))


def out_of_fold(x: np.ndarray, y: np.ndarray, fold_of: np.ndarray, seed: int = 0,
                max_iter: int = MAX_ITER) -> np.ndarray:
    """Logits of each row from a model fitted on the other folds (``fold_of``: each row's
    fold, e.g. ``grouped_folds``)."""
    oof = np.empty(len(y))
    for f in np.unique(fold_of):
        model = _model(seed, max_iter).fit(x[fold_of != f], y[fold_of != f])
        oof[fold_of == f] = model.decision_function(x[fold_of == f])
    return oof


def fit_verifier(train: Pairs, vec_a: np.ndarray, vec_b: np.ndarray, *,
                 target: float = DEFAULT_TARGET, confidence: float | None = DEFAULT_CONFIDENCE,
                 folds: int = 5, seed: int = 0, max_iter: int = MAX_ITER,
                 encoder: str = "") -> tuple[Verifier, np.ndarray]:
    """A :class:`Verifier` fitted on ``train`` (every row is used: pass the train part only),
    its out-of-fold logits on those rows (grouped folds) and which rows were selected for the
    calibration (``nearest_selected`` within each fold); ``max_iter`` boosting rounds."""
    x = pair_matrix(train.text_a, train.text_b, vec_a, vec_b)
    y = np.asarray(train.labels, dtype=int)
    fold_of = grouped_folds(question_groups(train.text_a, train.text_b), folds, seed)
    oof = out_of_fold(x, y, fold_of, seed=seed, max_iter=max_iter)
    selected = nearest_selected(train.text_a, train.text_b, vec_a, vec_b, fold_of)
    calibrated = selected | (y == 1)  # only label-0 rows decide a threshold
    cosines = x[:, FEATURES.index("cosine")]
    verifier = Verifier(
        trees=export_trees(_model(seed, max_iter).fit(x, y)),
        threshold=calibrate_threshold(oof[calibrated], y[calibrated], target, confidence),
        target_false_hit_rate=target,
        cosine_threshold=calibrate_threshold(cosines[calibrated], y[calibrated], target,
                                             confidence),
        encoder=encoder,
        dim=int(np.shape(vec_a)[1]),
        trained_on=f"{train.name or 'pairs'} train ({len(y)} pairs; {folds} grouped folds; "
                   f"calibrated on the {int((selected & (y == 0)).sum())} label-0 pairs of "
                   f"nearest neighbours within a fold, confidence {confidence})",
    )
    return verifier, oof, selected


def main(argv: list[str] | None = None) -> int:
    """Fit on DATA's train split and write the verifier JSON."""
    from router.embedding import Encoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="qqp")
    p.add_argument("--encoder", default=str(DEFAULT_ENCODER))
    p.add_argument("--out", default=str(DEFAULT_PATH))
    p.add_argument("--target", type=float, default=DEFAULT_TARGET)
    args = p.parse_args(argv)

    train = load_pairs(args.data).split("train")
    if not len(train):
        raise SystemExit(f"{args.data}: no rows with split 'train'")
    encoder = Encoder.load(args.encoder)
    vec_a, vec_b = pair_vectors(encoder, train)
    t0 = time.perf_counter()
    verifier, oof, selected = fit_verifier(train, vec_a, vec_b, target=args.target,
                                           encoder=encoder.id)
    print(f"fitted in {time.perf_counter() - t0:.0f} s")
    cosines = np.einsum("ij,ij->i", vec_a, vec_b)
    y = train.labels == 1
    print(f"label-0 pairs of nearest neighbours: {(selected & ~y).sum()} of {(~y).sum()}")
    for name, s, t in (("verifier", oof, verifier.threshold),
                       ("cosine", cosines, verifier.cosine_threshold)):
        hits = s >= t
        print(f"{name:9s} train out-of-fold: false hits {hits[~y].mean():.4f} "
              f"(nearest-neighbour pairs {hits[~y & selected].mean():.4f}), "
              f"hits {hits[y].mean():.4f} (threshold {t:.4f})")
    print(f"wrote {verifier.save(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
