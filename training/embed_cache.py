"""Embeddings cached on disk, keyed by the encoder's hash and the text, so reruns are quick.

One npz file per encoder (and set of inner layers read beside the embedding, see
``Encoder.encode_routing``) under ``.cache/embeddings/``: ``keys`` (16-byte text hashes) and
``vectors``. New texts are encoded and appended; the file is replaced atomically.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".cache" / "embeddings"


class _Encoder(Protocol):
    sha256: str
    dim: int

    def encode_routing(self, texts: Sequence[str], layers: Sequence[int] = (),
                       batch_size: int = 64) -> np.ndarray: ...


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def embed_cached(encoder: _Encoder, texts: Sequence[str], cache_dir: Path | None = None,
                 layers: Sequence[int] = ()) -> np.ndarray:
    """``encoder.encode_routing(texts, layers)``, computing only the rows not cached yet."""
    cache_dir = Path(os.environ.get("CONTEXTFORGE_EMBED_CACHE", cache_dir or DEFAULT_DIR))
    cache_dir.mkdir(parents=True, exist_ok=True)
    layers = tuple(layers)
    suffix = "".join(f"-l{k}" for k in layers)
    path = cache_dir / f"{encoder.sha256[:16]}{suffix}.npz"
    keys: np.ndarray = np.empty((0,), dtype="S16")
    vectors = np.empty((0, encoder.dim * (1 + len(layers))), dtype=np.float32)
    if path.exists():
        with np.load(path, allow_pickle=False) as npz:
            keys, vectors = npz["keys"], npz["vectors"]
    where = {k: i for i, k in enumerate(keys.tolist())}
    wanted = [_key(t) for t in texts]
    missing: dict[bytes, str] = {}
    for k, t in zip(wanted, texts, strict=True):
        if k not in where and k not in missing:
            missing[k] = t
    if missing:
        new = encoder.encode_routing(list(missing.values()), layers).astype(np.float32)
        for i, k in enumerate(missing):
            where[k] = len(keys) + i
        keys = np.concatenate([keys, np.array(list(missing), dtype="S16")])
        vectors = np.concatenate([vectors, new])
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npz")
        os.close(fd)
        np.savez(tmp, keys=keys, vectors=vectors)
        os.replace(tmp, path)
    return vectors[[where[k] for k in wanted]]
