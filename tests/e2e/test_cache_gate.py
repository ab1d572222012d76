"""The cache's gate on a gateway that routes on a static table: a miss with no plausible
neighbour never runs the transformer on its way, a paraphrase past the gate still gets the
verifier's judgement, the kept entry gets its transformer vector after the response, and the
gate survives purges and restarts.

A tiny random static table (``tests.static_tables``) stands in for the distilled one, with a
gate file of its own: on it "the tap water" question is 0.87 static cosine from "tap water",
its negation 0.99, and the unrelated questions below are negative.
"""

from __future__ import annotations

import msgspec
import pytest
from litestar.testing import TestClient

from router.cache.gate import GateSpec, save_spec
from router.cache.verifier import DEFAULT_PATH as VERIFIER
from router.config import CacheConfig
from router.embedding import MicroBatcher
from router.static_encoder import StaticEncoder
from router.wire.openai import ChatRequest
from service.app import create_app
from service.pipeline import Exchange
from tests.static_tables import two_model_config

WATER = "Is it safe to drink tap water in Mexico?"
PARA = "Is it safe to drink the tap water in Mexico?"
NEGATED = "Is it not safe to drink tap water in Mexico?"
FAR = "What is the capital of Australia?"
FAR2 = "How do I bake sourdough bread at home?"


@pytest.fixture()
def config(tmp_path, static_router, encoder_dir):
    """A config routing on the tiny table, the cache on, gated at static cosine 0.8."""
    folder, router = static_router
    table = StaticEncoder.load(folder)
    gate = save_spec(GateSpec(encoder=table.id, sha256=table.sha256, dim=table.dim,
                              threshold=0.8, target_kept=0.95), tmp_path / "gate.json")
    base = two_model_config(tmp_path, folder, encoder_dir, router)
    traffic = msgspec.structs.replace(base.traffic, dsn=f"sqlite:///{tmp_path / 't.sqlite3'}")
    return msgspec.structs.replace(base, traffic=traffic, cache=CacheConfig(
        enabled=True, gate=str(gate), verifier=str(VERIFIER), index="Flat",
        snapshot_path=str(tmp_path / "cache.snap")))


@pytest.fixture()
def transformer_texts(monkeypatch) -> list[str]:
    """What the transformer encodes (the static table's batcher is not counted)."""
    texts: list[str] = []
    encode = MicroBatcher.encode

    async def counted(self, text):
        if self.encoder.kind != "static":
            texts.append(text)
        return await encode(self, text)

    monkeypatch.setattr(MicroBatcher, "encode", counted)
    return texts


def ask(c: TestClient, text: str, texts: list[str], **extra) -> tuple[str, list[str]]:
    """The cache outcome of one request through the request path, and what the transformer
    encoded on that path (read as the path ends, before anything it left behind runs); then
    the work left behind is awaited."""
    gw = c.app.state.gateway
    request = msgspec.convert({"model": "auto", "temperature": 0, **extra,
                               "messages": [{"role": "user", "content": text}]}, ChatRequest)

    async def run() -> tuple[str, list[str]]:
        del texts[:]
        ex = await gw.pipeline.run(Exchange("chat", request), gw)
        on_path = list(texts)  # nothing spawned has run yet: no await since the path ended
        await gw.drain()
        return ex.cache, on_path

    with c.portal() as portal:
        return portal.call(run)


def test_a_miss_with_no_plausible_neighbour_never_runs_the_transformer(config,
                                                                      transformer_texts):
    texts = transformer_texts
    with TestClient(create_app(config)) as c:
        assert ask(c, FAR, texts) == ("miss", [])  # nothing of its scope: no lookup at all
        assert texts == [FAR]  # its transformer vector, made after the response
        # The scope has an entry now, but not one near by the table: the gate stops it.
        assert ask(c, WATER, texts) == ("miss", [])
        assert texts == [WATER]  # kept, and embedded after the response
        assert ask(c, FAR2, texts, cache={"no_store": True}) == ("miss", [])
        assert texts == []
        # Past the gate: the transformer, the search and the verifier, as without a gate; the
        # entry the gate-stopped miss kept answers it.
        assert ask(c, PARA, texts) == ("hit-semantic", [PARA])
        # Near by the table, but the verifier says it asks something else.
        assert ask(c, NEGATED, texts) == ("miss", [NEGATED])
        r = c.post("/v1/chat/completions", json={
            "model": "auto", "temperature": 0, "messages": [{"role": "user", "content": PARA}]})
        assert r.headers["x-contextforge-cache"] == "hit-semantic"
        assert 0.9 < float(r.headers["x-contextforge-cache-similarity"]) < 1.0
        with c.portal() as portal:
            stats = portal.call(c.app.state.gateway.cache.stats)
    gate = stats["semantic"]["gate"]
    assert gate["encoder"] == "tiny-static" and gate["threshold"] == 0.8
    assert (gate["stopped"], gate["passed"]) == (2, 3)


def test_purge_takes_the_static_vectors_too(config, transformer_texts):
    texts = transformer_texts
    admin = {"authorization": "Bearer admin-s3cret"}
    config = msgspec.structs.replace(config, server=msgspec.structs.replace(
        config.server, master_key="admin-s3cret"))
    with TestClient(create_app(config)) as c:
        ask(c, WATER, texts)
        assert ask(c, PARA, texts)[0] == "hit-semantic"
        assert c.post("/admin/cache/purge", json={"tenant": "default"},
                      headers=admin).status_code == 200
        assert ask(c, FAR, texts) == ("miss", [])  # nothing of its scope left: no lookup
        assert ask(c, PARA, texts) == ("miss", [])  # WATER's static vector went: stopped


def format_2(path, snapshot) -> None:
    """``snapshot`` rewritten as a release before gates wrote it: format 2, no static
    vectors, no table named."""
    import hashlib
    import json

    payload = msgspec.msgpack.encode([msgspec.structs.replace(s, static=None)
                                      for s in snapshot.entries])
    header = {"magic": "contextforge-cache-snapshot", "format": 2,
              "entries": len(snapshot.entries), "encoder": snapshot.encoder,
              "sha256": hashlib.sha256(payload).hexdigest()}
    path.write_bytes(json.dumps(header).encode() + b"\n" + payload)


def test_the_gate_survives_a_restart_and_an_old_snapshot_gets_its_static_vectors(
        config, transformer_texts, tmp_path):
    from router.cache.snapshot import load_snapshot
    from tests.e2e.gateway_server import app_logs

    texts = transformer_texts
    with TestClient(create_app(config)) as c:
        ask(c, WATER, texts)
        ask(c, FAR, texts)
    path = tmp_path / "cache.snap"
    snapshot = load_snapshot(path)
    assert snapshot.static_encoder.startswith("tiny-static:")
    assert all(s.static is not None for s in snapshot.entries)
    for old in (False, True):
        if old:  # again from a snapshot written before gates: the vectors are rebuilt
            format_2(path, snapshot)
        with app_logs() as logs, TestClient(create_app(config)) as c:
            assert ask(c, FAR2, texts, cache={"no_store": True}) == ("miss", [])
            assert ask(c, PARA, texts) == ("hit-semantic", [PARA])
        assert ("2 static vectors rebuilt" in logs.text) == old
