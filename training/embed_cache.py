"""Embeddings cached on disk, keyed by the encoder's hash and the text, so reruns are quick.

One npz file per encoder (and set of inner layers read beside the embedding, see
``Encoder.encode_routing``) under ``.cache/embeddings/``: ``keys`` (16-byte text hashes) and
``vectors``. New texts are encoded and appended; the file is replaced atomically. A text
missing from its file is first looked up in the same encoder's files for wider layer sets (a
row holds the embedding and then one block per layer, so a narrower row is a choice of
blocks): an A/B run without some layers need not encode everything again.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
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


def cache_key(text: str) -> bytes:
    """A text's row key in a cache file (16 bytes of BLAKE2b)."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _path(cache_dir: Path, sha256: str, layers: tuple[int, ...]) -> Path:
    return cache_dir / f"{sha256[:16]}{''.join(f'-l{k}' for k in layers)}.npz"


def _from_wider(cache_dir: Path, sha256: str, layers: tuple[int, ...], dim: int,
                missing: dict[bytes, str]) -> dict[bytes, np.ndarray]:
    """Rows for ``missing`` keys cut from the encoder's cached files for wider layer sets."""
    found: dict[bytes, np.ndarray] = {}
    for other in sorted(cache_dir.glob(f"{sha256[:16]}-l*.npz")):
        suffix = other.name[16:-4]
        if not re.fullmatch(r"(?:-l[0-9]+)+", suffix):
            continue  # not one of ours
        have = tuple(int(k) for k in suffix.split("-l")[1:])
        if have == layers or not set(layers) <= set(have):
            continue
        cols = np.concatenate([np.arange(dim)] + [
            np.arange(dim) + dim * (1 + have.index(k)) for k in layers])
        try:
            with np.load(other, allow_pickle=False) as npz:
                keys, vectors = npz["keys"].tolist(), npz["vectors"]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
            continue  # an unreadable file only means encoding those rows again
        if vectors.shape != (len(keys), dim * (1 + len(have))):
            continue
        for i, k in enumerate(keys):
            if k in missing and k not in found:
                found[k] = vectors[i, cols]
    return found


def embed_cached(encoder: _Encoder, texts: Sequence[str], cache_dir: Path | None = None,
                 layers: Sequence[int] = ()) -> np.ndarray:
    """``encoder.encode_routing(texts, layers)``, computing only the rows not cached yet.

    The cache lives in ``cache_dir``, else ``$CONTEXTFORGE_EMBED_CACHE``, else ``.cache/``."""
    cache_dir = Path(cache_dir or os.environ.get("CONTEXTFORGE_EMBED_CACHE") or DEFAULT_DIR)
    cache_dir.mkdir(parents=True, exist_ok=True)
    layers = tuple(layers)
    path = _path(cache_dir, encoder.sha256, layers)
    keys: np.ndarray = np.empty((0,), dtype="S16")
    vectors = np.empty((0, encoder.dim * (1 + len(layers))), dtype=np.float32)
    if path.exists():
        with np.load(path, allow_pickle=False) as npz:
            keys, vectors = npz["keys"], npz["vectors"]
    where = {k: i for i, k in enumerate(keys.tolist())}
    wanted = [cache_key(t) for t in texts]
    missing: dict[bytes, str] = {}
    for k, t in zip(wanted, texts, strict=True):
        if k not in where and k not in missing:
            missing[k] = t
    if missing:
        cut = _from_wider(cache_dir, encoder.sha256, layers, encoder.dim, missing)
        rest = [t for k, t in missing.items() if k not in cut]
        fresh = iter(encoder.encode_routing(rest, layers).astype(np.float32) if rest else [])
        new = np.stack([cut[k] if k in cut else next(fresh) for k in missing])
        for i, k in enumerate(missing):
            where[k] = len(keys) + i
        keys = np.concatenate([keys, np.array(list(missing), dtype="S16")])
        vectors = np.concatenate([vectors, new])
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npz")
        os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a shared cache is the point
        np.savez(tmp, keys=keys, vectors=vectors)
        os.replace(tmp, path)
    return vectors[[where[k] for k in wanted]]
