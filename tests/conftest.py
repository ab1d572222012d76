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
