"""The pair features and the verifier's numpy scoring, on hand-made pairs."""

import dataclasses

import numpy as np
import pytest

from router.cache.verifier import FEATURES, Trees, Verifier, analyse, pair_features, pair_matrix

PARAPHRASE = ("How do I learn Python quickly?", "What is the fastest way to learn Python?")


def _features(a: str, b: str, cosine: float = 0.9) -> dict[str, float]:
    return dict(zip(FEATURES, pair_features(analyse(a), analyse(b), cosine), strict=True))


def test_negation_is_a_mismatch():
    f = _features("Is it safe to drink tap water in Mexico?",
                  "Is it not safe to drink tap water in Mexico?")
    assert f["negation_mismatch"] == 1.0
    assert _features("Why don't cats like water?", "Why do cats like water?")[
        "negation_mismatch"] == 1.0
    assert _features(*PARAPHRASE)["negation_mismatch"] == 0.0


def test_changed_numbers_are_a_mismatch():
    assert _features("What is 15% of 200?", "What is 20% of 150?")["number_mismatch"] == 1.0
    assert _features("What is 15% of 200?", "what's 15% of 200")["number_mismatch"] == 0.0


def test_swapped_places_lower_order_and_bigrams():
    swapped = _features("Show me flights from Paris to Rome", "Show me flights from Rome to Paris")
    same = _features("Show me flights from Paris to Rome", "show me the flights from Paris to Rome")
    assert swapped["order_agreement"] < same["order_agreement"] == 1.0
    assert swapped["bigram_jaccard"] < same["bigram_jaccard"]


def test_entities_and_question_words():
    f = _features("What is the capital of France?", "What is the capital of Germany?")
    assert f["entity_mismatch"] == 1.0
    assert _features("Why is the sky blue?", "When is the sky blue?")["question_word_mismatch"] == 1
    # A capital at the start of a sentence is not a name.
    assert analyse("Where is Paris?").entities == {"paris"}


def _unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 384))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture()
def verifier():
    """One hand-made tree: a negation or number mismatch, or shared words out of order, is a
    miss (-3); anything else a hit (+2)."""
    f = FEATURES.index
    # node: (feature, threshold, left, right, value); a row goes left when feature <= threshold
    nodes = [(f("negation_mismatch"), 0.5, 1, 2, 0.0),
             (f("number_mismatch"), 0.5, 3, 2, 0.0),
             (0, 0.0, -1, -1, -3.0),
             (f("order_agreement"), 0.99, 2, 4, 0.0),
             (0, 0.0, -1, -1, 2.0)]
    feature, threshold, left, right, value = (np.array(c) for c in zip(*nodes, strict=True))
    trees = Trees(roots=np.array([0]), feature=feature, threshold=threshold, left=left,
                  right=right, value=value, baseline=0.5)
    return Verifier(trees=trees, threshold=0.0, target_false_hit_rate=0.01,
                    cosine_threshold=0.9)


def test_traps_are_misses_and_a_paraphrase_a_hit(verifier):
    pairs = [("Show me flights from Paris to Rome", "show me the flights from Paris to Rome"),
             ("Show me flights from Paris to Rome", "Show me flights from Rome to Paris"),
             ("Is it safe to drink tap water?", "Is it not safe to drink tap water?"),
             ("What is 15% of 200?", "What is 20% of 150?")]
    a, b = zip(*pairs, strict=True)
    vec = _unit(1, 0)
    scores = verifier.score(a, b, np.repeat(vec, 4, 0), np.repeat(vec, 4, 0))
    assert scores.tolist() == [2.5, -2.5, -2.5, -2.5]
    assert verifier.decide(a, b, np.repeat(vec, 4, 0), np.repeat(vec, 4, 0)).tolist() == [
        True, False, False, False]


def test_pair_matrix_holds_features_then_vector_agreement():
    va, vb = _unit(2, 1), _unit(2, 2)
    x = pair_matrix(["a b", "c d"], ["a b", "d c"], va, vb)
    k = len(FEATURES)
    assert x.shape == (2, k + 2 * 384)
    assert np.allclose(x[:, FEATURES.index("cosine")], np.sum(va * vb, axis=1))
    assert np.allclose(x[:, k:k + 384], va * vb) and np.allclose(x[:, k + 384:], abs(va - vb))


def test_save_load_round_trip(tmp_path, verifier):
    loaded = Verifier.load(verifier.save(tmp_path / "v.npz"))
    assert (loaded.threshold, loaded.cosine_threshold, loaded.features) == (
        verifier.threshold, verifier.cosine_threshold, verifier.features)
    x = np.random.default_rng(0).random((50, len(FEATURES)))
    assert np.array_equal(loaded.trees.raw(x), verifier.trees.raw(x))


def test_stale_feature_list_is_refused(verifier):
    stale = dataclasses.replace(verifier, features=FEATURES[:-1])
    vec = _unit(1, 0)
    with pytest.raises(ValueError, match="refit"):
        stale.score(["a"], ["b"], vec, vec)


def test_wrong_sized_vectors_are_refused(verifier):
    sized = dataclasses.replace(verifier, dim=384, encoder="all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="384-d"):
        sized.score(["a"], ["b"], np.ones((1, 8)), np.ones((1, 8)))


TRAPS = [  # (query, a true paraphrase of it, a near copy that asks something else)
    ("How can I book flights from Paris to Rome?", "How do I book a flight from Paris to Rome?",
     "How can I book flights from Rome to Paris?"),
    ("Is it safe to drink tap water in Mexico?", "Is it safe to drink the tap water in Mexico?",
     "Is it not safe to drink tap water in Mexico?"),
    ("What is the best laptop under 500 dollars?", "Which is the best laptop under $500?",
     "What is the best laptop under 1000 dollars?"),
]


def test_shipped_verifier_ranks_traps_below_paraphrases_and_never_hits_them(encoder):
    shipped = Verifier.load()
    query, para, trap = (list(c) for c in zip(*TRAPS, strict=True))
    vq, vp, vt = encoder.encode(query), encoder.encode(para), encoder.encode(trap)
    assert (shipped.score(query, trap, vq, vt) < shipped.score(query, para, vq, vp)).all()
    assert not shipped.decide(query, trap, vq, vt).any()
    # Cosine calibrated to the same target would serve the swapped route and the negation.
    assert (np.sum(vq * vt, axis=1)[:2] >= shipped.cosine_threshold).all()
