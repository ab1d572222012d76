"""The response cache's two tiers behind one face: semantic hits are scoped and verified, and
deletes, purges and snapshots reach both tiers."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from router.cache import Entry, ExactCache
from router.cache.semantic import SemanticIndex
from router.cache.store import ResponseCache, Stored, build_cache
from router.cache.verifier import FEATURES, Trees, Verifier
from router.config import CacheConfig, ConfigError, load_config

DIM = 8
Q = "Is it safe to drink tap water in Mexico?"
PARA = "Is the tap water in Mexico safe to drink?"
NEGATED = "Is it not safe to drink tap water in Mexico?"
pytestmark = pytest.mark.anyio


def unit(seed: int, near: np.ndarray | None = None, noise: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=DIM) if near is None else near + noise * rng.normal(size=DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.fixture()
def verifier() -> Verifier:
    """A hit needs cosine above 0.95 and no negation mismatch."""
    f = FEATURES.index
    nodes = [(f("cosine"), 0.95, 1, 2, 0.0),
             (0, 0.0, -1, -1, -1.0),
             (f("negation_mismatch"), 0.5, 3, 1, 0.0),
             (0, 0.0, -1, -1, 1.0)]
    feature, threshold, left, right, value = (np.array(c) for c in zip(*nodes, strict=True))
    trees = Trees(roots=np.array([0]), feature=feature, threshold=threshold, left=left,
                  right=right, value=value, baseline=0.0)
    return Verifier(trees=trees, threshold=0.0, target_false_hit_rate=0.01,
                    cosine_threshold=0.95)


def entry(i: int, tenant: str = "t", user: str | None = None) -> Entry:
    return Entry(id=f"ce-{i}", key=f"k{i}", tenant=tenant, user=user, route="auto", model="m",
                 body=b"{}", created=0.0, expires=1e12)


def cache_with(verifier, max_entries: int = 100) -> ResponseCache:
    return ResponseCache(ExactCache(max_entries, 10**6), SemanticIndex(DIM, "Flat"), verifier)


async def test_a_paraphrase_in_the_same_scope_is_a_semantic_hit(verifier):
    cache, v = cache_with(verifier), unit(0)
    cache.keep(entry(1), Q, "s", v)
    match = await cache.find("t", "s", PARA, unit(1, near=v))
    assert match is not None and match.entry.id == "ce-1" and match.tier == "semantic"
    assert 0.95 < match.similarity <= 1.0
    assert (await cache.stats())["semantic"]["hits"] == 1


async def test_another_tenant_scope_or_a_negation_never_hits(verifier):
    cache, v = cache_with(verifier), unit(0)
    cache.keep(entry(1), Q, "s", v)
    assert await cache.find("other", "s", Q, v) is None  # same text, same scope key
    assert await cache.find("t", "s2", Q, v) is None  # another system prompt or turn
    assert await cache.find("t", "s", NEGATED, unit(2, near=v, noise=0.01)) is None
    assert cache.may_match("t", "s") and not cache.may_match("other", "s")


async def test_delete_and_purge_reach_both_tiers(verifier):
    cache, v = cache_with(verifier), unit(0)
    cache.keep(entry(1, user="ann"), Q, "s", v)
    cache.keep(entry(2, user="bob"), PARA, "s2", v)
    assert await cache.delete("ce-1") and not await cache.delete("ce-1")
    assert await cache.get("k1") is None and await cache.find("t", "s", Q, v) is None
    cache.keep(entry(3, user="ann"), Q, "s", v)
    assert await cache.purge("t", "ann") == 1
    assert await cache.find("t", "s", Q, v) is None
    assert (await cache.find("t", "s2", PARA, v)).entry.id == "ce-2"  # bob's stays
    assert await cache.purge("t") == 1 and not cache.may_match("t", "s2")


async def test_an_answer_that_leaves_takes_its_vector_and_vectors_count_as_bytes(verifier):
    cache, v = cache_with(verifier, max_entries=1), unit(0)
    cache.keep(entry(1), Q, "s", v)
    assert cache.keep(entry(2), "Something else", "s", unit(5)) == (1, 0)  # ce-1 evicted...
    assert len(cache.semantic) == 1 and await cache.find("t", "s", Q, v) is None  # ...with it
    # Two small answers fit in 700 bytes, but not with their vectors beside them.
    now = [0.0]
    exact = ExactCache(100, 700, clock=lambda: now[0])
    cache = ResponseCache(exact, SemanticIndex(DIM, "Flat", clock=lambda: now[0]), verifier)
    cache.keep(entry(1), Q, "s", v)
    cache.keep(entry(2), "Something else", "s", unit(5))
    assert exact.bytes <= 700 and len(exact) == 1 and len(cache.semantic) == 1
    # An answer that expires takes its vector too, whichever tier notices first.
    now[0] = 2e12
    assert await cache.get("k2") is None and len(cache.semantic) == 0


async def test_stored_entries_restore_both_tiers(verifier):
    cache, v = cache_with(verifier), unit(0)
    cache.keep(entry(1), Q, "s", v)
    cache.keep(entry(2))  # exact only (no last user turn)
    stored = msgspec.msgpack.decode(msgspec.msgpack.encode(cache.stored()),
                                    type=list[Stored])
    fresh = cache_with(verifier)
    assert fresh.restore(stored) == 2
    assert (await fresh.find("t", "s", PARA, unit(1, near=v))).entry.id == "ce-1"
    assert (await fresh.get("k2")).id == "ce-2"


@pytest.mark.parametrize("anyio_backend", [None])  # not a coroutine
def test_build_cache_names_the_setting_it_cannot_build(tmp_path, anyio_backend):
    cfg = load_config()

    def with_cache(**kw):
        return msgspec.structs.replace(cfg, cache=CacheConfig(enabled=True, **kw))

    assert build_cache(cfg, 384) is None  # off by default
    built = build_cache(with_cache(), 384)
    assert built is not None and built.dim == 384 and built.semantic.factory == "HNSW32"
    assert build_cache(with_cache(semantic=False), 384).semantic is None
    with pytest.raises(ConfigError, match=r"cache\.index"):
        build_cache(with_cache(index="NotAnIndex"), 384)
    with pytest.raises(ConfigError, match=r"cache\.verifier"):
        build_cache(with_cache(verifier=str(tmp_path / "missing.npz")), 384)
    with pytest.raises(ConfigError, match=r"cache\.verifier: .*384-d"):
        build_cache(with_cache(), 768)


@pytest.mark.parametrize("anyio_backend", [None])
def test_validation_names_a_bad_index_or_a_missing_verifier(tmp_path, anyio_backend):
    from router.validate import check

    cfg = msgspec.structs.replace(load_config(), cache=CacheConfig(
        enabled=True, index="HNSW-please", verifier=str(tmp_path / "none.npz")))
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert "cache.index: 'HNSW-please'" in str(err.value)
    assert "cache.verifier: " in str(err.value) and "does not exist" in str(err.value)


async def test_candidates_are_not_hits_until_one_is_served(verifier):
    cache, v = cache_with(verifier), unit(0)
    cache.keep(entry(1), Q, "s", v)
    cache.keep(entry(2), "Something else entirely", "s2", unit(7))
    assert await cache.find("t", "s", NEGATED, unit(2, near=v, noise=0.01)) is None
    assert cache.exact.stats()["hits"] == 0  # a rejected candidate is no exact hit
    assert [e.id for e in cache.exact.entries()] == ["ce-1", "ce-2"]  # nor fresher
    assert (await cache.find("t", "s", PARA, unit(1, near=v))).entry.id == "ce-1"
    assert [e.id for e in cache.exact.entries()] == ["ce-2", "ce-1"]  # served: most recent
    assert cache.exact.stats()["hits"] == 0 and cache.semantic_hits == 1
