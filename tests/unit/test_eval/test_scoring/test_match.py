import pytest

from eval.scoring import match, normalize


@pytest.mark.parametrize(("text", "normal"), [
    ("The Eiffel Tower", "eiffel tower"),
    ("  an   apple, a pear!  ", "apple pear"),
    ("Rock-'n'-roll.", "rocknroll"),
    ("theory", "theory"),  # articles only as whole words
])
def test_normalize_is_squads(text, normal):
    assert normalize(text) == normal


def test_exact_match_is_reported_as_such():
    assert match(" Paris\n", "Paris").detail == "exact match with 'Paris'"


def test_normalised_match_ignores_case_punctuation_articles_and_spacing():
    score = match("the  eiffel tower.", "Eiffel Tower")
    assert score.value == 1.0 and score.detail.startswith("normalised match")


def test_any_of_several_references():
    assert match("NYC", ["New York City", "NYC"]).value == 1.0
    miss = match("Boston", ["New York City", "NYC"])
    assert miss.value == 0.0 and "none of 2" in miss.detail


def test_a_longer_answer_is_not_a_match():
    # match is exact after normalisation; containment is the judge's business
    assert match("The capital of France is Paris.", "Paris").value == 0.0


def test_no_reference_is_an_error():
    with pytest.raises(ValueError):
        match("x", [])
