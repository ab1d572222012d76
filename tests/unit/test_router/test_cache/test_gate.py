"""The static-vector gate: each entry's static vector lives beside its transformer vector and
leaves with it; a lookup goes on to the transformer only past the gate's threshold."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest

from router.cache import Entry, ExactCache
from router.cache.gate import Gate, GateSpec, gate_for, save_spec
from router.cache.semantic import Meta, SemanticIndex
from router.cache.snapshot import load_snapshot, write_snapshot
from router.cache.store import ResponseCache
from router.cache.verifier import FEATURES, Trees, Verifier

DIM, STATIC = 16, 8
pytestmark = pytest.mark.anyio


def unit(seed: int, dim: int, near: np.ndarray | None = None, noise: float = 0.05
         ) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=dim) if near is None else near + noise * rng.normal(size=dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def meta(entry: str, tenant: str = "t", user: str | None = None) -> Meta:
    return Meta(entry=entry, tenant=tenant, user=user, scope="s", text=entry, expires=1e12)


@pytest.fixture(params=["Flat", "HNSW32"])
def index(request):
    return SemanticIndex(DIM, request.param, max_entries=1000, static_dim=STATIC)


def test_each_entry_keeps_both_vectors_and_either_may_come_later(index):
    index.add(unit(0, DIM), meta("both"), unit(0, STATIC))
    index.add(None, meta("static-first"), unit(1, STATIC))
    assert [c.meta.entry for c in index.search(unit(1, STATIC), "t", "s", k=1,
                                               space="static")] == ["static-first"]
    # Not in the transformer's space until its vector comes.
    assert all(c.meta.entry != "static-first" for c in index.search(unit(1, DIM), "t", "s"))
    assert index.vector_of("static-first") is None
    assert index.attach("static-first", unit(1, DIM))
    assert not index.attach("static-first", unit(2, DIM))  # it has one now
    assert index.search(unit(1, DIM), "t", "s", k=1)[0].meta.entry == "static-first"
    got = index.by_entry()
    assert got["both"][1] is not None and got["both"][2] is not None
    np.testing.assert_allclose(got["static-first"][1], unit(1, DIM), atol=1e-6)


def test_an_entry_that_leaves_takes_both_vectors(index):
    for k in range(40):
        index.add(unit(k, DIM), meta(f"e{k}", user="ada" if k % 2 else "bob"),
                  unit(k, STATIC))
    assert index.remove_entry("e0")
    assert index.purge("t", user="ada") == 20
    for space, dim in (("text", DIM), ("static", STATIC)):
        found = {c.meta.entry for c in index.search(unit(0, dim), "t", "s", k=40,
                                                    space=space)}
        assert found == {f"e{k}" for k in range(2, 40, 2)}, space  # rebuilt when HNSW
    assert not index.attach("e0", unit(0, DIM))
    index.purge("t")
    assert index.search(unit(2, STATIC), "t", "s", space="static") == []


def test_eviction_takes_both_vectors():
    index = SemanticIndex(DIM, "Flat", max_entries=2, static_dim=STATIC)
    for k in range(3):
        index.add(unit(k, DIM), meta(f"e{k}"), unit(k, STATIC))
    assert index.evicted == 1
    assert {c.meta.entry for c in index.search(unit(0, STATIC), "t", "s", k=3,
                                               space="static")} == {"e1", "e2"}


def test_an_index_without_a_static_space_ignores_static_vectors():
    index = SemanticIndex(DIM, "Flat")
    index.add(unit(0, DIM), meta("e"), unit(0, STATIC))
    assert index.search(unit(0, STATIC), "t", "s", space="static") == []
    assert index.by_entry()["e"][2] is None
    with pytest.raises(ValueError):
        index.add(None, meta("nothing"))


@pytest.fixture()
def verifier() -> Verifier:
    """A hit needs cosine above 0.95."""
    f = FEATURES.index
    nodes = [(f("cosine"), 0.95, 1, 2, 0.0), (0, 0.0, -1, -1, -1.0), (0, 0.0, -1, -1, 1.0)]
    feature, threshold, left, right, value = (np.array(c) for c in zip(*nodes, strict=True))
    trees = Trees(roots=np.array([0]), feature=feature, threshold=threshold, left=left,
                  right=right, value=value, baseline=0.0)
    return Verifier(trees=trees, threshold=0.0, target_false_hit_rate=0.01,
                    cosine_threshold=0.95)


GATE = Gate(encoder="tiny", sha256="ab" * 32, dim=STATIC, threshold=0.9)


def entry(i: int, tenant: str = "t") -> Entry:
    return Entry(id=f"ce-{i}", key=f"k{i}", tenant=tenant, user=None, route="auto", model="m",
                 body=b"{}", created=0.0, expires=1e12)


def gated_cache(verifier, max_entries: int = 100) -> ResponseCache:
    return ResponseCache(ExactCache(max_entries, 10**6),
                         SemanticIndex(DIM, "Flat", static_dim=STATIC), verifier,
                         encoder="enc:1", gate=GATE)


async def test_the_gate_lets_through_only_a_near_static_neighbour(verifier):
    cache = gated_cache(verifier)
    v, s = unit(0, DIM), unit(0, STATIC)
    cache.keep(entry(1), "q", "s", None, static=s)  # its text vector comes after
    assert cache.admits("t", "s", unit(1, STATIC, near=s))
    assert not cache.admits("t", "s", unit(7, STATIC))
    assert not cache.admits("t", "other-scope", s)
    assert await cache.find("t", "s", "q2", unit(1, DIM, near=v)) is None  # not yet
    cache.index(entry(1), "q", "s", v)
    match = await cache.find("t", "s", "q2", unit(1, DIM, near=v))
    assert match is not None and match.entry.id == "ce-1"
    stats = (await cache.stats())["semantic"]["gate"]
    assert stats == {"encoder": "tiny", "threshold": 0.9, "stopped": 2, "passed": 1}


async def test_deletes_purges_and_evictions_reach_the_static_vectors(verifier):
    cache = gated_cache(verifier, max_entries=2)
    for i in range(3):
        cache.keep(entry(i), f"q{i}", "s", unit(i, DIM), static=unit(i, STATIC))
    assert not cache.admits("t", "s", unit(0, STATIC))  # evicted from the exact tier
    await cache.delete("ce-1")
    assert not cache.admits("t", "s", unit(1, STATIC))
    assert cache.admits("t", "s", unit(2, STATIC))
    await cache.purge("t")
    assert not cache.admits("t", "s", unit(2, STATIC)) and len(cache.semantic) == 0


async def test_a_snapshot_carries_the_static_vectors_and_names_their_table(tmp_path, verifier):
    cache = gated_cache(verifier)
    cache.keep(entry(1), "q", "s", unit(0, DIM), static=unit(0, STATIC))
    path = tmp_path / "snap"
    write_snapshot(path, cache.stored(), "enc:1", GATE.key)
    snapshot = load_snapshot(path)
    assert snapshot.static_encoder == GATE.key
    again = gated_cache(verifier)
    again.restore(snapshot.entries, "enc:1", snapshot.static_encoder)
    assert again.admits("t", "s", unit(0, STATIC))
    other = gated_cache(verifier)  # static vectors of another table are not used
    other.restore(snapshot.entries, "enc:1", "another:table")
    assert not other.admits("t", "s", unit(0, STATIC))
    assert await other.find("t", "s", "q2", unit(1, DIM, near=unit(0, DIM))) is not None


def test_a_cache_refuses_a_gate_its_index_cannot_serve(verifier):
    with pytest.raises(ValueError):
        ResponseCache(ExactCache(10, 10**6), SemanticIndex(DIM, "Flat"), verifier, gate=GATE)


class _Table:
    kind, id, sha256, dim = "static", "tiny", "ab" * 32, STATIC


def test_the_gate_is_for_the_table_it_was_calibrated_on(tmp_path, caplog):
    path = save_spec(GateSpec(encoder="tiny", sha256="ab" * 32, dim=STATIC, threshold=0.9,
                              target_kept=0.95), tmp_path / "gate.json")
    assert gate_for(path, _Table()) == GATE
    assert gate_for("", _Table()) is None
    transformer = type("T", (), {"kind": "onnx", "id": "tiny", "sha256": "ab" * 32})()
    assert gate_for(path, transformer) is None  # routing runs the transformer anyway
    other = type("O", (_Table,), {"sha256": "cd" * 32})()
    with caplog.at_level(logging.WARNING, logger="contextforge.cache"):
        assert gate_for(path, other) is None
    assert "calibrate one with python -m training.cache_gate" in caplog.text


def test_a_gate_for_another_verifier_serves_and_says_so(tmp_path, caplog):
    verifier = tmp_path / "verifier.npz"
    verifier.write_bytes(b"the verifier in use")
    path = save_spec(GateSpec(encoder="tiny", sha256="ab" * 32, dim=STATIC, threshold=0.9,
                              target_kept=0.95, verifier_sha256="00" * 32), tmp_path / "gate.json")
    with caplog.at_level(logging.WARNING, logger="contextforge.cache"):
        assert gate_for(path, _Table(), verifier) == GATE
    assert "calibrated with another verifier" in caplog.text
    caplog.clear()
    same = save_spec(GateSpec(encoder="tiny", sha256="ab" * 32, dim=STATIC, threshold=0.9,
                              target_kept=0.95,
                              verifier_sha256=hashlib.sha256(verifier.read_bytes()).hexdigest()),
                     tmp_path / "same.json")
    with caplog.at_level(logging.WARNING, logger="contextforge.cache"):
        assert gate_for(same, _Table(), verifier) == GATE
    assert caplog.text == ""
