"""Off-policy estimators on synthetic bandit logs whose true values are known."""

import numpy as np
import pytest

from eval import ope

# Reward probability of arm j in context x (x alternates 0, 1); arm costs are fixed.
P = np.array([[0.2, 0.5, 0.8], [0.9, 0.4, 0.1]])
ARM_COST = np.array([1.0, 2.0, 3.0])
BEST = np.array([2, 0])  # the target: the best arm of each context
TRUE_QUALITY = 0.5 * 0.8 + 0.5 * 0.9
TRUE_COST = 0.5 * 3.0 + 0.5 * 1.0


def _uniform_log(n=3000, seed=1):
    """Uniform-random logging over 3 arms: contexts, logged arms, propensities, rewards."""
    rng = np.random.default_rng(seed)
    x = np.arange(n) % 2
    a = rng.integers(0, 3, n)
    r = (rng.uniform(size=n) < P[x, a]).astype(float)
    return x, a, np.full(n, 1 / 3), r


def _evaluate(x, a, p, r, reward_model, counts):
    return ope.evaluate_target(BEST[x], a, p, r, ARM_COST[a], reward_model,
                               np.tile(ARM_COST, (len(x), 1)), counts)


def test_ips_snips_and_dr_cover_the_true_value_of_the_target():
    x, a, p, r = _uniform_log()
    counts = ope.resample_counts(len(x), 1000, seed=0)
    rough = np.full((len(x), 3), 0.5)  # an uninformative reward model: DR leans on IPS
    got = _evaluate(x, a, p, r, rough, counts)
    for name in ope.ESTIMATORS:
        lo, hi = got[name]["quality"]["ci95"]
        assert lo < TRUE_QUALITY < hi, (name, got[name]["quality"])
        assert abs(got[name]["quality"]["estimate"] - TRUE_QUALITY) < 0.05
        lo, hi = got[name]["cost"]["ci95"]
        assert lo <= TRUE_COST <= hi, (name, got[name]["cost"])
    # The target agrees with uniform logging on a third of the rows, each weighted 3.
    assert got["agreement"] == pytest.approx(1 / 3, abs=0.03)
    assert got["ess"] == pytest.approx(got["agreement"] * len(x))


def test_dr_with_the_true_reward_model_is_much_tighter_than_ips():
    x, a, p, r = _uniform_log()
    counts = ope.resample_counts(len(x), 1000, seed=0)
    got = _evaluate(x, a, p, r, P[x], counts)

    def width(s):
        return s["ci95"][1] - s["ci95"][0]

    assert width(got["dr"]["quality"]) < 0.5 * width(got["ips"]["quality"])
    lo, hi = got["dr"]["quality"]["ci95"]
    assert lo < TRUE_QUALITY < hi
    # A cost model that is exactly right leaves nothing to correct: DR is the target's cost
    # on these contexts, uncertain only through which contexts a resample draws.
    assert got["dr"]["cost"]["estimate"] == pytest.approx(TRUE_COST)
    exact = ARM_COST[BEST[x]]
    assert got["dr"]["cost"]["ci95"] == pytest.approx(ope.ci95(counts @ exact / len(x)))


def test_a_target_that_never_agrees_gets_ips_zero_and_the_reward_models_value():
    n = 200
    logged, target = np.zeros(n, int), np.ones(n, int)  # logging never explored arm 1
    rewards = np.ones(n)
    model = np.column_stack([np.full(n, 0.9), np.linspace(0.2, 0.6, n)])
    counts = ope.resample_counts(n, 200, seed=0)
    got = ope.evaluate_target(target, logged, np.ones(n), rewards, np.ones(n), model,
                              np.ones((n, 2)), counts)
    assert got["ips"]["quality"]["estimate"] == 0.0
    assert got["snips"]["quality"] == {"estimate": None, "ci95": [None, None]}
    assert got["dr"]["quality"]["estimate"] == pytest.approx(0.4)
    assert (got["agreement"], got["ess"]) == (0.0, 0.0)


def test_the_paired_dr_difference_of_a_target_with_itself_is_exactly_zero():
    x, a, p, r = _uniform_log(n=500)
    w = ope.importance_weights(BEST[x], a, p)
    rows = np.arange(len(x))
    model = (P[x][rows, BEST[x]], P[x][rows, a])
    got = ope.paired_dr_diff(w, w, r, model, model, ope.resample_counts(len(x), 300, 0))
    assert got == {"estimate": 0.0, "ci95": [0.0, 0.0]}


def test_resample_counts_draw_n_rows_per_replicate_reproducibly():
    counts = ope.resample_counts(50, 40, seed=3)
    assert counts.shape == (40, 50) and (counts.sum(axis=1) == 50).all()
    np.testing.assert_array_equal(counts, ope.resample_counts(50, 40, seed=3))
    assert not np.array_equal(counts, ope.resample_counts(50, 40, seed=4))


def test_the_logging_policy_is_its_plain_mean():
    r, c = np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.1, 0.2, 0.3, 0.4])
    got = ope.logging_policy(r, c, ope.resample_counts(4, 100, 0))
    assert got["quality"]["estimate"] == 0.75 and got["cost"]["estimate"] == pytest.approx(0.25)
    assert 0.0 <= got["quality"]["ci95"][0] <= 0.75 <= got["quality"]["ci95"][1] <= 1.0


def test_bandit_from_rows_keeps_scored_answers_and_defaults_propensity_to_one():
    rows = [
        {"prompt": "a", "embedding": [1, 0], "model": "m1", "propensity": 0.25, "score": 1.0,
         "cost_usd": 0.01},
        {"prompt": "b", "embedding": [0, 1], "model": "m2", "propensity": None, "score": 0.5,
         "cost_usd": 0.02},
        {"prompt": "c", "embedding": None, "model": "m1", "propensity": 1.0, "score": None,
         "cost_usd": 0.01},  # not scored yet: no feedback
        {"prompt": "d", "embedding": None, "model": None, "score": None, "cost_usd": None},
    ]
    b = ope.bandit_from_rows(rows)
    assert len(b) == 2 and b.models == ["m1", "m2"] and b.prompts == ["a", "b"]
    np.testing.assert_array_equal(b.propensities, [0.25, 1.0])
    np.testing.assert_array_equal(b.rewards, [1.0, 0.5])
    np.testing.assert_array_equal(b.embeddings, [[1, 0], [0, 1]])
    # One row without an embedding: routers read the prompts instead.
    mixed = [{**rows[0]}, {**rows[1], "embedding": None}]
    assert ope.bandit_from_rows(mixed).embeddings is None


@pytest.mark.parametrize(("row", "message"), [
    ({"prompt": "", "embedding": None, "model": "m", "score": 1, "cost_usd": 0.1},
     "neither a prompt nor an embedding"),
    ({"prompt": "p", "model": "m", "score": 1, "cost_usd": None}, "without cost_usd"),
    ({"prompt": "p", "model": "m", "score": 1, "cost_usd": 0.1, "propensity": 0.0},
     r"propensities must be in \(0, 1\]"),
])
def test_bandit_from_rows_refuses_rows_it_cannot_estimate_from(row, message):
    with pytest.raises(ValueError, match=message):
        ope.bandit_from_rows([row])
