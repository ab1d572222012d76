"""Hand-computed checks of eval.metrics and a smoke test of eval.plots."""

import numpy as np
import pytest

from eval import metrics as M
from eval.plots import plot_routing


def test_single_models_ignores_nan():
    got = M.single_models([[1.0, np.nan], [0.0, 1.0]], [[1.0, 2.0], [3.0, np.nan]], ["a", "b"])
    assert got == {"a": {"quality": 0.5, "cost": 2.0}, "b": {"quality": 1.0, "cost": 2.0}}


def test_oracle_breaks_ties_by_cost():
    # row 0: models 0 and 1 tie at 1 -> cheaper model 1 (cost 1); row 1: all 0 -> cost 4.
    q, c = M.oracle([[1, 1, 0], [0, 0, 0]], [[3, 1, 2], [5, 4, 6]])
    assert (q, c) == (0.5, 2.5)
    # a NaN score is never picked
    assert M.oracle([[np.nan, 0.5]], [[0.1, 1.0]]) == (0.5, 1.0)


def test_random_router_curve_joins_cheapest_and_best():
    scores = np.array([[0.5, 0.9, 0.6]])
    costs = np.array([[1.0, 4.0, 2.0]])
    got = M.random_router_curve(scores, costs, n_points=3)
    np.testing.assert_allclose(got, [[1, 0.5], [2.5, 0.7], [4, 0.9]])


def test_upper_hull_drops_dominated_and_under_chord_points():
    pts = [(1, 0.5), (2, 0.6), (3, 0.9), (4, 0.8), (3, 0.7), (2.5, 0.55)]
    # (2, .6) lies under the chord (1,.5)-(3,.9) (0.7 there); (4, .8) costs more for less;
    # (3, .7) is beaten at equal cost.
    np.testing.assert_allclose(M.upper_hull(pts), [[1, 0.5], [3, 0.9]])


def test_upper_hull_equal_quality_keeps_cheapest():
    np.testing.assert_allclose(M.upper_hull([(2, 0.7), (1, 0.7), (5, 0.7)]), [[1, 0.7]])


def test_aiq_flat_line_equals_its_quality():
    assert M.aiq([(1, 0.7), (2, 0.7), (5, 0.7)], 1, 5) == pytest.approx(0.7)


def test_aiq_triangle_then_flat():
    # 0..2 triangle: 0.5*2*1 = 1; 2..4 flat at 1: 2 -> 3 / 4
    assert M.aiq([(0, 0.0), (2, 1.0)], 0, 4) == pytest.approx(0.75)


def test_aiq_zero_before_cheapest_point():
    # [1,2): 0; 2..4 trapezoid (0.5+1)/2*2 = 1.5; 4..5 flat 1 -> 2.5 / 4
    assert M.aiq([(2, 0.5), (4, 1.0)], 1, 5) == pytest.approx(0.625)


def test_aiq_clips_to_range():
    # hull (0,.2)-(2,.6)-(6,1.0); on [1,4]: R(1)=.4, R(2)=.6, R(4)=.8
    # area 1..2 = 0.5, 2..4 = 1.4 -> 1.9 / 3
    assert M.aiq([(0, 0.2), (2, 0.6), (6, 1.0)], 1, 4) == pytest.approx(1.9 / 3)


def test_zero_router_aiq_uses_single_model_range():
    # hull (1,.5)-(3,.9); (2,.6) is under it. (0.5+0.9)/2*2 / 2 = 0.7
    assert M.zero_router_aiq([(1, 0.5), (3, 0.9), (2, 0.6)]) == pytest.approx(0.7)


def test_cost_at_quality():
    pts = [(1, 0.5), (3, 0.9), (2, 0.6)]
    assert M.cost_at_quality(pts, 0.7) == pytest.approx(2.0)  # halfway along (1,.5)-(3,.9)
    assert M.cost_at_quality(pts, 0.4) == 1.0
    assert M.cost_at_quality(pts, 0.9) == pytest.approx(3.0)
    assert M.cost_at_quality(pts, 0.95) is None


# Two-model curve: q_weak 0.5, q_strong 0.9; PGR at shares 0, .25, .5, 1 = 0, .5, .75, 1.
SHARE = [1.0, 0.25, 0.0, 0.5]  # unsorted on purpose
QUAL = [0.9, 0.7, 0.5, 0.8]


def test_pgr():
    assert M.pgr(0.7, 0.5, 0.9) == pytest.approx(0.5)
    np.testing.assert_allclose(M.pgr([0.5, 0.9], 0.5, 0.9), [0.0, 1.0])
    with pytest.raises(ValueError):
        M.pgr(0.7, 0.5, 0.5)


def test_apgr_trapezoid_over_share():
    # .25*(0+.5)/2 + .25*(.5+.75)/2 + .5*(.75+1)/2 = .0625 + .15625 + .4375
    assert M.apgr(SHARE, QUAL, 0.5, 0.9) == pytest.approx(0.65625)


