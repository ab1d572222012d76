"""Router estimators with scikit-learn's shape: ``__init__`` stores, ``fit`` learns, ``predict``.

``fit(x, y)`` takes (n, d) prompt embeddings and an (n, m) score block in [0, 1] (NaN: not
observed) and leaves the run-time predictor in ``predictor_``; the artifact stores only that.
Scores may be fractional (pass rates): every loss here is cross-entropy against soft labels.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone

from router.predictors import (
    EnsemblePredictor,
    KnnPredictor,
    LinearPredictor,
    MfPredictor,
    MlpPredictor,
    TaskClfPredictor,
    TaskMixPredictor,
    neighbour_mean,
)


class _Estimator(BaseEstimator):
    predictor_: Any

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predictor_.predict(np.asarray(x, dtype=np.float32))


class KnnRouter(_Estimator):
    """kNN router; ``k`` and the weighting temperature chosen by leave-one-out Brier score.

    A fixed k (the old 40) is a poor fit for most data: on RouterBench's train rows the
    out-of-fold AIQ ranged from 0.77 (k 10) to 0.847 (k 320) across the grid. Leaving each
    training row out of its own neighbour list costs one search, so the choice needs no folds.
    ``max_rows`` caps how many rows are scored for the choice (a random subset, fixed seed).
    """

    def __init__(self, ks: tuple[int, ...] = (10, 20, 40, 80, 160, 320, 640),
                 temperatures: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5),
                 max_rows: int = 5000, seed: int = 0):
        self.ks = ks
        self.temperatures = temperatures
        self.max_rows = max_rows
        self.seed = seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> KnnRouter:
        y = np.asarray(y, dtype=np.float32)
        full = KnnPredictor(x, y, k=1)
        n = len(full.x)
        if n < 2:  # nothing to leave one out against
            self.loo_brier_, self.k_, self.temperature_ = {}, 1, self.temperatures[0]
            self.predictor_ = full
            return self
        ks = sorted({min(k, n - 1) for k in self.ks})
        rows = np.arange(n)
        if n > self.max_rows:
            rows = np.sort(np.random.default_rng(self.seed).choice(n, self.max_rows, False))
        sims, idx = full.search(full.x[rows], max(ks) + 1)
        # Drop each row from its own list (or the last neighbour, if ties pushed it out).
        keep = idx != rows[:, None]
        keep[keep.all(axis=1), -1] = False
        sims = sims[keep].reshape(len(rows), -1)
        idx = idx[keep].reshape(len(rows), -1)
        truth, seen = y[rows], ~np.isnan(y[rows])
        # The fallback (no neighbour saw the model) leaves the row out too; 0.5 where the
        # row is the only one that saw it.
        total, others = np.nansum(y, axis=0), (~np.isnan(y)).sum(0) - seen
        with np.errstate(invalid="ignore", divide="ignore"):
            fallback = np.where(others > 0, (total - np.where(seen, truth, 0.0)) / others, 0.5)
        self.loo_brier_ = {}
        for k in ks:
            near = y[idx[:, :k]]
            for t in self.temperatures:
                p = neighbour_mean(sims[:, :k], near, t, fallback)
                self.loo_brier_[(k, t)] = float(np.mean((p[seen] - truth[seen]) ** 2))
        self.k_, self.temperature_ = min(self.loo_brier_, key=self.loo_brier_.get)
        full.k, full.temperature = self.k_, self.temperature_
        self.predictor_ = full
        return self


def _soft_logistic(x: np.ndarray, y: np.ndarray, c: float):
    """Logistic regression on soft labels: each row appears as a 1 weighted y and a 0 weighted
    1 - y, which is exactly cross-entropy against y."""
    from sklearn.linear_model import LogisticRegression

    seen = ~np.isnan(y)
    xs, ys = x[seen], y[seen]
    if np.all((ys == 0) | (ys == 1)):
        xx, yy, ww = xs, ys.astype(int), None
    else:
        xx = np.vstack([xs, xs])
        yy = np.r_[np.ones(len(ys), int), np.zeros(len(ys), int)]
        ww = np.r_[ys, 1.0 - ys]
    if len(np.unique(yy[ww > 0] if ww is not None else yy)) < 2:
        return None  # constant column: predict its mean
    return LogisticRegression(C=c, max_iter=2000).fit(xx, yy, sample_weight=ww)


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    seen = ~np.isnan(y)
    return float(-np.mean(y[seen] * np.log(p[seen]) + (1 - y[seen]) * np.log(1 - p[seen])))


class LinearRouter(_Estimator):
    """Per-model logistic regression; one C for all models, chosen by k-fold cross-validation."""

    def __init__(self, cs: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0), cv: int = 5,
                 seed: int = 0):
        self.cs = cs
        self.cv = cv
        self.seed = seed

    def _fit_all(self, x: np.ndarray, y: np.ndarray, c: float) -> LinearPredictor:
        d, m = x.shape[1], y.shape[1]
        w, b = np.zeros((d, m)), np.zeros(m)
        for j in range(m):
            model = _soft_logistic(x, y[:, j], c)
            if model is None:
                mean = np.clip(np.nanmean(y[:, j]), 1e-4, 1 - 1e-4)
                b[j] = np.log(mean / (1 - mean))
            else:
                w[:, j], b[j] = model.coef_[0], model.intercept_[0]
        return LinearPredictor(w, b)

    def fit(self, x: np.ndarray, y: np.ndarray) -> LinearRouter:
        folds = np.random.default_rng(self.seed).permutation(len(x)) % self.cv
        self.cv_loss_ = {}
        for c in self.cs:
            losses = []
            for f in range(self.cv):
                tr, va = folds != f, folds == f
                losses.append(_log_loss(self._fit_all(x[tr], y[tr], c).predict(x[va]), y[va]))
            self.cv_loss_[c] = float(np.mean(losses))
        self.c_ = min(self.cv_loss_, key=self.cv_loss_.get)
        self.predictor_ = self._fit_all(x, y, self.c_)
        return self


def _torch_fit(module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
               weight_decay: float, batch: int, patience: int, val_share: float, seed: int):
    """Masked soft-label BCE with AdamW and early stopping on a held-out share of ``x``."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = max(1, int(len(x) * val_share))
    va, tr = order[:n_val], order[n_val:]
    xt = torch.from_numpy(np.asarray(x, np.float32))
    yt = torch.from_numpy(np.nan_to_num(np.asarray(y, np.float32)))
    mt = torch.from_numpy(~np.isnan(y)).float()
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")

    def loss_on(idx):
        out = module(xt[idx])
        return (bce(out, yt[idx]) * mt[idx]).sum() / mt[idx].sum().clamp(min=1)

    best, best_state, stale = float("inf"), None, 0
    for _ in range(epochs):
        module.train()
        for start in range(0, len(tr), batch):
            idx = torch.from_numpy(tr[start : start + batch])
            opt.zero_grad()
            loss_on(idx).backward()
            opt.step()
        rng.shuffle(tr)
        module.eval()
        with torch.no_grad():
            val = float(loss_on(torch.from_numpy(va)))
        if val < best - 1e-5:
            best, stale = val, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    module.load_state_dict(best_state)
    return best


