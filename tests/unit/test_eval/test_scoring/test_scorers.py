"""The package's public surface: the registry the runner reads and the names it imports."""

import inspect

import eval.scoring as scoring
from eval.scoring import SCORERS


def test_registry_names_every_scorer():
    assert list(SCORERS) == ["choice", "numeric", "match", "code", "judge", "pairwise",
                             "feedback"]
    assert {s.needs for s in SCORERS.values()} == {"reference", "judge", "ratings"}
    for name, scorer in SCORERS.items():
        assert scorer.name == name and scorer.description
        assert scorer.is_async == inspect.iscoroutinefunction(scorer.fn), name


def test_registry_functions_are_the_public_ones():
    assert SCORERS["choice"].fn is scoring.choice
    assert SCORERS["code"].fn is scoring.acode
    assert SCORERS["judge"].fn is scoring.judge_absolute
    assert SCORERS["pairwise"].fn is scoring.judge_pairwise
    assert SCORERS["feedback"].fn is scoring.feedback


def test_public_surface_is_pinned():
    assert sorted(scoring.__all__) == sorted([
        "SCORERS", "Judge", "JudgeError", "JudgeReply", "JudgeScore", "Kind", "Limits", "Number",
        "Reference", "Score", "Scorer", "acode", "ascore_reference", "choice", "code",
        "extract_choice", "extract_code", "extract_number", "feedback", "judge_absolute",
        "judge_pairwise", "match", "normalize", "numeric", "parse_number", "parse_rating",
        "parse_verdict", "prompt_options", "score_reference"])
    assert all(hasattr(scoring, name) for name in scoring.__all__)
    assert all(not m.startswith("_") or m.startswith("__") for m in scoring.__all__)
