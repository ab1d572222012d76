import os

import pytest

from tests.static_tables import build_tiny_static, topics_table

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


@pytest.fixture()
def tiny_static(tmp_path):
    """A tiny static encoder folder (see ``build_tiny_static``)."""
    return build_tiny_static(tmp_path / "tiny-static")


@pytest.fixture(scope="session")
def static_router(tmp_path_factory):
    """(table folder, router folder): a knn router (quick to fit) trained on a tiny static
    table. Shared: a test that changes the table works on a copy."""
    from router.encoders import load_encoder
    from training.fit import train_router

    base = tmp_path_factory.mktemp("static")
    folder = build_tiny_static(base / "tiny-static")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONTEXTFORGE_EMBED_CACHE", str(base / "emb"))
        out = train_router(topics_table(), base / "router", kind="knn",
                           encoder=load_encoder(folder), calibrate=False)
    return folder, out


PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture()
def pg_dsn():
    """A DSN of the local PostgreSQL server in a schema of its own (CI and sessions share the
    server), dropped afterwards."""
    import uuid

    import psycopg

    schema = f"cf_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{PG}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def governance_db(request, tmp_path):
    """A governance ``Database`` on SQLite and, again, on the local PostgreSQL."""
    from router.governance.db import Database

    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'gov.sqlite3'}")
    else:
        db = Database(request.getfixturevalue("pg_dsn"))
    yield db
    db.close()
