"""The replay benchmark's stream and its tally (benchmarks/cache_replay.py)."""

from __future__ import annotations

from collections import Counter

from benchmarks.cache_replay import Ask, Outcome, build_stream, tally

POS = [(f"What is {i} plus one?", f"What does {i} plus one equal?") for i in range(60)]
NEG = [(f"Where is city {i}?", f"Where is town {i}?") for i in range(60)]


def test_the_stream_repeats_half_its_requests_in_order_and_in_one_tenant():
    stream = build_stream(POS, NEG, requests=200, tenants=3, seed=1)
    roles = Counter(a.role for a in stream)
    assert len(stream) == 200
    assert roles["exact"] + roles["paraphrase"] == 100
    assert roles["near"] > 0 and roles["other_exact"] + roles["other_paraphrase"] == 10
    first = {}
    for i, ask in enumerate(stream):
        if ask.role == "first":
            first[ask.item] = (i, ask)
        else:  # every later request comes after its item's first ask
            j, origin = first[ask.item]
            assert j < i and origin.text == ask.origin
            same = ask.tenant == origin.tenant
            assert same != ask.role.startswith("other_")
    assert build_stream(POS, NEG, 200, 3, seed=1) == stream


def test_a_hit_by_an_entry_of_another_question_is_a_false_hit():
    a, b, c, d = "Is tea good?", "Is tea healthy?", "Is coffee good?", "Is coffee bad?"
    stream = [Ask("t0", a, 0, "repeat", "first"), Ask("t0", c, 1, "near", "first"),
              Ask("t0", b, 0, "repeat", "paraphrase", a), Ask("t0", d, 1, "near", "near", c),
              Ask("t0", a, 0, "repeat", "exact", a), Ask("t1", a, 2, "other tenant",
                                                           "other_exact", a)]
    outcomes = [Outcome("miss"), Outcome("miss"), Outcome("hit-semantic", a, "t0"),
                Outcome("hit-semantic", c, "t0"), Outcome("hit-exact", a, "t0"),
                Outcome("hit-exact", a, "t0")]
    r = tally(stream, outcomes, {frozenset((a, b))}, {frozenset((c, d))})
    assert r["repeat_hit_rate"] == 1.0 and r["paraphrase_hit_rate"] == 1.0
    assert r["false_hits"] == 1 and r["hard_negative_false_hits"] == 1
    assert r["hard_negative_served_by_near_question"] == 1
    assert r["near_with_origin_cached"] == 1 and r["false_hits_labelled_non_duplicate"] == 1
    assert r["cross_tenant_hits"] == 1 and r["other_tenant_hits"] == 1


def test_decisions_are_judged_by_the_labels_and_predicted_on_labelled_negatives():
    from benchmarks.cache_replay import decisions

    decided = [("How do I learn Python?", "how do i  learn python?", 5.0),  # same, hit
               ("What is AI?", "Define AI.", 3.0),  # labelled paraphrase, hit
               ("Why is the sky blue?", "Why is the sea blue?", 2.5),  # non-duplicate, hit
               ("Why is grass green?", "Why is grass wet?", 0.1),  # non-duplicate, miss
               ("Best pizza in Rome?", "Good pizza in Rome?", 4.0)]  # unlabelled, hit
    d = decisions(decided, 2.0, {frozenset(("What is AI?", "Define AI."))},
                  {frozenset(("Why is the sky blue?", "Why is the sea blue?")),
                   frozenset(("Why is grass green?", "Why is grass wet?"))}, 0.01)
    assert (d["candidates_match"], d["candidates_match_accepted"]) == (2, 2)
    assert (d["candidates_non_duplicate"], d["candidates_non_duplicate_accepted"]) == (2, 1)
    assert (d["candidates_unlabelled"], d["candidates_unlabelled_accepted"]) == (1, 1)
    assert d["expected_false_hits"] == 0.02
    low, high = d["non_duplicate_accept_rate_ci95"]
    assert 0 < low < 0.5 < high < 1
