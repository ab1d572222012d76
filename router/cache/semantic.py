"""The semantic tier's index: the encoder's vectors of cached prompts' last user turns.

One FAISS index per tenant namespace, built from a factory string as FAISS names them
(``"Flat"``: exact, for small caches; ``"HNSW32"``: approximate, for large ones), wrapped in
an ID map so entries have stable ids. A search returns the nearest live entries *of the same
scope* (``router.cache.keys.scope_key``: tenant and user, system prompt, earlier turns, tools,
format, model choice, generation parameters), with their cosine; deciding which of them may
answer is the caller's (a calibrated decider). Whether a neighbour may answer is never
decided by the index: it only narrows the candidates.

Two spaces per namespace when the gateway routes on a static table (``static_dim``): the
transformer's vectors (``"text"``, what the verifier reads) and the static table's (``"static"``,
the cache's gate: ``router.cache.gate``). Both belong to one entry, under one id and one
metadata record, so whatever removes an entry (eviction, expiry, delete, purge) takes both. An
entry may hold only one of them for a while: a miss the gate answered without the transformer
is kept with its static vector, and its text vector is attached after the response.

Removal: an exact index drops vectors at once; an HNSW graph cannot, so a removed entry is
skipped at search time and the namespace is rebuilt once a quarter of it is dead. Bounds: a
maximum entry count with least-recently-used eviction across namespaces, and a TTL per entry.
Everything runs on one thread (the event loop); searches are a few hundred microseconds at
100k entries with HNSW (``benchmarks/cache_lookup.py``).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

REBUILD_DEAD_SHARE = 0.25  # rebuild an HNSW namespace when this share of it is removed
# A lookup is one query: on two threads FAISS waits for its second one to be scheduled, which
# on a busy host took a search's mean from 0.17 ms to 1.9 ms (benchmarks/README.md, "Cache
# lookup"). The gateway runs no other FAISS work that could use more.
faiss.omp_set_num_threads(1)

Space = Literal["text", "static"]


@dataclass(frozen=True, slots=True)
class Meta:
    """What the index keeps beside a vector."""

    entry: str  # the cache entry (``router.cache.exact.Entry.id``) that holds the answer
    tenant: str
    user: str | None
    scope: str  # the scope key
    text: str  # the last user turn, for the decider
    expires: float


@dataclass(frozen=True, slots=True)
class Candidate:
    """A neighbour of the same scope: its metadata and cosine to the query."""

    id: int
    meta: Meta
    cosine: float


class _Namespace:
    """One tenant's indexes, one per space, sharing ids and the set of removed ones."""

    def __init__(self, dims: dict[Space, int], factory: str):
        self.indexes = {space: faiss.index_factory(dim, f"IDMap2,{factory}",
                                                   faiss.METRIC_INNER_PRODUCT)
                        for space, dim in dims.items()}
        self.removable = factory.split(",")[0] == "Flat"
        self.dead: set[int] = set()

    @property
    def size(self) -> int:
        return max(index.ntotal for index in self.indexes.values())

    def remove(self, ids: list[int]) -> None:
        if self.removable:
            for index in self.indexes.values():  # an id one space lacks is skipped
                index.remove_ids(np.asarray(ids, dtype=np.int64))
        else:
            self.dead.update(ids)


