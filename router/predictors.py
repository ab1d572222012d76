"""Trained quality predictors at run time: embeddings in, per-model predicted quality out.

Every predictor maps an (n, d) block of L2-normalised prompt embeddings to an (n, m) block of
predicted scores in [0, 1], one column per model of the artifact. Weights live in plain numpy
arrays (saved as npz by ``router.artifact``): no pickled objects, no framework at run time but
numpy, and FAISS for the nearest-neighbour kind. One registry, ``PREDICTORS``, names the kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import numpy as np


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # tanh form: no overflow warnings for large |z|


class Predictor(Protocol):
    """What the router runs: ``predict`` plus a round trip through plain arrays."""

    kind: ClassVar[str]

    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def arrays(self) -> dict[str, np.ndarray]: ...

    def params(self) -> dict[str, Any]: ...

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]
    ) -> Predictor: ...


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def column_means(scores: np.ndarray) -> np.ndarray:
    """Each column's mean over its observed (non-NaN) rows; NaN, silently, where none is."""
    seen = ~np.isnan(scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen, scores, 0.0).sum(0) / seen.sum(0)


def neighbour_mean(sims: np.ndarray, scores: np.ndarray, temperature: float,
                   fallback: np.ndarray) -> np.ndarray:
    """(n, m) weighted mean of neighbours' scores: ``sims`` (n, k) sorted best first, ``scores``
    (n, k, m) with NaN where a model was not run; weights ``exp((sim - best) / temperature)``.
    A model no neighbour saw gets ``fallback``."""
    w = np.exp((sims - sims[:, :1]) / temperature)[:, :, None]
    seen = ~np.isnan(scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (np.where(seen, scores, 0.0) * w).sum(1) / (seen * w).sum(1)
    return np.where(np.isnan(out), fallback, out)


class KnnPredictor:
    """Weighted mean score of the ``k`` most similar training prompts (cosine, exact FAISS).

    Neighbours are weighted by ``exp(similarity / temperature)`` so the closest prompts count
    most; a model that was not run on a neighbour (NaN) is averaged over the others. Rows are
    scaled to unit length as a whole, so a router that reads more than the sentence embedding
    (inner layers, surface features) still compares prompts by cosine. Folders saved before
    that (no ``unit_rows`` in their params) keep the raw inner product they were tuned with.
    """

    kind: ClassVar[str] = "knn"

    def __init__(self, x: np.ndarray, scores: np.ndarray, k: int = 40, temperature: float = 0.05,
                 unit_rows: bool = True):
        self.unit_rows = bool(unit_rows)
        self.x = self._rows(x)
        self.scores = np.asarray(scores, dtype=np.float32)
        self._fallback = column_means(self.scores)  # once, not per request
        self.k = int(min(k, len(self.x)))
        self.temperature = float(temperature)
        self._index: Any = None

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Similarities and row numbers of the ``k`` nearest training rows, best first."""
        import faiss  # imported here: only this kind needs it

        if self._index is None:
            self._index = faiss.IndexFlatIP(self.x.shape[1])
            self._index.add(self.x)
        return self._index.search(self._rows(x), k)

    def _rows(self, x: np.ndarray) -> np.ndarray:
        return _unit_rows(x) if self.unit_rows else np.ascontiguousarray(x, dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        sims, idx = self.search(x, self.k)
        return neighbour_mean(sims, self.scores[idx], self.temperature, self._fallback)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"x": self.x.astype(np.float16), "scores": self.scores}

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature, "unit_rows": self.unit_rows}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]):
        params = {"unit_rows": False, **params}  # saved before rows were scaled
        return cls(arrays["x"].astype(np.float32), arrays["scores"], **params)


class LinearPredictor:
    """One logistic model per candidate: ``sigmoid(x @ w + b)``."""

    kind: ClassVar[str] = "linear"

    def __init__(self, w: np.ndarray, b: np.ndarray):
        self.w = np.asarray(w, dtype=np.float32)
        self.b = np.asarray(b, dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(x @ self.w + self.b)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"w": self.w, "b": self.b}

    def params(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]):
        return cls(arrays["w"], arrays["b"])


class MlpPredictor:
    """A small multi-output MLP: ReLU hidden layers, one sigmoid output per candidate."""

    kind: ClassVar[str] = "mlp"

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]]):
        self.layers = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in layers]

    def predict(self, x: np.ndarray) -> np.ndarray:
        h = x
        for w, b in self.layers[:-1]:
            h = np.maximum(h @ w + b, 0.0)
        w, b = self.layers[-1]
        return _sigmoid(h @ w + b)

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(self.layers):
            out[f"w{i}"], out[f"b{i}"] = w, b
        return out

    def params(self) -> dict[str, Any]:
        return {"n_layers": len(self.layers)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]):
        n = int(params["n_layers"])
        return cls([(arrays[f"w{i}"], arrays[f"b{i}"]) for i in range(n)])


class MfPredictor:
    """Matrix factorisation in the spirit of RouteLLM's ``mf`` router.

    A prompt is projected into a small latent space (``x @ p``) and scored against each model's
    latent vector: ``sigmoid((x @ p) @ v.T + b)``. Models share the projection, so a model seen on
    few prompts borrows strength from the others: the reason to prefer it on sparse data.
    """

    kind: ClassVar[str] = "mf"

    def __init__(self, p: np.ndarray, v: np.ndarray, b: np.ndarray):
        self.p = np.asarray(p, np.float32)
        self.v = np.asarray(v, np.float32)
        self.b = np.asarray(b, np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid((x @ self.p) @ self.v.T + self.b)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"p": self.p, "v": self.v, "b": self.b}

    def params(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]):
        return cls(arrays["p"], arrays["v"], arrays["b"])


class EnsemblePredictor:
    """A weighted mean of member predictors' outputs."""

    kind: ClassVar[str] = "ensemble"

    def __init__(self, members: list[Predictor], weights: list[float] | None = None):
        self.members = members
        w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
        self.weights = (w / w.sum()).tolist()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return sum(w * m.predict(x) for w, m in zip(self.weights, self.members, strict=True))

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            f"m{i}.{key}": arr
            for i, member in enumerate(self.members)
            for key, arr in member.arrays().items()
        }

    def params(self) -> dict[str, Any]:
        members = [{"kind": m.kind, "params": m.params()} for m in self.members]
        return {"members": members, "weights": self.weights}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]):
        members = []
        for i, spec in enumerate(params["members"]):
            prefix = f"m{i}."
            sub = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            members.append(PREDICTORS[spec["kind"]].from_arrays(sub, spec["params"]))
        return cls(members, params["weights"])


class TaskClfPredictor:
    """Predicted-task prior: ``softmax(x @ w + b) @ means``, each task's mean train score per
    model weighted by a linear classifier's probability that the prompt belongs to that task."""

    kind: ClassVar[str] = "task-clf"

    def __init__(self, w: np.ndarray, b: np.ndarray, means: np.ndarray):
        self.w = np.asarray(w, np.float32)
        self.b = np.asarray(b, np.float32)
        self.means = np.asarray(means, np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.w + self.b
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)) @ self.means

    def arrays(self) -> dict[str, np.ndarray]:
        return {"w": self.w, "b": self.b, "means": self.means}

    def params(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]):
        return cls(arrays["w"], arrays["b"], arrays["means"])


class TaskMixPredictor(EnsemblePredictor):
    """An ensemble of small MLPs blended with a :class:`TaskClfPredictor` (``taskmix`` kind)."""

    kind: ClassVar[str] = "taskmix"


PREDICTORS: dict[str, type] = {
    cls.kind: cls
    for cls in (KnnPredictor, LinearPredictor, MlpPredictor, MfPredictor, EnsemblePredictor,
                TaskClfPredictor, TaskMixPredictor)
}
