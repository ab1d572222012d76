"""Which encoder a folder holds, and loading it: the one place that knows every kind.

Two kinds, named by ``kind`` in the folder's ``encoder.json``:

- ``onnx`` (the default when absent): a sentence-transformers model exported to ONNX,
  ``router.embedding.Encoder``. What ``/v1/embeddings`` serves and the semantic cache compares.
- ``static``: a token table distilled from it, ``router.static_encoder.StaticEncoder``. For
  routing only: ~0.1 ms per prompt instead of ~10 ms.

Both satisfy ``RoutingEncoder``, what the routing engine, ``MicroBatcher``, training and the
embedding cache use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import msgspec
import numpy as np

from router.config import Config, ConfigError
from router.embedding import DEFAULT_HEAD_TOKENS, Encoder

KINDS = ("onnx", "static")


class RoutingEncoder(Protocol):
    """What routing, training and the embedding cache use of an encoder."""

    kind: str

    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def sha256(self) -> str: ...

    @property
    def max_tokens(self) -> int: ...

    def check_layers(self, layers: Sequence[int]) -> None: ...

    def count_tokens(self, text: str) -> int: ...

    def count_tokens_batch(self, texts: list[str]) -> list[int]: ...

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]: ...

    def encode(self, texts: Sequence[str], batch_size: int = ...) -> np.ndarray: ...

    def encode_routing(self, texts: Sequence[str], layers: Sequence[int] = ...,
                       batch_size: int = ...) -> np.ndarray: ...

    def encode_one(self, text: str) -> np.ndarray: ...


def encoder_kind(path: str | Path) -> str:
    """``onnx`` or ``static``: the ``kind`` in a built encoder folder's ``encoder.json``."""
    manifest_file = Path(path) / "encoder.json"
    if not manifest_file.exists():
        raise FileNotFoundError(f"{path}: no encoder.json; build it with `contextforge setup "
                                "--config FILE` (FILE: the config whose router reads it)")
    try:
        raw = msgspec.json.decode(manifest_file.read_bytes())
    except msgspec.DecodeError as exc:
        raise ValueError(f"{manifest_file}: not valid JSON: {exc}") from exc
    kind = raw.get("kind", "onnx") if isinstance(raw, dict) else None
    if kind not in KINDS:
        raise ValueError(f"{manifest_file}: unknown encoder kind {kind!r}; known: "
                         f"{', '.join(KINDS)}")
    return kind


def load_encoder(path: str | Path, *, quantized: bool = False, threads: int = 2,
                 head_tokens: int = DEFAULT_HEAD_TOKENS, spin: bool = False) -> RoutingEncoder:
    """The encoder in ``path``, of the kind its ``encoder.json`` names. ``quantized``,
    ``threads`` and ``spin`` are onnxruntime's settings (see ``Encoder.load``); a static table
    has none and ignores them."""
    if encoder_kind(path) == "static":
        from router.static_encoder import StaticEncoder

        return StaticEncoder.load(path, head_tokens=head_tokens)
    return Encoder.load(path, quantized=quantized, threads=threads, head_tokens=head_tokens,
                        spin=spin)


class LazyEncoder:
    """The transformer encoder for what needs its vectors (``/v1/embeddings``, the semantic
    cache) while routing reads a static table: loaded on first use, since a process that only
    routes never needs it. Thread-safe; engines built from one another share one, so it loads
    once per process."""

    def __init__(self, load: Callable[[], Encoder] | None = None, *,
                 loaded: Encoder | None = None):
        if (load is None) == (loaded is None):
            raise ValueError("give either load or loaded")
        self._load = load
        self._encoder = loaded
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def get(self) -> Encoder:
        """The encoder, loading it now if this is the first call."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    assert self._load is not None
                    self._encoder = self._load()
        return self._encoder


def text_encoder_slot(config: Config, routing: RoutingEncoder) -> LazyEncoder:
    """The config's ``encoder.text_path`` encoder: ``routing`` itself when the config routes
    with that same folder (one load, as before static tables), else loaded on first use."""
    enc = config.encoder
    path = config.resolve(enc.text_path)
    if isinstance(routing, Encoder) and path.resolve() == config.resolve(enc.path).resolve():
        return LazyEncoder(loaded=routing)
    return LazyEncoder(lambda: Encoder.load(path, quantized=enc.quantized, threads=enc.threads,
                                            spin=enc.spin))


def check_text_encoder(config: Config) -> None:
    """Raise ``ConfigError`` unless ``encoder.text_path`` names a built transformer encoder."""
    path = config.resolve(config.encoder.text_path)
    try:
        kind = encoder_kind(path)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"encoder.text_path: {exc}") from None
    if kind != "onnx":
        raise ConfigError(f"encoder.text_path: {path} is a {kind} encoder; /v1/embeddings and "
                          "the semantic cache need a transformer (onnx) one")
