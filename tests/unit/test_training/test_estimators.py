import numpy as np
import pytest

from router.artifact import (
    ArtifactError,
    CostModel,
    DataRef,
    EncoderRef,
    RouterSpec,
    load_router,
    save_router,
)
from training.estimators import ESTIMATORS
from training.fit import fit_cost_model, out_of_fold


def _data(n=600, d=6, m=3, seed=0):
    """Unit-norm features; model j is right where feature j is large (plus noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    logits = 10 * x[:, :m] + np.array([0.5, 0.0, -0.5])
    y = (rng.uniform(size=(n, m)) < 1 / (1 + np.exp(-logits))).astype(float)
    return x, y


def _log_loss(p, y):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _spec(kind, m):
    return RouterSpec(
        name="t", kind=kind, models=[f"m{j}" for j in range(m)], params={},
        encoder=EncoderRef(id="enc", sha256="0" * 64),
        data=DataRef(name="synthetic", sha256="1" * 64, rows=500, splits=["train"]),
        cost_model=CostModel(intercept=[0.01] * m, per_input_token=[0.0] * m),
    )


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_fit_predict_beats_the_mean_and_survives_a_save_load_round_trip(kind, tmp_path):
    x, y = _data()
    est = ESTIMATORS[kind]().fit(x[:500], y[:500])
    pred = est.predict(x[500:])
    assert pred.shape == (100, 3) and np.all((pred >= 0) & (pred <= 1))
    baseline = _log_loss(np.broadcast_to(y[:500].mean(0), (100, 3)), y[500:])
    assert _log_loss(pred, y[500:]) < baseline - 0.05

    save_router(tmp_path / "r", _spec(kind, 3), est.predictor_)
    loaded = load_router(tmp_path / "r")
    assert loaded.spec.kind == kind
    np.testing.assert_allclose(loaded.predict(x[500:]), pred, atol=2e-3)


def test_soft_labels_and_missing_scores_are_accepted():
    x, y = _data(n=300)
    y = y * 0.5 + 0.25
    y[::7, 1] = np.nan
    for kind in ("linear", "mlp", "knn"):
        pred = ESTIMATORS[kind]().fit(x, y).predict(x)
        assert not np.isnan(pred).any()


def test_out_of_fold_predictions_never_see_their_row():
    x, y = _data(n=200)
    knn = ESTIMATORS["knn"](ks=(1,))
    # 1-NN on its own row would copy the label exactly; out of fold it cannot.
    assert not np.array_equal(out_of_fold(knn, x, y), y)
    np.testing.assert_array_equal(knn.fit(x, y).predict(x), y)


def test_cost_model_recovers_a_linear_price():
    tokens = np.array([10, 20, 30, 40])
    costs = np.stack([0.001 + 1e-5 * tokens, np.full(4, 0.002)], axis=1)
    cm = fit_cost_model(tokens, costs)
    np.testing.assert_allclose(cm.intercept, [0.001, 0.002], atol=1e-12)
    np.testing.assert_allclose(cm.per_input_token, [1e-5, 0.0], atol=1e-12)


def test_loading_a_folder_that_is_not_a_router_says_so(tmp_path):
    with pytest.raises(ArtifactError, match=r"no router\.json"):
        load_router(tmp_path)
    (tmp_path / "router.json").write_text('{"name": "x"}')
    with pytest.raises(ArtifactError, match=r"router\.json"):
        load_router(tmp_path)


def test_knn_chooses_k_by_leave_one_out_brier_score():
    # Hand-computed: three unit vectors at 0, 10 and 90 degrees with labels 1, 0, 1.
    # Leave-one-out 1-NN predicts 0, 1, 0 (each row's nearest other row): Brier 1.0.
    # Uniform 2-NN predicts the other two rows' mean, 0.5, 1, 0.5: Brier (0.25 + 1 + 0.25) / 3.
    a = np.radians([0.0, 10.0, 90.0])
    x = np.stack([np.cos(a), np.sin(a)], axis=1)
    y = np.array([[1.0], [0.0], [1.0]])
    knn = ESTIMATORS["knn"](ks=(1, 2), temperatures=(1e9,)).fit(x, y)
    assert knn.loo_brier_ == pytest.approx({(1, 1e9): 1.0, (2, 1e9): 0.5})
    assert (knn.k_, knn.predictor_.k) == (2, 2)


def test_knn_picks_a_wide_neighbourhood_for_noisy_labels_and_ignores_row_scale():
    x, y = _data(n=600)
    knn = ESTIMATORS["knn"]().fit(x[:500], y[:500])
    assert knn.k_ >= 20  # labels are noisy draws: one neighbour is a coin flip
    one = ESTIMATORS["knn"](ks=(1,)).fit(x[:500], y[:500])
    assert _log_loss(knn.predict(x[500:]), y[500:]) < _log_loss(
        np.clip(one.predict(x[500:]), 0.05, 0.95), y[500:])
    # Similarity is cosine over the whole row: scaling a query changes nothing.
    np.testing.assert_allclose(knn.predict(3 * x[500:]), knn.predict(x[500:]), atol=1e-6)


def test_knn_fits_a_single_row():
    knn = ESTIMATORS["knn"]().fit(np.array([[1.0, 0.0]]), np.array([[0.7, np.nan]]))
    pred = knn.predict(np.array([[0.0, 1.0]]))
    assert knn.k_ == 1 and pred[0, 0] == pytest.approx(0.7)


def test_knn_folders_saved_before_unit_rows_keep_their_raw_inner_product(tmp_path):
    import json

    from router.predictors import KnnPredictor

    # Rows of different lengths: raw inner product and cosine pick different neighbours.
    x = np.array([[1.0, 0.0], [3.0, 3.0]])
    y = np.array([[1.0], [0.0]])
    query = np.array([[1.0, 0.2]])
    assert ESTIMATORS["knn"](ks=(1,)).fit(x, y).predict(query)[0, 0] == 1.0  # cosine: [1, 0]
    # A folder written before rows were scaled: raw rows, no "unit_rows" in its params.
    save_router(tmp_path / "r", _spec("knn", 1), KnnPredictor(x, y, k=1, unit_rows=False))
    spec = json.loads((tmp_path / "r" / "router.json").read_text())
    del spec["params"]["unit_rows"]
    (tmp_path / "r" / "router.json").write_text(json.dumps(spec))
    np.testing.assert_allclose(load_router(tmp_path / "r").predict(query), [[0.0]])  # [3, 3]


def test_calibration_refits_knn_with_its_chosen_neighbourhood():
    from training.fit import frozen_hyperparameters

    x, y = _data(n=300)
    knn = ESTIMATORS["knn"]().fit(x, y)
    frozen = frozen_hyperparameters(knn)
    assert (frozen.ks, frozen.temperatures) == ((knn.k_,), (knn.temperature_,))
