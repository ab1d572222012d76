"""Offline A/B: stand-in columns, the paired bootstrap, off-policy mode and the summary."""

import numpy as np
import pytest

from eval import ab, metrics, ope
from router.artifact import CostModel, DataRef, EncoderRef, RouterSpec, TrainedRouter
from router.encoders import load_encoder
from tests.static_tables import TOPICS, topics_table


def _router(name, models=("cheap", "dear")):
    """A router identity for hand-made replays (its predictions are given, not computed)."""
    spec = RouterSpec(name=name, kind="knn", models=list(models), params={},
                      encoder=EncoderRef(id="enc", sha256="0" * 64),
                      data=DataRef(name="hand", sha256="1" * 64, rows=1, splits=["train"]),
                      cost_model=CostModel(intercept=[0.0] * len(models),
                                           per_input_token=[0.0] * len(models)))
    return TrainedRouter(spec, predictor=None)


def _hard_easy_table(n=300, seed=0):
    """'cheap' (cost 1) answers the easy prompts, 'dear' (cost 10) answers all."""
    hard = np.random.default_rng(seed).uniform(size=n) < 0.5
    scores = np.column_stack([(~hard).astype(float), np.ones(n)])
    costs = np.tile([1.0, 10.0], (n, 1))
    return hard, scores, costs


def test_prediction_columns_use_own_columns_then_stand_ins_and_name_the_missing():
    cols = ab.prediction_columns(["x", "y"], ["y", "z", "x"], {"z": "x", "y": "x"})
    assert cols == [1, 0, 0]  # y has its own column, so its stand-in is ignored
    with pytest.raises(ValueError, match=r"no column for z, w \(pass --config"):
        ab.prediction_columns(["x", "y"], ["x", "z", "w"])
    with pytest.raises(ValueError, match=r"no column for z .*stand-ins are not router models"):
        ab.prediction_columns(["x", "y"], ["x", "z"], {"z": "q"})


def test_tradeoff_picks_give_exactly_the_sweep_of_eval_routing():
    rng = np.random.default_rng(0)
    pq, pc = rng.uniform(size=(80, 5)), rng.uniform(0.001, 0.01, size=(80, 5))
    pc[:, 3] = pc[:, 1]  # exact cost ties go through the same tie-break
    ts, tc = rng.uniform(size=(80, 5)), rng.uniform(size=(80, 5))
    lambdas = metrics.default_lambdas(pq, pc, n=40)
    picks = ab.tradeoff_picks(pq, pc, lambdas)
    rows = np.arange(80)
    curve = np.column_stack([tc[rows, picks].mean(axis=1), ts[rows, picks].mean(axis=1)])
    np.testing.assert_array_equal(curve, metrics.sweep_tradeoff(pq, pc, ts, tc, lambdas))


def test_paired_bootstrap_finds_a_strictly_better_router():
    hard, scores, costs = _hard_easy_table()
    n = len(hard)
    # A cannot tell prompts apart (ties go to the cheaper model); B knows which are hard.
    a = ab.Replay(_router("blind"), np.full((n, 2), 0.5), costs.copy())
    b = ab.Replay(_router("sighted"), np.column_stack([(~hard) * 1.0, np.ones(n)]),
                  costs.copy())
    got = ab.compare_on_table(scores, costs, a, b, replicates=500, seed=0)
    assert got["a"]["quality"] == pytest.approx(1 - hard.mean())  # always cheap
    assert got["b"]["quality"] == 1.0  # dear exactly where needed
    for key in ("quality", "cost", "aiq"):
        d = got["diff"][key]
        assert d["estimate"] == pytest.approx(got["b"][key] - got["a"][key])
        assert d["ci95"][0] > 0, key  # B is better and costs more: the CI excludes 0
        assert d["ci95"][0] <= d["estimate"] <= d["ci95"][1]
    assert got["b"]["aiq"] > got["a"]["aiq"]
    assert (got["bootstrap"], got["seed"], got["n"]) == (500, 0, n)


