"""Hand-computed checks of eval.cascade on tiny tables."""

import dataclasses

import numpy as np
import pytest

from eval.cascade import (
    Cascade,
    Prepared,
    code_parses,
    evaluate_cascades,
    kind_of,
    mc_answer,
    search,
    simulate,
)
from training.table import RoutingTable

MC = "Which is bigger?\nA) ant\nB) whale\nPrint only a single choice from \"A\" or \"B\".\nAnswer:"
CODE = "Write a function to add two numbers."
GOOD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
BAD = "Here you go:\n```python\ndef add(a, b)\n    return a +\n```"


def make_table(prompts, scores, costs, responses, splits=None, tasks=None, models=("a", "b", "x")):
    n = len(prompts)
    return RoutingTable(
        name="tiny", prompts=list(prompts), models=list(models),
        scores=np.array(scores, dtype=float), costs=np.array(costs, dtype=float),
        tasks=np.array(tasks or ["t"] * n), splits=np.array(splits or ["train"] * n),
        meta={"responses": {m: [r[j] for r in responses] for j, m in enumerate(models)}},
    )


@pytest.mark.parametrize(("text", "letters", "want"), [
    ("D", "ABCD", "D"), ("D\n", "ABCD", "D"), (" (B) ", "ABCD", "B"), ("B)", "ABCD", "B"),
    ("C.", "ABCD", "C"), ("A) west", "ABCD", "A"), ("D (the last one)", "ABCD", "D"),
    ("Answer: B", "ABCD", "B"), ("The answer is B", "ABCD", "B"), ("**C**", "ABCD", "C"),
    ("I think the correct answer is (C).", "ABCD", "C"), ("Option D is right", "ABCD", "D"),
    ("I do not know", "ABCD", None), ("A chart shows it", "ABCD", None), ("Rachel", "AB", None),
    ("E", "ABCD", None), ("C", "AB", None), ("Answer: A. No, the answer is B", "ABCD", None),
    ("", "ABCD", None), ("I (honestly) think the answer is B", "ABCD", "B"),
])
def test_mc_answer(text, letters, want):
    assert mc_answer(text, letters) == want


def test_code_parses():
    assert code_parses(GOOD)
    assert code_parses("[PYTHON]\ndef f(x):\n    return x\n[/PYTHON]")
    assert code_parses("Sure:\ndef f(x):\n    return x\n\nprint(f(1))\nThis prints 1.")
    assert code_parses("```\ndef f(x):\n    return x\n")  # unclosed fence (truncated answer)
    assert not code_parses(BAD)
    assert not code_parses("I cannot write that function.")
    assert not code_parses("```python\nprint(1)\n```")  # no function defined


def test_kind_of_reads_the_last_question():
    shots = "Q1\nA) x\nB) y\nC) z\nAnswer:\nA\n\n"
    assert kind_of(shots + "Q2\nA) 1\nB) 2\nC) 3\nD) 4\nAnswer:") == "ABCD"
    assert kind_of(MC) == "AB"
    assert kind_of(CODE) == "code"


def three_rows(code_answer=GOOD):
    # costs per call: a = 1, b = 2, x = 10 on every row
    return make_table(
        [MC, MC, CODE],
        scores=[[1, 1, 0], [0, 1, 1], [0, 1, 1]],
        costs=[[1, 2, 10]] * 3,
        responses=[["B", "B)", "A"], ["A", "B", "B"], [code_answer, GOOD, GOOD]],
    )


def test_simulate_three_rows_by_hand():
    cost, quality, s, c = simulate(three_rows(), Cascade(("a", "b"), ("x",)))
    # row 0: a and b agree on B -> a's score 1, cost 1 + 2; row 1: they disagree -> x (score 1),
    # cost 1 + 2 + 10; row 2 (code): a's code parses -> a's score 0, cost 1 (b never asked)
    np.testing.assert_array_equal(s, [1, 1, 0])
    np.testing.assert_array_equal(c, [3, 13, 1])
    assert (cost, quality) == (17 / 3, 2 / 3)
    # a's code does not parse -> b is asked next and accepted
    _, _, s, c = simulate(three_rows(BAD), Cascade(("a", "b"), ("x",)))
    assert (s[2], c[2]) == (1, 3)


