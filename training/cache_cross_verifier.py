"""Choose and calibrate the cross-encoder hit verifier on train pairs the cross-encoder never saw.

``training.cache_cross_encoder`` fine-tunes the cross-encoder on folds 1..4 of QQP's train
split (folds grouped by question) and writes its logits on fold 0. Here, on fold 0 only, two
verifiers are compared (:data:`router.cache.verifier.INPUTS`):

- ``cross_encoder``: the logit itself;
- ``features+cross_encoder``: boosted trees over the 14 pair features and the logit, scored by
  out-of-fold logits of a second, grouped K-fold split of fold 0.

Each one's hit threshold is the lowest whose false-hit rate on those (out-of-fold) scores has
a one-sided Clopper-Pearson bound at ``confidence`` under the target, as in
``training.cache_verifier``; the verifier with the higher hit rate there is written (trees
refitted on all of fold 0) to ``DIR/verifier.npz``, beside the cross-encoder it reads. The
cosine baseline threshold is calibrated on the whole train split, as the shipped verifier's is.

    python -m training.cache_cross_verifier [--dir models/cache/cross_encoder]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from router.cache.verifier import INPUTS, Verifier, stack_matrix
from training.cache_cross_encoder import DEFAULT_OUT
from training.cache_verifier import (
    DEFAULT_CONFIDENCE,
    DEFAULT_ENCODER,
    DEFAULT_TARGET,
    FOLDS,
    _model,
    calibrate_threshold,
    export_trees,
    grouped_folds,
    out_of_fold,
    pair_vectors,
    question_groups,
)
from training.data import load_pairs

STACK_ITER = 200


def grouped_out_of_fold(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = FOLDS,
                        seed: int = 0, max_iter: int = STACK_ITER) -> np.ndarray:
    """Logits of each row from trees fitted on the other folds (folds grouped by ``groups``)."""
    return out_of_fold(x, y, grouped_folds(groups, folds, seed), seed=seed, max_iter=max_iter)


def rates_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    hits, pos = scores >= threshold, np.asarray(labels) == 1
    return {"threshold": float(threshold), "false_hit_rate": float(hits[~pos].mean()),
            "hit_rate": float(hits[pos].mean())}


def fit_cross_verifier(text_a, text_b, vec_a, vec_b, labels, logits, *,
                       cosine_threshold: float, cross_encoder_dir: str = ".",
                       target: float = DEFAULT_TARGET,
                       confidence: float | None = DEFAULT_CONFIDENCE, seed: int = 0,
                       inputs: str | None = None, encoder: str = "", trained_on: str = "",
                       max_iter: int = STACK_ITER):
    """The chosen :class:`Verifier` (or the one ``inputs`` names) and each candidate's figures
    on the held-out rows (``false_hit_rate``, ``hit_rate`` at its calibrated threshold)."""
    y = np.asarray(labels, dtype=int)
    x = stack_matrix(text_a, text_b, vec_a, vec_b, logits)
    oof = grouped_out_of_fold(x, y, question_groups(text_a, text_b), seed=seed,
                              max_iter=max_iter)
    scores = {INPUTS[2]: np.asarray(logits, dtype=np.float64), INPUTS[1]: oof}
    figures = {}
    for name, s in scores.items():
        figures[name] = rates_at(s, y, calibrate_threshold(s, y, target, confidence))
    chosen = inputs or max(figures, key=lambda k: figures[k]["hit_rate"])
    trees = (export_trees(_model(seed, max_iter).fit(x, y)) if chosen == INPUTS[1] else None)
    verifier = Verifier(
        trees=trees, threshold=figures[chosen]["threshold"], target_false_hit_rate=target,
        cosine_threshold=cosine_threshold, encoder=encoder, dim=int(np.shape(vec_a)[1]),
        trained_on=trained_on, inputs=chosen, cross_encoder_dir=cross_encoder_dir)
    return verifier, figures


def main(argv: list[str] | None = None) -> int:
    from router.embedding import Encoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="qqp")
    p.add_argument("--dir", default=str(DEFAULT_OUT), help="the cross-encoder's folder")
    p.add_argument("--encoder", default=str(DEFAULT_ENCODER))
    p.add_argument("--inputs", choices=INPUTS[1:], default=None,
                   help="write this verifier (default: the one with more held-out hits)")
    p.add_argument("--target", type=float, default=DEFAULT_TARGET)
    args = p.parse_args(argv)

    folder = Path(args.dir)
    train = load_pairs(args.data).split("train")
    encoder = Encoder.load(args.encoder, threads=1)
    vec_a, vec_b = pair_vectors(encoder, train)
    cosines = np.einsum("ij,ij->i", vec_a, vec_b)
    cos_threshold = calibrate_threshold(cosines, train.labels, args.target)
    with np.load(folder / "calibration_logits.npz") as npz:
        rows, logits = npz["rows"], npz["logits"]
    cal = train.select(np.isin(np.arange(len(train)), rows))
    if not np.array_equal(np.flatnonzero(np.isin(np.arange(len(train)), rows)), rows):
        raise SystemExit("calibration rows are not in train order")
    verifier, figures = fit_cross_verifier(
        cal.text_a, cal.text_b, vec_a[rows], vec_b[rows], cal.labels, logits,
        cosine_threshold=cos_threshold, target=args.target, inputs=args.inputs,
        encoder=encoder.id,
        trained_on=(f"{args.data} train: cross-encoder fine-tuned on folds 1-{FOLDS - 1} "
                    f"({len(train) - len(rows)} pairs), chosen and calibrated on fold 0 "
                    f"({len(rows)} pairs; folds grouped by question)"))
    held = rates_at(cosines[rows], cal.labels, cos_threshold)
    for name, f in {**figures, "cosine (whole-train threshold)": held}.items():
        print(f"{name:32s} fold 0: false hits {f['false_hit_rate']:.4f}, "
              f"hits {f['hit_rate']:.4f} (threshold {f['threshold']:.4f})")
    print(f"chose {verifier.inputs}; wrote {verifier.save(folder / 'verifier.npz')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