def test_paired_bootstrap_of_a_router_against_itself_is_exactly_zero():
    hard, scores, costs = _hard_easy_table(seed=1)
    rng = np.random.default_rng(2)
    pred = np.clip((~hard)[:, None] * [0.7, 0.2] + rng.uniform(0, 0.5, (len(hard), 2)), 0, 1)
    a = ab.Replay(_router("one"), pred, costs.copy())
    b = ab.Replay(_router("two"), pred.copy(), costs.copy())
    got = ab.compare_on_table(scores, costs, a, b, replicates=300, seed=5,
                              willingness_to_pay=0.2)
    for key in ("quality", "cost", "aiq"):
        assert got["diff"][key] == {"estimate": 0.0, "ci95": [0.0, 0.0]}
    # At willingness to pay 0.2 the dear model's 9 extra units never pay for 1 quality unit.
    assert got["a"]["cost"] == 1.0 and got["willingness_to_pay"] == 0.2


@pytest.fixture()
def tiny(static_router):
    """(router, its encoder) from the session's knn router over 'strong' and 'weak'."""
    from router.artifact import load_router

    folder, out = static_router
    return load_router(out), load_encoder(folder)


def test_replay_borrows_a_stand_ins_quality_but_not_its_cost(tiny, embed_cache):
    router, encoder = tiny
    prompts = [f"Question {i}: explain {TOPICS[i % 8]} with an example." for i in range(8)]
    fallback = np.array([0.5, 0.25, 0.125])
    r = ab.replay(router, ["strong", "weak", "mid"], fallback, prompts=prompts,
                  stands_in={"mid": "weak"}, encoder=encoder)
    own = ab.replay(router, ["strong", "weak"], fallback[:2], prompts=prompts, encoder=encoder)
    np.testing.assert_array_equal(r.quality[:, 2], own.quality[:, 1])
    np.testing.assert_array_equal(r.cost[:, :2], own.cost)
    np.testing.assert_array_equal(r.cost[:, 2], 0.125)  # the model's own mean, not weak's
    np.testing.assert_allclose(own.cost[0], [0.01, 0.001], rtol=1e-6)  # the router's model
    assert r.borrowed == {"mid": "weak"} and own.borrowed == {}
    with pytest.raises(ValueError, match="no column for mid"):
        ab.replay(router, ["strong", "mid"], fallback[:2], prompts=prompts, encoder=encoder)


def _topics_bandit(n=160, seed=0):
    """Uniform-random logging between 'strong' and 'weak' on the topics prompts."""
    table = topics_table()
    rng = np.random.default_rng(seed)
    idx = np.arange(n) % len(table)
    arm = rng.integers(0, 2, n)
    models = [table.models[j] for j in arm]
    return ope.LoggedBandit(prompts=[table.prompts[i] for i in idx], embeddings=None,
                            models=models, propensities=np.full(n, 0.5),
                            rewards=table.scores[idx, arm], costs=table.costs[idx, arm])


def test_ab_on_logs_estimates_both_routers_and_a_paired_dr_difference(tiny, embed_cache):
    router, encoder = tiny
    bandit = _topics_bandit()
    got = ab.ab_on_logs(router, router, bandit, willingness_to_pay=1.0, replicates=200,
                        encoders={"tiny-static": encoder})
    assert got["mode"] == "logs" and got["n"] == len(bandit)
    assert got["models"] == ["strong", "weak"]
    for side in ("a", "b"):
        for est in ("ips", "snips", "dr"):
            assert set(got[side][est]) == {"quality", "cost"}
            assert set(got[side][est]["quality"]) == {"estimate", "ci95"}
        assert 0 < got[side]["agreement"] < 1
    assert got["a"]["dr"] == got["b"]["dr"]
    assert got["diff"]["quality"] == {"estimate": 0.0, "ci95": [0.0, 0.0]}
    # The logging policy answered right whenever it drew 'strong' or an easy prompt.
    assert got["logging"]["quality"]["estimate"] == pytest.approx(bandit.rewards.mean())
    text = ab.render_markdown(got)
    assert "logged traffic" in text and "(DR)" in text and "effective sample size" in text
    assert f"A: {router.spec.name}" in text and f"B: {router.spec.name}" in text


