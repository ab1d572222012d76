"""A trained router on disk: ``router.json`` (what it is) + ``weights.npz`` (its arrays).

Layout of ``models/routers/<name>/``::

    router.json   RouterSpec: kind, models, params, encoder id and hash, training data hash,
                  boilerplate paragraph keys, per-model cost model, surface-feature scaling,
                  the encoder layers it reads beside the embedding
    weights.npz   the predictor's arrays (np.savez_compressed, allow_pickle=False on load)
    calibration.npy  out-of-fold predictions on training prompts (threshold calibration)
    card.json     evaluation figures (written by ``training.card``)
    CARD.md       the same for people
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np

from router.features import SurfaceScaler
from router.predictors import PREDICTORS, Predictor
from router.text import routing_text

# 2: ``surface`` (routers that read surface features beside the embedding).
# 3: ``layers`` (routers that read inner layers' mean hidden states, Encoder.encode_routing).
FORMAT_VERSION = 3


class EncoderRef(msgspec.Struct, frozen=True):
    """The encoder a router reads: its id and the sha256 of its model file (ONNX) or table
    (static; checked on load, see ``TrainedRouter.check_encoder``)."""

    id: str
    sha256: str


class DataRef(msgspec.Struct, frozen=True):
    name: str
    sha256: str
    rows: int
    splits: list[str]


class CostModel(msgspec.Struct, frozen=True):
    """Expected USD per request per model: ``intercept + per_input_token * input_tokens``.

    Fitted on the training data's costs; the intercept carries the expected output.
    """

    intercept: list[float]
    per_input_token: list[float]


class RouterSpec(msgspec.Struct, frozen=True):
    name: str
    kind: str
    models: list[str]
    params: dict[str, Any]
    encoder: EncoderRef
    data: DataRef
    cost_model: CostModel
    boilerplate: list[str] = []
    surface: SurfaceScaler | None = None
    layers: list[int] = []
    created: str = ""
    format_version: int = FORMAT_VERSION


class EncoderLike(Protocol):
    """What ``TrainedRouter.check_encoder`` reads of an encoder (``router.encoders``)."""

    @property
    def id(self) -> str: ...

    @property
    def sha256(self) -> str: ...

    def check_layers(self, layers: Sequence[int]) -> None: ...


class ArtifactError(ValueError):
    """A router folder is missing, unreadable or inconsistent."""


class TrainedRouter:
    """A loaded router: turns prompt embeddings into per-model predicted quality and cost."""

    def __init__(self, spec: RouterSpec, predictor: Predictor, path: Path | None = None,
                 calibration: np.ndarray | None = None):
        self.spec = spec
        self.predictor = predictor
        self.path = path
        # Out-of-fold predicted quality on training prompts: what thresholds are calibrated on.
        self.calibration = calibration
        self.boilerplate = frozenset(spec.boilerplate)
        self._cost_a = np.asarray(spec.cost_model.intercept, dtype=np.float64)
        self._cost_b = np.asarray(spec.cost_model.per_input_token, dtype=np.float64)

    @property
    def models(self) -> list[str]:
        return self.spec.models

    @property
    def layers(self) -> tuple[int, ...]:
        """Encoder layers whose mean hidden states the router reads (``encode_routing``)."""
        return tuple(self.spec.layers)

    def check_encoder(self, encoder: EncoderLike) -> None:
        """Raise ``ArtifactError`` unless ``encoder`` is the one this router was trained on:
        the same id, for a static table the same sha256 (it is rebuilt on each machine, so the
        file could differ from the router's), and the inner layers the router reads."""
        ref, name = self.spec.encoder, self.spec.name
        if ref.id != encoder.id:
            raise ArtifactError(f"router {name!r} was trained on encoder {ref.id!r}, "
                                f"not {encoder.id!r}")
        if getattr(encoder, "kind", "onnx") == "static" and ref.sha256 != encoder.sha256:
            raise ArtifactError(
                f"router {name!r} was trained on encoder {ref.id!r} with table sha256 "
                f"{ref.sha256[:12]}..., but the table here has {encoder.sha256[:12]}...: this "
                "machine's distillation came out different. Retrain the router on this table "
                "(`contextforge setup --retrain` for the default router, else "
                f"`contextforge train --encoder {ref.id} ...`)")
        try:
            encoder.check_layers(self.layers)
        except ValueError as exc:
            raise ArtifactError(f"router {name!r}: {exc}") from None

    def routing_texts(self, prompts: list[str]) -> list[str]:
        """What gets embedded for each prompt (boilerplate learned at fit time removed)."""
        return [routing_text(p, self.boilerplate) for p in prompts]

    def predict(self, embeddings: np.ndarray, prompts: list[str] | None = None) -> np.ndarray:
        """(n, m) predicted quality in [0, 1] for the routing texts of ``prompts``, encoded by
        ``Encoder.encode_routing(texts, self.layers)`` (``embeddings``, one row per prompt).
        A router with surface features needs the prompts themselves too."""
        x = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if self.spec.surface is not None:
            if prompts is None or len(prompts) != len(x):
                raise ValueError(f"router {self.spec.name!r} reads surface features: pass the "
                                 f"{len(x)} prompts beside their embeddings")
            x = self.spec.surface.join(x, prompts, self.routing_texts(prompts))
        return np.clip(self.predictor.predict(x), 0.0, 1.0)

    def estimate_costs(self, input_tokens: np.ndarray) -> np.ndarray:
        """(n, m) expected USD per request for prompts of ``input_tokens`` tokens."""
        t = np.asarray(input_tokens, dtype=np.float64).reshape(-1, 1)
        return np.maximum(self._cost_a + self._cost_b * t, 0.0)


def weights_sha256(path: Path) -> str:
    return hashlib.sha256((path / "weights.npz").read_bytes()).hexdigest()


def save_router(path: Path, spec: RouterSpec, predictor: Predictor,
                calibration: np.ndarray | None = None) -> Path:
    """Write the router folder atomically (a temp folder renamed into place)."""
    if spec.kind != predictor.kind:
        raise ArtifactError(f"spec kind {spec.kind!r} != predictor kind {predictor.kind!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only
    try:
        spec = msgspec.structs.replace(spec, params=predictor.params())
        (tmp / "router.json").write_bytes(msgspec.json.format(msgspec.json.encode(spec)))
        np.savez_compressed(tmp / "weights.npz", **predictor.arrays())
        if calibration is not None:
            np.save(tmp / "calibration.npy", np.asarray(calibration, dtype=np.float16))
        for extra in ("card.json", "CARD.md"):  # keep a card written earlier for this folder
            if (path / extra).exists():
                shutil.copy2(path / extra, tmp / extra)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_router(path: str | os.PathLike[str]) -> TrainedRouter:
    """Load a router folder; raises ``ArtifactError`` naming what is wrong."""
    path = Path(path)
    spec_file = path / "router.json"
    if not spec_file.is_file():
        raise ArtifactError(f"{path}: not a router folder (no router.json)")
    try:
        spec = msgspec.json.decode(spec_file.read_bytes(), type=RouterSpec)
    except msgspec.ValidationError as exc:
        raise ArtifactError(f"{spec_file}: {exc}") from exc
    if spec.format_version > FORMAT_VERSION:
        raise ArtifactError(f"{spec_file}: format_version {spec.format_version} is newer than "
                            f"this release reads ({FORMAT_VERSION}); upgrade contextforge")
    cls = PREDICTORS.get(spec.kind)
    if cls is None:
        raise ArtifactError(f"{spec_file}: unknown kind {spec.kind!r}; known: {sorted(PREDICTORS)}")
    with np.load(path / "weights.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    predictor = cls.from_arrays(arrays, spec.params)
    cal_file = path / "calibration.npy"
    calibration = np.load(cal_file, allow_pickle=False).astype(np.float64) if cal_file.exists() \
        else None
    router = TrainedRouter(spec, predictor, path, calibration)
    m = len(spec.models)
    if len(router._cost_a) != m or len(router._cost_b) != m:
        raise ArtifactError(f"{spec_file}: cost_model has a length other than {m} models")
    return router
