import numpy as np
import pytest

from router.policy import NoEligibleModel, PolicySpec, calibrate_threshold, choose, strong_lead

Q = np.array([0.90, 0.80, 0.50])
C = np.array([0.010, 0.002, 0.0001])
ALL = np.array([True, True, True])


def test_tradeoff_moves_from_best_to_cheapest_as_willingness_falls():
    assert choose(Q, C, ALL, PolicySpec(willingness_to_pay=100.0))[0] == 0
    # 0.8 - 0.002/0.05 = 0.76 beats 0.9 - 0.2 = 0.7 and 0.5 - 0.002 = 0.498
    assert choose(Q, C, ALL, PolicySpec(willingness_to_pay=0.05))[0] == 1
    assert choose(Q, C, ALL, PolicySpec(willingness_to_pay=1e-4))[0] == 2


def test_target_quality_takes_cheapest_that_reaches_it_else_best():
    assert choose(Q, C, ALL, PolicySpec(mode="target_quality", target_quality=0.75))[0] == 1
    i, why = choose(Q, C, ALL, PolicySpec(mode="target_quality", target_quality=0.95))
    assert i == 0 and "none predicted" in why


def test_max_cost_takes_best_within_ceiling_else_cheapest():
    assert choose(Q, C, ALL, PolicySpec(mode="max_cost", max_cost_usd=0.005))[0] == 1
    assert choose(Q, C, ALL, PolicySpec(mode="max_cost", max_cost_usd=1e-6))[0] == 2


def test_hard_constraints_exclude_candidates():
    eligible = np.array([False, True, True])
    assert choose(Q, C, eligible, PolicySpec(willingness_to_pay=100.0))[0] == 1
    with pytest.raises(NoEligibleModel):
        choose(Q, C, np.zeros(3, bool), PolicySpec())


def test_ties_go_to_the_cheaper_model():
    q, c = np.array([0.7, 0.7]), np.array([0.02, 0.01])
    assert choose(q, c, np.ones(2, bool), PolicySpec(willingness_to_pay=1e9))[0] == 1


def test_strong_share_threshold_sends_the_calibrated_share():
    rng = np.random.default_rng(0)
    cal = rng.uniform(size=(1000, 2))
    t = calibrate_threshold(cal, strong=0, share=0.3)
    assert np.mean(strong_lead(cal, 0) > t) == pytest.approx(0.3, abs=0.002)
    spec = PolicySpec(mode="strong_share", strong_share=0.3)
    test = rng.uniform(size=(2000, 2))
    picks = [choose(q, np.array([1.0, 0.1]), np.ones(2, bool), spec, strong=0, threshold=t)[0]
             for q in test]
    assert np.mean(np.array(picks) == 0) == pytest.approx(0.3, abs=0.04)
    assert calibrate_threshold(cal, 0, 0.0) == float("inf")


@pytest.mark.parametrize("field,value", [("willingness_to_pay", 0.0), ("target_quality", 1.5),
                                         ("max_cost_usd", -1.0), ("strong_share", 2.0)])
def test_policy_spec_rejects_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=field):
        PolicySpec(**{field: value})


def test_exploration_draws_within_the_margin_with_the_stated_propensities():
    import random

    from router.policy import Exploration, explore

    q = np.array([0.9, 0.88, 0.5, 0.89])
    eligible = np.array([True, True, True, False])
    spec = Exploration(rate=0.3, margin=0.05)
    rng, counts, props = random.Random(1), np.zeros(4), {}
    for _ in range(20_000):
        i, p = explore(0, q, eligible, spec, rng)
        counts[i] += 1
        props[i] = p
    # Pool: 0 and 1 (within 0.05 of the choice and eligible); never 2 (too far) or 3.
    assert counts[2] == counts[3] == 0
    assert props == pytest.approx({0: 0.7 + 0.15, 1: 0.15})
    assert counts[1] / counts.sum() == pytest.approx(0.15, abs=0.01)
    assert explore(0, q, eligible, Exploration(), rng) == (0, 1.0)


def test_policies_describe_themselves_for_the_log():
    from router.policy import describe

    spec = PolicySpec(mode="max_cost", max_cost_usd=0.002)
    assert describe(spec) == "max_cost(max_cost_usd=0.002)"
