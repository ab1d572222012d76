"""How often the semantic cache would answer wrongly, and how often it would answer at all.

``evaluate_cache(pairs, decider, encoder=...)`` treats each labelled pair as (a new query, a
cached entry's query) and asks ``decider`` whether it is a hit. A label-0 pair that hits is a
false hit: a cached answer served for another question. It reports the decider's false-hit rate
(share of label-0 pairs that hit) and hit rate (share of label-1 pairs that hit) on the pairs'
``test`` split, or on every row when they carry no split, beside two cosine baselines. Also the
false-hit rate among the label-0 pairs a cache's lookup would actually decide
(``false_hit_rate_nearest``: one question is the other's nearest among the split's questions),
the harder ones, which is what a served stream meets:

- ``cosine_0_8``: hit when cosine >= 0.8, the common fixed setting;
- ``cosine_calibrated``: a cosine threshold calibrated to the decider's target false-hit rate on
  the label-0 pairs of nearest neighbours within the grouped folds of the pairs' ``train``
  split (as the shipped verifier is), or, when they have none, the one stored with the
  decider (fitted on the data the decider was) — never on the rows being evaluated.

The decider is used as shipped: nothing is fitted or tuned here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from training.data import Pairs

FIXED_COSINE = 0.8


class Decider(Protocol):
    """What a hit decision reads: the two texts and their encoder vectors."""

    cosine_threshold: float
    target_false_hit_rate: float

    def decide(self, text_a: Sequence[str], text_b: Sequence[str], vec_a: np.ndarray,
               vec_b: np.ndarray) -> np.ndarray: ...


def rates(hits: np.ndarray, labels: np.ndarray, nearest: np.ndarray | None = None) -> dict:
    """``false_hit_rate``, ``hit_rate`` and ``precision`` (share of hits that are right);
    with ``nearest`` (the pairs a lookup would decide: ``nearest_selected``), the false-hit
    rate among those label-0 pairs too."""
    hits, pos = np.asarray(hits, dtype=bool), np.asarray(labels) == 1
    near_neg = ~pos & (np.asarray(nearest, dtype=bool) if nearest is not None else False)
    return {
        "false_hit_rate": float(hits[~pos].mean()) if (~pos).any() else None,
        **({"false_hit_rate_nearest": float(hits[near_neg].mean()) if near_neg.any() else None,
            "n_nearest_non_duplicates": int(near_neg.sum())} if nearest is not None else {}),
        "hit_rate": float(hits[pos].mean()) if pos.any() else None,
        "precision": float(pos[hits].mean()) if hits.any() else None,
        "hits": int(hits.sum()),
        "false_hits": int((hits & ~pos).sum()),
    }


def _vectors(encoder, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    from training.embed_cache import embed_cached

    return embed_cached(encoder, pairs.text_a), embed_cached(encoder, pairs.text_b)


def evaluate_cache(pairs: Pairs, decider: Decider, *, encoder, split: str = "test") -> dict:
    """The decider's and the cosine baselines' rates on ``pairs``' ``split`` (every row when the
    pairs have no split at all). ``encoder`` makes the vectors (via the embedding cache)."""
    from training.cache_verifier import (
        calibrate_threshold,
        grouped_folds,
        nearest_selected,
        question_groups,
    )

    has_splits = bool(np.any(pairs.splits != ""))
    evaluated = pairs.split(split) if has_splits else pairs
    if not len(evaluated):
        raise ValueError(f"{pairs.name}: no rows with split {split!r}")
    target = decider.target_false_hit_rate
    train = pairs.split("train") if has_splits else None
    if train is not None and len(train) and (train.labels == 0).any():
        # as the verifier is: on the label-0 pairs a lookup would decide, neighbours within
        # each of the grouped folds
        ta, tb = _vectors(encoder, train)
        folds = grouped_folds(question_groups(train.text_a, train.text_b))
        chosen = nearest_selected(train.text_a, train.text_b, ta, tb, folds) | (train.labels == 1)
        cos_threshold = calibrate_threshold(np.einsum("ij,ij->i", ta, tb)[chosen],
                                            train.labels[chosen], target)
        calibrated_on = (f"{pairs.name} train ({len(train)} pairs; the label-0 pairs of "
                         "nearest neighbours)")
    else:
        cos_threshold, calibrated_on = decider.cosine_threshold, "the decider's training data"
    vec_a, vec_b = _vectors(encoder, evaluated)
    cosines = np.einsum("ij,ij->i", vec_a, vec_b)
    labels = evaluated.labels
    nearest = nearest_selected(evaluated.text_a, evaluated.text_b, vec_a, vec_b)
    mine = rates(decider.decide(evaluated.text_a, evaluated.text_b, vec_a, vec_b), labels,
                 nearest)
    return {
        "dataset": pairs.name,
        "split": split if has_splits else "all",
        "n": len(evaluated),
        "n_duplicates": int((labels == 1).sum()),
        "n_non_duplicates": int((labels == 0).sum()),
        "target_false_hit_rate": target,
        "decider": type(decider).__name__,
        **mine,
        "baselines": {
            "cosine_0_8": {"threshold": FIXED_COSINE,
                           **rates(cosines >= FIXED_COSINE, labels, nearest)},
            "cosine_calibrated": {"threshold": cos_threshold, "calibrated_on": calibrated_on,
                                  **rates(cosines >= cos_threshold, labels, nearest)},
        },
    }


def format_result(result: dict) -> str:
    """A small table of the decider against the baselines."""
    rows = [("decider", result), *(result["baselines"].items())]
    lines = [f"{result['dataset']} [{result['split']}] n={result['n']} "
             f"(target false-hit rate {result['target_false_hit_rate']:.2%})",
             f"{'':20s} {'false hits':>10s} {'nearest':>8s} {'hit rate':>9s} {'precision':>9s}"]
    for name, r in rows:
        precision = "-" if r["precision"] is None else f"{r['precision']:.3f}"
        lines.append(f"{name:20s} {_pct(r['false_hit_rate']):>10s} "
                     f"{_pct(r.get('false_hit_rate_nearest')):>8s} {_pct(r['hit_rate']):>9s} "
                     f"{precision:>9s}")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"
