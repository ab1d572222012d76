import numpy as np
import pytest

from router.artifact import CostModel, DataRef, EncoderRef, RouterSpec, load_router, save_router
from router.predictors import PREDICTORS, TaskClfPredictor
from training.estimators import ESTIMATORS, TaskMixRouter, fit_with_tasks


def _tasked(n=600, d=8, m=3, n_tasks=3, seed=0):
    """Each task sits in its own direction of the embedding; model j is strong on task j."""
    rng = np.random.default_rng(seed)
    tasks = rng.integers(0, n_tasks, size=n)
    x = rng.normal(size=(n, d)) * 0.3
    x[np.arange(n), tasks] += 2.0
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    p = np.full((n, m), 0.2)
    p[np.arange(n), tasks % m] = 0.9
    y = (rng.uniform(size=(n, m)) < p).astype(float)
    return x, y, np.array([f"t{k}" for k in tasks])


def _spec(m):
    return RouterSpec(
        name="t", kind="taskmix", models=[f"m{j}" for j in range(m)], params={},
        encoder=EncoderRef(id="enc", sha256="0" * 64),
        data=DataRef(name="synthetic", sha256="1" * 64, rows=500, splits=["train"]),
        cost_model=CostModel(intercept=[0.01] * m, per_input_token=[0.0] * m),
    )


@pytest.mark.parametrize("n_tasks", [2, 3])
def test_task_prior_learns_each_tasks_level_and_survives_a_round_trip(n_tasks, tmp_path):
    x, y, tasks = _tasked(n_tasks=n_tasks)
    est = fit_with_tasks(TaskMixRouter(seeds=2), x[:500], y[:500], tasks[:500])
    prior = est.predictor_.members[-1]
    assert isinstance(prior, TaskClfPredictor) and prior.means.shape == (n_tasks, 3)
    # The prior alone routes each held-out prompt to the model strong on its task.
    best = prior.predict(x[500:]).argmax(axis=1)
    truth = np.array([int(t[1:]) % 3 for t in tasks[500:]])
    assert (best == truth).mean() > 0.95
    pred = est.predict(x[500:])
    assert pred.shape == (100, 3) and np.all((pred >= 0) & (pred <= 1))
    assert est.predictor_.weights == pytest.approx([0.25, 0.25, 0.5])

    save_router(tmp_path / "r", _spec(3), est.predictor_)
    loaded = load_router(tmp_path / "r")
    assert loaded.spec.kind == "taskmix" and "taskmix" in PREDICTORS
    np.testing.assert_allclose(loaded.predict(x[500:]), pred, atol=2e-3)


def test_without_tasks_the_prior_is_the_overall_mean():
    x, y, tasks = _tasked(n=300)
    plain = ESTIMATORS["taskmix"](seeds=1).fit(x, y)
    np.testing.assert_allclose(plain.predictor_.members[-1].predict(x[:5]),
                               np.broadcast_to(y.mean(0), (5, 3)), atol=1e-6)
    # fit_with_tasks leaves estimators without a ``tasks`` argument alone.
    lin = fit_with_tasks(ESTIMATORS["linear"](cs=(1.0,)), x, y, tasks)
    assert lin.predict(x[:5]).shape == (5, 3)