class SemanticIndex:
    """Vectors of cached prompts per tenant; ``search`` gives same-scope candidates.
    ``static_dim``: keep each entry's static routing vector too (the gate's space)."""

    def __init__(self, dim: int, factory: str = "Flat", max_entries: int = 100_000,
                 clock: Callable[[], float] = time.time, static_dim: int | None = None):
        try:  # refuse a bad factory string at start-up, not at the first answer kept
            faiss.index_factory(dim, f"IDMap2,{factory}", faiss.METRIC_INNER_PRODUCT)
        except RuntimeError:
            raise ValueError(f"{factory!r} is not a FAISS index factory string this cache can "
                             "use: e.g. Flat (exact) or HNSW32 (approximate)") from None
        self.dim, self.factory, self.max_entries = dim, factory, max_entries
        self.static_dim = static_dim
        self.dims: dict[Space, int] = {"text": dim}
        if static_dim:
            self.dims["static"] = static_dim
        self._clock = clock
        self._spaces: dict[str, _Namespace] = {}
        self._meta: OrderedDict[int, Meta] = OrderedDict()  # least recently used first
        self._next = 1
        self._scopes: Counter[tuple[str, str]] = Counter()  # live entries per (tenant, scope)
        self._by_entry: dict[str, int] = {}  # cache entry id -> vector id
        # Entries whose vector of a space has not come yet (usually none, for milliseconds).
        self._missing: dict[Space, set[int]] = {space: set() for space in self.dims}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._meta)

    def add(self, vector: np.ndarray | None, meta: Meta,
            static: np.ndarray | None = None) -> int:
        """Index one entry's vector (L2-normalised, ``dim`` values) and, with a static space,
        its static vector; either may come later (``attach``), not both. Returns its id."""
        return self.add_many(None if vector is None else np.asarray(vector), [meta],
                             None if static is None else np.asarray(static))[0]

    def add_many(self, vectors: np.ndarray | None, metas: list[Meta],
                 static: np.ndarray | None = None) -> list[int]:
        """Index entries of one tenant in one call (a snapshot's reload, a bulk fill): one row
        of ``vectors`` (and of ``static``, when this index keeps them) per entry."""
        given: dict[Space, np.ndarray | None] = {
            "text": vectors, "static": static if self.static_dim else None}
        rows = {space: np.ascontiguousarray(v, dtype=np.float32).reshape(-1, self.dims[space])
                for space, v in given.items() if v is not None}
        if not metas or not rows or any(len(v) != len(metas) for v in rows.values()):
            raise ValueError("add_many: one metadata and one vector per entry, at least one")
        tenant = metas[0].tenant
        if any(m.tenant != tenant for m in metas):
            raise ValueError("add_many: every entry of one call belongs to one tenant")
        space = self._spaces.get(tenant)
        if space is None:
            space = self._spaces[tenant] = _Namespace(self.dims, self.factory)
        ids = list(range(self._next, self._next + len(metas)))
        self._next += len(metas)
        for name in self.dims:
            if name in rows:
                space.indexes[name].add_with_ids(rows[name], np.asarray(ids, dtype=np.int64))
            else:
                self._missing[name].update(ids)
        for i, meta in zip(ids, metas, strict=True):
            self._meta[i] = meta
            self._scopes[(tenant, meta.scope)] += 1
            self._by_entry[meta.entry] = i
        while len(self._meta) > self.max_entries:
            self.remove([next(iter(self._meta))])
            self.evicted += 1
        return ids

    def holds(self, entry: str) -> bool:
        """Whether the cache entry ``entry`` is indexed (by either of its vectors)."""
        return entry in self._by_entry

    def attach(self, entry: str, vector: np.ndarray, space: Space = "text") -> bool:
        """Give an indexed entry its vector of ``space``, which came after it (embedded after
        the response); False when the entry has gone or already has one."""
        i = self._by_entry.get(entry)
        if i is None or space not in self.dims or i not in self._missing[space]:
            return False
        v = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dims[space])
        self._spaces[self._meta[i].tenant].indexes[space].add_with_ids(
            v, np.asarray([i], dtype=np.int64))
        self._missing[space].discard(i)
        return True

    def vector_of(self, entry: str, space: Space = "text") -> np.ndarray | None:
        """The stored vector of ``space`` of the cache entry ``entry``, or None."""
        i = self._by_entry.get(entry)
        if i is None or space not in self.dims or i in self._missing[space]:
            return None
        return self.vectors(self._meta[i].tenant, [i], space)[0]

    def search(self, vector: np.ndarray, tenant: str, scope: str, k: int = 8,
               space: Space = "text") -> list[Candidate]:
        """The nearest live entries of ``tenant`` whose scope is ``scope``, best first, by
        their vectors of ``space`` (the transformer's, or the static table's)."""
        found = self._spaces.get(tenant)
        index = found.indexes.get(space) if found is not None else None
        if found is None or index is None or index.ntotal == 0:
            return []
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dims[space])
        # Dead and other-scope neighbours take places in the top k: ask for more.
        want = min(index.ntotal, max(16 * k, k + len(found.dead)))
        cos, ids = index.search(q, want)
        now, out, expired = self._clock(), [], []
        for c, i in zip(cos[0], ids[0], strict=True):
            meta = self._meta.get(int(i))
            if i < 0 or meta is None or int(i) in found.dead:
                continue
            if meta.expires <= now:
                expired.append(int(i))
                continue
            if meta.scope == scope:
                out.append(Candidate(int(i), meta, float(c)))
                if len(out) == k:
                    break
        if expired:
            self.remove(expired)
        return out

    def has_scope(self, tenant: str, scope: str) -> bool:
        """Whether any entry of ``tenant`` has this scope (expired ones count until a search
        drops them): a dictionary lookup, so a request can skip embedding its query."""
        return self._scopes[(tenant, scope)] > 0

    def vectors(self, tenant: str, ids: list[int], space: Space = "text") -> np.ndarray:
        """``(len(ids), dim)`` stored vectors of ``tenant``'s entries ``ids`` (for the
        verifier, which reads both vectors of a pair); each id must have one in ``space``."""
        index = self._spaces[tenant].indexes[space]
        return index.reconstruct_batch(np.asarray(ids, dtype=np.int64))

    def by_entry(self) -> dict[str, tuple[Meta, np.ndarray | None, np.ndarray | None]]:
        """Every live entry's metadata, text vector and static vector (None: not kept, or not
        come yet), by cache entry id (a snapshot's view)."""
        by_tenant: dict[str, list[int]] = {}
        for i, meta in self._meta.items():
            by_tenant.setdefault(meta.tenant, []).append(i)
        found: dict[Space, dict[int, np.ndarray]] = {space: {} for space in self.dims}
        for tenant, ids in by_tenant.items():
            for space, vectors in found.items():
                have = [i for i in ids if i not in self._missing[space]]
                if have:
                    vectors.update(zip(have, self.vectors(tenant, have, space), strict=True))
        static = found.get("static", {})
        return {self._meta[i].entry: (self._meta[i], found["text"].get(i), static.get(i))
                for i in self._meta}

    def touch(self, i: int) -> None:
        """Mark an entry as just used (it served a hit): the last to be evicted."""
        if i in self._meta:
            self._meta.move_to_end(i)

    def remove(self, ids: list[int]) -> None:
        """Drop entries by id."""
        by_space: dict[str, list[int]] = {}
        for i in ids:
            meta = self._meta.pop(i, None)
            if meta is not None:
                by_space.setdefault(meta.tenant, []).append(i)
                self._forget(meta)
        for tenant, doomed in by_space.items():
            space = self._spaces[tenant]
            space.remove(doomed)
            if space.dead and len(space.dead) > REBUILD_DEAD_SHARE * space.size:
                self._rebuild(tenant)

    def remove_entry(self, entry: str) -> bool:
        """Drop the vector of one cache entry (it left the exact tier: evicted, expired,
        invalidated, reported wrong)."""
        i = self._by_entry.get(entry)
        if i is None:
            return False
        self.remove([i])
        return True

    def entry_bytes(self, text: str) -> int:
        """Roughly what one entry holds here: its vector, its graph links (HNSW: 2 x M
        neighbours on the base layer), its id maps and metadata, its text."""
        links = 0
        if self.factory.startswith("HNSW"):
            m = int(self.factory.split(",")[0][4:] or 32)
            links = 2 * m * 4
        return sum(dim * 4 + links for dim in self.dims.values()) + 300 + len(text.encode())

    def purge(self, tenant: str, user: str | None = None) -> int:
        """Drop every entry of ``tenant`` (of its ``user`` only, when given): erasure."""
        if user is None:
            doomed = [i for i, m in self._meta.items() if m.tenant == tenant]
            for i in doomed:
                self._forget(self._meta.pop(i))
            self._spaces.pop(tenant, None)
            return len(doomed)
        doomed = [i for i, m in self._meta.items() if m.tenant == tenant and m.user == user]
        self.remove(doomed)
        return len(doomed)

    def _forget(self, meta: Meta) -> None:
        i = self._by_entry.pop(meta.entry, None)
        if i is not None:
            for missing in self._missing.values():
                missing.discard(i)
        key = (meta.tenant, meta.scope)
        self._scopes[key] -= 1
        if self._scopes[key] <= 0:
            del self._scopes[key]

    def _rebuild(self, tenant: str) -> None:
        # The live vectors come back out of the old graphs (the ID maps keep them by id).
        old, fresh = self._spaces[tenant], _Namespace(self.dims, self.factory)
        live = [i for i, m in self._meta.items() if m.tenant == tenant]
        for space in self.dims:
            ids = np.asarray([i for i in live if i not in self._missing[space]], dtype=np.int64)
            if len(ids):
                fresh.indexes[space].add_with_ids(old.indexes[space].reconstruct_batch(ids), ids)
        self._spaces[tenant] = fresh