class MlpRouter(_Estimator):
    """A one-hidden-layer MLP with a sigmoid head per model, trained with torch, run in numpy."""

    def __init__(self, hidden: int = 256, dropout: float = 0.3, weight_decay: float = 1e-2,
                 lr: float = 1e-3, epochs: int = 300, batch: int = 128, patience: int = 20,
                 val_share: float = 0.1, seed: int = 0):
        self.hidden, self.dropout, self.weight_decay = hidden, dropout, weight_decay
        self.lr, self.epochs, self.batch, self.patience = lr, epochs, batch, patience
        self.val_share, self.seed = val_share, seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> MlpRouter:
        import torch

        torch.manual_seed(self.seed)
        d, m = x.shape[1], y.shape[1]
        net = torch.nn.Sequential(
            torch.nn.Dropout(self.dropout / 3),
            torch.nn.Linear(d, self.hidden), torch.nn.ReLU(), torch.nn.Dropout(self.dropout),
            torch.nn.Linear(self.hidden, m),
        )
        self.val_loss_ = _torch_fit(net, x, y, epochs=self.epochs, lr=self.lr,
                                    weight_decay=self.weight_decay, batch=self.batch,
                                    patience=self.patience, val_share=self.val_share,
                                    seed=self.seed)
        lin = [layer for layer in net if isinstance(layer, torch.nn.Linear)]
        self.predictor_ = MlpPredictor(
            [(ly.weight.detach().numpy().T.copy(), ly.bias.detach().numpy().copy()) for ly in lin]
        )
        return self


