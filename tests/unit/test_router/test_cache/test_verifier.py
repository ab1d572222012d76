"""The pair features and the verifier's numpy scoring, on hand-made pairs."""

import numpy as np
import pytest

from router.cache.verifier import FEATURES, Verifier, analyse, features_matrix, pair_features

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


@pytest.fixture()
def verifier():
    """Weights by hand: cosine and word order count for, negations and numbers against."""
    coef = np.zeros(len(FEATURES))
    for name, w in {"cosine": 4.0, "order_agreement": 2.0, "bigram_jaccard": 2.0,
                    "negation_mismatch": -3.0, "number_mismatch": -3.0}.items():
        coef[FEATURES.index(name)] = w
    return Verifier(features=FEATURES, mean=(0.0,) * len(FEATURES),
                    scale=(1.0,) * len(FEATURES), coef=tuple(coef), intercept=-5.0,
                    threshold=2.0, target_false_hit_rate=0.01, cosine_threshold=0.9)


def test_traps_score_below_a_true_paraphrase_at_the_same_cosine(verifier):
    paraphrase = ("Show me flights from Paris to Rome", "show me the flights from Paris to Rome")
    traps = [("Show me flights from Paris to Rome", "Show me flights from Rome to Paris"),
             ("Is it safe to drink tap water?", "Is it not safe to drink tap water?"),
             ("What is 15% of 200?", "What is 20% of 150?")]
    a, b = zip(paraphrase, *traps, strict=True)
    scores = verifier.score(a, b, np.full(4, 0.95))
    assert (scores[1:] < scores[0]).all()
    assert verifier.decide(a, b, np.full(4, 0.95)).tolist() == [True, False, False, False]


def test_save_load_round_trip(tmp_path, verifier):
    loaded = Verifier.load(verifier.save(tmp_path / "v.json"))
    assert loaded == verifier
    x = features_matrix(*zip(PARAPHRASE, strict=True), np.array([0.8]))
    assert x.shape == (1, len(FEATURES))


def test_stale_feature_list_is_refused(verifier):
    stale = Verifier(**{**verifier.__dict__, "features": FEATURES[:-1]})
    with pytest.raises(ValueError, match="refit"):
        stale.score(["a"], ["b"], np.array([0.5]))