def test_markdown_names_both_routers_and_the_difference():
    hard, scores, costs = _hard_easy_table(n=50)
    a = ab.Replay(_router("incumbent"), np.full((50, 2), 0.5), costs.copy())
    b = ab.Replay(_router("candidate"), np.column_stack([~hard * 1.0, np.ones(50)]),
                  costs.copy(), borrowed={"dear": "cheap"})
    got = {"mode": "data", "dataset": "hand", "split": "test",
           **ab.compare_on_table(scores, costs, a, b, replicates=100, seed=0)}
    text = ab.render_markdown(got)
    assert "A: incumbent" in text and "B: candidate" in text
    assert f"{got['diff']['quality']['estimate']:+.4f}" in text
    assert "B predicts by stand-ins: dear as cheap." in text


def test_the_log_becomes_bandit_feedback_of_its_scored_policy_rows(tmp_path):
    from router.traffic import ScoreRow, TrafficLog, TrafficRecord

    log = TrafficLog(f"sqlite:///{tmp_path / 't.sqlite3'}")
    for i, propensity in enumerate([0.5, 1.0, None, 0.25]):
        log.write(TrafficRecord(id=f"r{i}", ts=10.0 + i, status=200, model=f"m{i % 2}",
                                prompt=f"p{i}", answer="x", cost_usd=0.1 * i,
                                propensity=propensity))
    log.flush()
    log.write_scores([ScoreRow(f"r{i}", "reference", float(i % 2)) for i in (0, 1, 2)])
    bandit = ab.bandit_from_log(log)
    # r2 answered after a fallback (no propensity): no bandit sample; r3 is unscored.
    assert bandit.models == ["m0", "m1"] and list(bandit.propensities) == [0.5, 1.0]
    assert list(bandit.rewards) == [0.0, 1.0] and bandit.prompts == ["p0", "p1"]
    assert len(ab.bandit_from_log(log, since=11.0)) == 1
    log.close()


def test_logs_mode_estimates_only_after_the_routers_training_traffic(tmp_path, capsys):
    import argparse
    import json

    from service.cli_loop import _after_training

    for name, last in (("a", None), ("b", "1970-01-01T00:01:40+00:00")):
        (tmp_path / name).mkdir()
        card = {"traffic": {"window": {"last": last}}} if last else {}
        (tmp_path / name / "card.json").write_text(json.dumps(card))
    args = argparse.Namespace(since=None)
    assert _after_training(args, [tmp_path / "a", tmp_path / "b"]) == pytest.approx(100.001)
    assert "after 1970-01-01 00:01:40 UTC" in capsys.readouterr().err
    assert _after_training(args, [tmp_path / "a"]) is None
    assert _after_training(argparse.Namespace(since="1970-01-02"), [tmp_path / "b"]) == 86400


def test_with_catalog_prices_every_router_decides_on_the_gateways_costs(tiny, embed_cache):
    from training.data import count_tokens

    router, encoder = tiny
    prompts = [f"Question {i}: explain {TOPICS[i % 8]} with an example." for i in range(4)]
    prices = {"strong": ab.Price(2.0, 8.0, 10), "mid": ab.Price(1.0, 1.0, 100)}
    r = ab.replay(router, ["strong", "weak", "mid"], np.array([9.0, 9.0, 9.0]),
                  prompts=prompts, stands_in={"mid": "weak"}, encoder=encoder, prices=prices)
    tokens = count_tokens(prompts)
    np.testing.assert_allclose(r.cost[:, 0], (tokens * 2.0 + 10 * 8.0) / 1e6)  # own column
    np.testing.assert_allclose(r.cost[:, 2], (tokens * 1.0 + 100 * 1.0) / 1e6)  # borrowed
    own = ab.replay(router, ["weak"], np.array([9.0]), prompts=prompts, encoder=encoder)
    np.testing.assert_array_equal(r.cost[:, 1], own.cost[:, 0])  # unpriced: its cost model