def test_agreement_accepts_and_disagreement_escalates():
    t = three_rows()
    # a alone (quorum 1) accepts its own parseable letter: no escalation, no x cost
    _, _, s, c = simulate(t, Cascade(("a",), ("x",)))
    np.testing.assert_array_equal(c, [1, 1, 1])
    np.testing.assert_array_equal(s, [1, 0, 0])
    # an unparseable step-1 answer escalates even with quorum 1
    t2 = make_table([MC], [[1, 1, 0]], [[1, 2, 10]], [["I do not know", "B", "A"]])
    _, _, s, c = simulate(t2, Cascade(("a",), ("x",)))
    assert (s[0], c[0]) == (0, 11)
    # a middle model that sides with one step-1 answer settles it (pool of 3, quorum 2)
    t3 = make_table([MC], [[0, 1, 0]], [[1, 2, 10]], [["A", "B", "B"]])
    _, _, s, c = simulate(t3, Cascade(("a",), ("b", "x"), quorum=1))
    assert (s[0], c[0]) == (0, 1)  # quorum 1: a is accepted at once
    t4 = make_table([MC], [[0, 1, 1, 0]], [[1, 2, 3, 10]], [["A", "B", "B", "A"]],
                    models=("a", "b", "m", "x"))
    _, _, s, c = simulate(t4, Cascade(("a", "b"), ("m", "x"), quorum=2))
    assert (s[0], c[0]) == (1, 6)  # a/b split, m backs b: b's answer, x never asked
    # no escalation: the step-1 vote wins, ties to the earliest model
    _, _, s, _ = simulate(t4, Cascade(("a", "b", "m")))
    assert s[0] == 1


def test_plan_per_kind():
    t = three_rows()
    plan = {"AB": Cascade(("x",)), "code": Cascade(("b",))}
    _, _, s, c = simulate(t, plan)
    np.testing.assert_array_equal(s, [0, 1, 1])
    np.testing.assert_array_equal(c, [10, 10, 2])
    # an unseen MC kind borrows the nearest MC cascade; a missing type is an error
    _, _, s, _ = simulate(t, {"ABCD": Cascade(("x",)), "code": Cascade(("b",))})
    np.testing.assert_array_equal(s, [0, 1, 1])
    with pytest.raises(ValueError, match="code"):
        simulate(t, {"AB": Cascade(("x",))})


def test_misaligned_responses_are_rejected():
    t = three_rows()
    sub = t.select(np.array([True, False, True]))
    assert len(Prepared.from_table(sub).scores) == 2  # select subsets the responses too
    broken = dataclasses.replace(sub, meta={"responses": t.meta["responses"]})
    with pytest.raises(ValueError, match="responses"):
        Prepared.from_table(broken)


def test_selection_uses_train_rows_only():
    # train: a always right; test: b always right (a always wrong). Both cost 1, x costs 10.
    prompts = [MC] * 8
    splits = ["train"] * 4 + ["test"] * 4
    scores = [[1, 0, 0]] * 4 + [[0, 1, 1]] * 4
    responses = [["A", "B", "B"]] * 4 + [["A", "B", "B"]] * 4
    t = make_table(prompts, scores, [[1, 1, 10]] * 8, responses, splits=splits)
    assert search(Prepared.from_table(t).take(t.splits == "train")) == [Cascade(("a",))]
    r = evaluate_cascades(t)
    assert r["front"] == [[1.0, 0.0]]  # a's test point: b would have won on test
    assert r["cascades"][0].startswith("a | train 1.00e+00 1.0000 | test 1.00e+00 0.0000")
    assert r["best_single"]["model"] == "b"
    assert r["aiq"] == 0.0 and r["zero_router_aiq"] == 1.0
    assert r["cost_at_best_quality"] is None and set(r["tasks"]) == {"t"}
    # flipping the test rows' scores leaves the selection unchanged
    t2 = make_table(prompts, [[1, 0, 0]] * 8, [[1, 1, 10]] * 8, responses, splits=splits)
    assert evaluate_cascades(t2)["front"] == [[1.0, 1.0]]


def test_evaluate_skips_incomplete_rows_and_reports_tasks():
    prompts = [MC, MC, CODE, MC, MC, CODE]
    scores = [[1, 1, 1], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1], [np.nan, 0, 1]]
    responses = [["B", "B", "B"], ["A", "B", "B"], [GOOD, GOOD, GOOD]] * 2
    t = make_table(prompts, scores, [[1, 2, 10]] * 6, responses,
                   splits=["train"] * 3 + ["test"] * 3, tasks=["mc", "mc", "code"] * 2)
    r = evaluate_cascades(t, by_kind=True)
    assert (r["n_train"], r["n"]) == (3, 2)
    assert set(r["tasks"]) == {"mc"}
    assert r["best_single"]["model"] == "b"  # on the 2 complete test rows b costs 2, x 10


def test_search_by_kind_gives_small_kinds_no_cascade_of_their_own():
    abcd = "Q?\nA) 1\nB) 2\nC) 3\nD) 4\nAnswer:"
    prompts = [MC] * 3 + [abcd] + [CODE] * 2
    responses = [["B", "B", "B"]] * 3 + [["C", "C", "C"]] + [[GOOD, GOOD, GOOD]] * 2
    t = make_table(prompts, [[1, 1, 1]] * 6, [[1, 2, 10]] * 6, responses)
    plans = search(t, by_kind=True, min_kind_rows=2)
    assert plans == [{"AB": Cascade(("a",)), "code": Cascade(("a",))}]
    assert simulate(t, plans[0])[:2] == (1.0, 1.0)  # the ABCD row borrows "AB"'s cascade
    assert all(type(k) is str for k in plans[0])