def _mf_module(d: int, m: int, dim: int):
    import torch

    class Mf(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Linear(d, dim, bias=False)
            self.v = torch.nn.Parameter(torch.randn(m, dim) * 0.1)
            self.b = torch.nn.Parameter(torch.zeros(m))

        def forward(self, x):
            return self.p(x) @ self.v.T + self.b

    return Mf()


class MfRouter(_Estimator):
    """Low-rank prompt-by-model factorisation (RouteLLM's ``mf`` idea), trained with torch."""

    def __init__(self, dim: int = 64, weight_decay: float = 1e-3, lr: float = 3e-3,
                 epochs: int = 300, batch: int = 128, patience: int = 20,
                 val_share: float = 0.1, seed: int = 0):
        self.dim, self.weight_decay, self.lr = dim, weight_decay, lr
        self.epochs, self.batch, self.patience = epochs, batch, patience
        self.val_share, self.seed = val_share, seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> MfRouter:
        import torch

        torch.manual_seed(self.seed)
        net = _mf_module(x.shape[1], y.shape[1], self.dim)
        self.val_loss_ = _torch_fit(net, x, y, epochs=self.epochs, lr=self.lr,
                                    weight_decay=self.weight_decay, batch=self.batch,
                                    patience=self.patience, val_share=self.val_share,
                                    seed=self.seed)
        self.predictor_ = MfPredictor(net.p.weight.detach().numpy().T.copy(),
                                      net.v.detach().numpy().copy(), net.b.detach().numpy().copy())
        return self


class EnsembleRouter(_Estimator):
    """The mean of several estimators' predictions."""

    def __init__(self, members: list[Any] | None = None, weights: list[float] | None = None):
        self.members = members
        self.weights = weights

    def fit(self, x: np.ndarray, y: np.ndarray) -> EnsembleRouter:
        members = self.members or [KnnRouter(), LinearRouter(), MlpRouter()]
        self.members_ = [clone(m).fit(x, y) for m in members]
        self.predictor_ = EnsemblePredictor([m.predictor_ for m in self.members_], self.weights)
        return self


def _task_clf(x: np.ndarray, y: np.ndarray, tasks: np.ndarray | None, c: float
              ) -> TaskClfPredictor:
    """A multinomial logistic classifier from embedding to task, and each task's mean score.

    Without task labels there is one task: the prior is every model's mean train score."""
    from sklearn.linear_model import LogisticRegression

    overall = np.nan_to_num(np.nanmean(y, axis=0), nan=0.5)
    names = sorted(set(np.asarray(tasks).tolist())) if tasks is not None else []
    if len(names) < 2:
        return TaskClfPredictor(np.zeros((x.shape[1], 1)), np.zeros(1), overall[None, :])
    label = np.array([names.index(t) for t in np.asarray(tasks).tolist()])
    with np.errstate(all="ignore"):  # a model never scored on one task: use its overall mean
        means = np.array([np.nanmean(y[label == k], axis=0) for k in range(len(names))])
    means = np.where(np.isnan(means), overall, means)
    clf = LogisticRegression(C=c, max_iter=3000).fit(x, label)
    w, b = clf.coef_.T, clf.intercept_
    if len(names) == 2:  # sklearn keeps one logit for two classes: softmax([0, z]) = sigmoid(z)
        w, b = np.hstack([np.zeros_like(w), w]), np.r_[0.0, b]
    return TaskClfPredictor(w, b, means)


class TaskMixRouter(_Estimator):
    """The mean of ``seeds`` small MLPs, blended with a predicted-task prior.

    ``alpha`` * MLPs + (1 - ``alpha``) * (P(task | prompt) @ per-task mean scores). The prior
    carries the per-task level each model reaches; the MLPs add what the prompt says beyond its
    task. ``fit`` takes the training rows' task labels (``tasks``); without them the prior is
    each model's overall mean (plain shrinkage of the MLPs).
    """

    def __init__(self, hidden: int = 64, seeds: int = 3, alpha: float = 0.5, c: float = 1.0):
        self.hidden, self.seeds, self.alpha, self.c = hidden, seeds, alpha, c

    def fit(self, x: np.ndarray, y: np.ndarray, tasks: np.ndarray | None = None
            ) -> TaskMixRouter:
        mlps = [MlpRouter(hidden=self.hidden, seed=s).fit(x, y).predictor_
                for s in range(self.seeds)]
        prior = _task_clf(x, y, tasks, self.c)
        weights = [self.alpha / self.seeds] * self.seeds + [1.0 - self.alpha]
        self.predictor_ = TaskMixPredictor([*mlps, prior], weights)
        return self


def fit_with_tasks(est: Any, x: np.ndarray, y: np.ndarray, tasks: np.ndarray | None) -> Any:
    """``est.fit(x, y)``, passing the rows' task labels to estimators whose ``fit`` takes them."""
    if tasks is not None and "tasks" in inspect.signature(est.fit).parameters:
        return est.fit(x, y, tasks=tasks)
    return est.fit(x, y)


ESTIMATORS: dict[str, type] = {
    "knn": KnnRouter,
    "linear": LinearRouter,
    "mlp": MlpRouter,
    "mf": MfRouter,
    "ensemble": EnsembleRouter,
    "taskmix": TaskMixRouter,
}
