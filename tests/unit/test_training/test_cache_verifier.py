"""Threshold calibration and fitting of the cache verifier on synthetic pairs."""

import numpy as np
import pytest

from training.cache_cross_verifier import fit_cross_verifier
from training.cache_verifier import (
    _model,
    calibrate_threshold,
    export_trees,
    fit_verifier,
    grouped_folds,
    nearest_selected,
    question_groups,
)
from training.data import Pairs


def _synthetic(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(np.int8)
    scores = rng.normal(np.where(labels == 1, 2.0, 0.0), 1.0)
    return scores, labels


@pytest.mark.parametrize("target", [0.01, 0.05])
def test_calibrated_threshold_meets_the_target_on_its_rows(target):
    scores, labels = _synthetic()
    t = calibrate_threshold(scores, labels, target, confidence=None)
    neg = scores[labels == 0]
    assert (neg >= t).mean() <= target
    # It is the lowest such threshold: one more negative would pass the target.
    assert (neg >= np.sort(neg)[::-1][int(target * len(neg))]).mean() > target


def test_confidence_leaves_a_margin_that_holds_on_fresh_rows():
    scores, labels = _synthetic(seed=1)
    plain = calibrate_threshold(scores, labels, 0.01, confidence=None)
    bounded = calibrate_threshold(scores, labels, 0.01, confidence=0.95)
    assert bounded > plain
    fresh, fresh_labels = _synthetic(n=200000, seed=2)
    assert (fresh[fresh_labels == 0] >= bounded).mean() <= 0.01


def test_ties_at_the_threshold_are_not_counted_in():
    scores = np.array([1.0, 1.0, 1.0, 0.5, 0.2, 2.0])
    labels = np.array([0, 0, 0, 0, 0, 1])
    t = calibrate_threshold(scores, labels, 0.5, confidence=None)
    assert (scores[labels == 0] >= t).mean() <= 0.5
    assert t > 1.0


def test_fit_separates_negated_and_renumbered_pairs_from_paraphrases():
    rng = np.random.default_rng(0)
    a, b, y = [], [], []
    for i in range(600):
        q = f"how long does it take to learn topic{i % 50} in {i % 9 + 2} weeks"
        weeks = f"{i % 9 + 2} weeks"
        other = (f"In {weeks} how long does it take to learn topic{i % 50}",  # a paraphrase
                 q.replace("does it", "does it not"),
                 q.replace(weeks, f"{i % 9 + 12} weeks"))[i % 3]
        a.append(q)
        b.append(other)
        y.append(int(i % 3 == 0))
    # The vectors say nothing here (the same random unit vector on both sides).
    vec = rng.normal(size=(len(y), 384))
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    pairs = Pairs(a, b, np.array(y, dtype=np.int8), np.full(len(y), "train"), name="synthetic")
    verifier, oof, selected = fit_verifier(pairs, vec, vec, target=0.01, folds=3, max_iter=20)
    hits = verifier.decide(a, b, vec, vec)
    labels = np.array(y)
    assert hits[labels == 0].mean() <= 0.01
    assert hits[labels == 1].mean() > 0.9
    assert oof.shape == selected.shape == (len(y),)


def test_exported_trees_score_as_sklearn_does():
    rng = np.random.default_rng(0)
    x = rng.random((2000, 12))
    y = (x[:, 0] + x[:, 3] * x[:, 5] + rng.normal(0, 0.2, 2000) > 0.8).astype(int)
    model = _model(0, max_iter=30).fit(x, y)
    assert np.allclose(export_trees(model).raw(x), model.decision_function(x), atol=1e-9)


def test_question_groups_join_pairs_that_share_a_text_directly_or_through_others():
    a = ["q1", "q2", "q4", "q6", "q3"]
    b = ["q2", "q3", "q5", "q7", "q8"]
    g = question_groups(a, b)
    assert g[0] == g[1] == g[4] and g[2] != g[0] and g[3] not in (g[0], g[2])


def test_grouped_folds_keep_each_group_in_one_fold_and_balance_the_rows():
    groups = np.random.default_rng(0).integers(0, 300, size=3000)
    fold = grouped_folds(groups, 5, seed=1)
    for g in np.unique(groups):
        assert len(set(fold[groups == g].tolist())) == 1
    sizes = np.bincount(fold, minlength=5)
    assert sizes.max() - sizes.min() <= np.bincount(groups).max()


def test_cross_verifier_is_chosen_and_calibrated_on_held_out_scores():
    rng = np.random.default_rng(0)
    n = 600
    y = (rng.random(n) < 0.4).astype(int)
    logits = rng.normal(np.where(y == 1, 3.0, 0.0), 1.0)
    a = [f"what is topic{i}" for i in range(n)]
    b = [f"what is topic{i} about" for i in range(n)]
    vec = rng.normal(size=(n, 384))
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    verifier, figures = fit_cross_verifier(a, b, vec, vec, y, logits, cosine_threshold=0.97,
                                           confidence=None, inputs="cross_encoder", max_iter=10)
    assert verifier.inputs == "cross_encoder" and verifier.trees is None
    assert figures["cross_encoder"]["false_hit_rate"] <= 0.01
    assert figures["cross_encoder"]["hit_rate"] > 0.3
    assert set(figures) == {"cross_encoder", "features+cross_encoder"}


def test_nearest_selected_keeps_the_pairs_a_lookup_would_decide():
    # q0's nearest is q1 and q3's is q4 (selected pairs); q2 and q3 are far apart and q2's
    # nearest is q4, so a lookup for either would never be asked about the other.
    vec = np.array([[1.0, 0.0, 0.0], [0.99, 0.14, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                    [0.0, 0.99, 0.14]])
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    texts = ["q0", "q1", "q2", "q3", "q4"]
    a, b = ["q0", "q2", "q3"], ["q1", "q3", "q4"]
    va, vb = (np.array([vec[texts.index(t)] for t in side]) for side in (a, b))
    assert nearest_selected(a, b, va, vb).tolist() == [True, False, True]
    # within groups (folds): q2's only other question in its group is q3
    assert nearest_selected(a, b, va, vb, np.array([0, 1, 2])).tolist() == [True, True, True]
