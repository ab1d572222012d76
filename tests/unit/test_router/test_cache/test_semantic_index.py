"""The semantic tier's FAISS index: scoped, expiring, removable, bounded."""

from __future__ import annotations

import numpy as np
import pytest

from router.cache.semantic import Meta, SemanticIndex

DIM = 16


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, seed: int, eps: float = 0.05) -> np.ndarray:
    w = v + eps * unit(seed)
    return w / np.linalg.norm(w)


def meta(entry: str, tenant: str = "t1", scope: str = "s", user: str | None = None,
         expires: float = 1e12) -> Meta:
    return Meta(entry=entry, tenant=tenant, user=user, scope=scope, text=entry,
                expires=expires)


@pytest.fixture(params=["Flat", "HNSW32"])
def index(request):
    return SemanticIndex(DIM, request.param, max_entries=1000, clock=lambda: 100.0)


def test_search_finds_the_nearest_of_the_same_tenant_and_scope_only(index):
    v = unit(0)
    index.add(v, meta("mine"))
    index.add(v, meta("other-scope", scope="s2"))
    index.add(v, meta("other-tenant", tenant="t2"))
    for k in range(20):
        index.add(unit(100 + k), meta(f"far-{k}"))
    got = index.search(near(v, 1), "t1", "s", k=3)
    assert got[0].meta.entry == "mine" and got[0].cosine > 0.95
    assert all(c.meta.scope == "s" and c.meta.tenant == "t1" for c in got)
    assert [c.meta.entry for c in index.search(v, "t2", "s")] == ["other-tenant"]
    assert index.search(v, "t3", "s") == []


def test_expired_entries_are_never_returned_and_are_dropped(index):
    index.add(unit(0), meta("old", expires=100.0))
    index.add(unit(0), meta("fresh", expires=200.0))
    assert [c.meta.entry for c in index.search(unit(0), "t1", "s")] == ["fresh"]
    assert len(index) == 1


def test_removed_and_purged_entries_are_gone(index):
    ids = [index.add(unit(k), meta(f"e{k}", user="ada" if k % 2 else "bob"))
           for k in range(40)]
    assert index.remove_entry("e0") == 1
    assert all(c.meta.entry != "e0" for c in index.search(unit(0), "t1", "s", k=40))
    assert index.purge("t1", user="ada") == 20
    left = index.search(unit(3), "t1", "s", k=40)
    assert {c.meta.user for c in left} == {"bob"} and len(left) == 19
    # Past a quarter dead, an HNSW namespace is rebuilt; what lives is still found.
    assert index.search(unit(2), "t1", "s", k=1)[0].id == ids[2]
    assert index.purge("t1") == 19 and len(index) == 0 and index.search(unit(2), "t1", "s") == []


def test_the_least_recently_used_entry_goes_first_past_the_bound():
    index = SemanticIndex(DIM, "Flat", max_entries=3)
    first = index.add(unit(0), meta("a"))
    index.add(unit(1), meta("b"))
    index.add(unit(2), meta("c"))
    index.touch(first)  # a served it: kept
    index.add(unit(3), meta("d"))
    entries = {c.meta.entry for c in index.search(unit(0), "t1", "s", k=10)}
    assert entries == {"a", "c", "d"} and index.evicted == 1


def test_a_bad_factory_string_is_refused():
    with pytest.raises(ValueError, match="'NoSuchIndex' is not a FAISS index factory"):
        SemanticIndex(DIM, "NoSuchIndex")
