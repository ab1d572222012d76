"""Which encoder training, evaluation and set-up read: by alias, id or folder, built on demand.

``--encoder`` takes ``minilm`` (the ONNX transformer), ``static`` (the table distilled from it,
``training.distill_static``), a built encoder's id (its folder name under
``models/encoders/``) or a folder path. The two built-in ones are built into
``models/encoders/`` (git-ignored) the first time they are asked for.
"""

from __future__ import annotations

import re
from pathlib import Path

from router.artifact import TrainedRouter
from router.encoders import RoutingEncoder, load_encoder
from training.distill_static import ensure_static_encoder, static_name
from training.export_encoder import DEFAULT_NAME as MINILM
from training.export_encoder import REPO, ensure_encoder

ENCODERS_DIR = REPO / "models" / "encoders"
STATIC = static_name()
# What `contextforge train` reads without --encoder, and the shipped default router was
# trained on (chosen by train-CV, benchmarks/README.md).
DEFAULT_ENCODER = MINILM
ALIASES = {"minilm": MINILM, "onnx": MINILM, "static": STATIC}
ENCODER_HELP = ("encoder the router reads: minilm (ONNX transformer), static (token table "
                f"distilled from it), a built encoder's id or folder (default: {DEFAULT_ENCODER})")
_STATIC_ID = re.compile(re.escape(MINILM) + r"-static(\d+)")


def encoder_folder(choice: str | None = None) -> Path:
    """The folder of the encoder ``choice`` names (see the module docstring), building a
    built-in one first if it is missing."""
    name = ALIASES.get(choice or "", choice or DEFAULT_ENCODER)
    if name == MINILM:
        return ensure_encoder()
    static = _STATIC_ID.fullmatch(name)
    if static:
        return ensure_static_encoder(pca_dims=int(static.group(1)))
    for folder in (ENCODERS_DIR / name, Path(name)):
        if (folder / "encoder.json").is_file():
            return folder
    raise ValueError(f"encoder {choice!r}: not minilm, static, a built encoder's id under "
                     f"{ENCODERS_DIR} or a folder with an encoder.json")


def load_choice(choice: str | None = None) -> RoutingEncoder:
    """The encoder ``choice`` names, loaded (``encoder_folder``)."""
    return load_encoder(encoder_folder(choice))


def encoder_for(router: TrainedRouter, choice: str | None = None) -> RoutingEncoder:
    """The encoder ``router`` was trained on: ``choice`` (see ``encoder_folder``), by default
    found by the id in its spec; checked against the spec (``TrainedRouter.check_encoder``:
    same id, and the same table for a static one)."""
    encoder = load_choice(choice or router.spec.encoder.id)
    router.check_encoder(encoder)
    return encoder