def test_apgr_matches_routellm_formula():
    x, y = np.array([0.0, 0.25, 0.5, 1.0]), np.array([0.5, 0.7, 0.8, 0.9])
    auc = np.trapezoid(y, x)
    weak, strong = np.trapezoid(np.full(4, 0.5), x), np.trapezoid(np.full(4, 0.9), x)
    assert M.apgr(x, y, 0.5, 0.9) == pytest.approx((auc - weak) / (strong - weak))


def test_cpt():
    assert M.cpt(SHARE, QUAL, 0.5, 0.9, 0.5) == pytest.approx(0.25)  # q .7 at share .25
    # q target .82: between (.5,.8) and (1,.9): .5 + .2*.5 = .6
    assert M.cpt(SHARE, QUAL, 0.5, 0.9, 0.8) == pytest.approx(0.6)
    assert M.cpt(SHARE, QUAL, 0.5, 0.9, 0.0) == 0.0
    assert M.cpt(SHARE, QUAL, 0.5, 0.9, 1.1) is None
    # same as RouteLLM's np.interp on a monotone curve
    ref = np.interp(0.82, [0.5, 0.7, 0.8, 0.9], [0.0, 0.25, 0.5, 1.0])
    assert M.cpt(SHARE, QUAL, 0.5, 0.9, 0.8) == pytest.approx(ref)


def test_threshold_curve_by_hand():
    # order by score: p0 (.9), then p2/p3 tied (.5), then p1 (.1); gain = strong - weak
    # = [1, 0, 0, 1]; mean(weak) = .25. k=1: +1/4; k=3: +2/4; k=2 inside the tie: +1.5/4.
    share, qual = M.threshold_curve_two_model([0.9, 0.1, 0.5, 0.5], [1, 1, 0, 1], [0, 1, 0, 0])
    np.testing.assert_allclose(share, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(qual, [0.25, 0.5, 0.625, 0.75, 0.75])
    share, qual = M.threshold_curve_two_model(
        [0.9, 0.1, 0.5, 0.5], [1, 1, 0, 1], [0, 1, 0, 0], n_points=3
    )
    np.testing.assert_allclose(share, [0, 0.5, 1])
    np.testing.assert_allclose(qual, [0.25, 0.625, 0.75])


def test_threshold_curve_constant_score_is_random_router():
    share, qual = M.threshold_curve_two_model(np.zeros(4), [1, 1, 0, 1], [0, 1, 0, 0])
    np.testing.assert_allclose(qual, 0.25 + share * 0.5)  # weak .25 -> strong .75


PQ = np.array([[0.9, 0.6, 0.3], [0.5, 0.8, 0.2]])
PC = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
TS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
TC = np.array([[30.0, 20.0, 10.0], [30.0, 20.0, 10.0]])


def test_sweep_tradeoff_extremes():
    got = M.sweep_tradeoff(PQ, PC, TS, TC, [0.0, 1e6])
    # lambda 0: row 0 -> model 0, row 1 -> model 1: cost (30+20)/2, quality 1
    # huge lambda: both -> model 2: cost 10, quality (0+1)/2
    np.testing.assert_allclose(got, [[25.0, 1.0], [10.0, 0.5]])


def test_sweep_tradeoff_tie_goes_to_cheaper():
    got = M.sweep_tradeoff([[0.5, 0.5]], [[2.0, 1.0]], [[1.0, 0.0]], [[2.0, 1.0]], [0.0])
    np.testing.assert_allclose(got, [[1.0, 0.0]])


def test_default_lambdas_span_best_to_cheapest():
    # positive switch ratios dq/dc: row 0 all .3; row 1 .6 (m1 vs m2) and .15 (m0 vs m2)
    # sorted ratios [.15, .3, .3, .3, .6]: 1st percentile .15 + .04*.15 = .156,
    # 99th .3 + .96*.3 = .588; grid = [0, geomspace(.156, .588, 3), max .6]
    lam = M.default_lambdas(PQ, PC, n=5)
    np.testing.assert_allclose(lam, [0.0, *np.geomspace(0.156, 0.588, 3), 0.6])
    got = M.sweep_tradeoff(PQ, PC, TS, TC, lam)
    np.testing.assert_allclose(got[0], [25.0, 1.0])
    np.testing.assert_allclose(got[-1], [10.0, 0.5])  # every row on its cheapest model
    assert np.all(np.diff(got[:, 0]) <= 0)


def test_plot_routing_writes_png(tmp_path):
    result = {
        "dataset": "toy",
        "single": {"a": {"quality": 0.5, "cost": 0.001}, "b": {"quality": 0.9, "cost": 0.1}},
        "best_single": {"model": "b", "quality": 0.9, "cost": 0.1},
        "oracle": {"quality": 0.95, "cost": 0.02},
        "router": {
            "quality": 0.85,
            "cost": 0.03,
            "aiq": 0.8,
            "curve": [[0.001, 0.5], [0.03, 0.85], [0.1, 0.9]],
        },
        "zero_router_aiq": 0.7,
        "extra_curves": {"random": [[0.001, 0.5], [0.1, 0.9]]},
    }
    out = plot_routing(result, tmp_path / "routing.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
