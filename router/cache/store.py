"""The response cache of one gateway: the exact tier and the semantic tier behind one face.

- ``get``: the exact tier, by the canonical request's key (``router.cache.keys``).
- ``admits``: the gate, on a gateway that routes on a static table (``router.cache.gate``):
  whether the nearest entry of the scope by the static routing vector is close enough for
  ``find`` to be worth the transformer's encoding.
- ``find``: the semantic tier. The index (``router.cache.semantic``) returns the nearest
  entries *of the same scope*; the verifier (``router.cache.verifier``) decides whether the
  best of them asks what the query asks. Only ``candidates`` neighbours are checked (one by
  default): each one checked is one more chance of a false hit, so with one the verifier's
  measured per-pair false-hit rate bounds the false hits per lookup.
- ``keep``: a new answer in both tiers (the semantic one when the request had a last user turn
  and its vector is known).
- ``delete``, ``purge``: an invalidation, a reported wrong hit, an erasure request — both tiers.

The semantic tier keeps only vectors and the id of the exact tier's entry that holds the
answer, so the answer is stored once, and the exact tier's bounds hold for both: a vector's
bytes count against ``max_bytes`` beside its answer's, and an answer that leaves (evicted,
expired, deleted) takes its vector along.

This is the in-process cache (``cache.enabled`` without Redis). Lookups are coroutines so that
the shared cache (``router.cache.shared``), whose exact tier lives in Redis, has the same face;
``start`` and ``close`` bracket its background work (none here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import msgspec
import numpy as np

from router.cache.exact import Entry, ExactCache
from router.cache.semantic import Meta, SemanticIndex

if TYPE_CHECKING:
    from router.cache.gate import Gate
    from router.cache.verifier import Verifier
    from router.config import Config

Tier = Literal["exact", "semantic"]


class Stored(msgspec.Struct, frozen=True):
    """An entry as a snapshot (or another replica) receives it: the answer, and the last user
    turn, scope and vectors (float32 bytes: the transformer's, and the static table's when the
    cache has a gate) that let the semantic tier find it."""

    entry: Entry
    text: str | None = None
    scope: str | None = None
    vector: bytes | None = None
    static: bytes | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """A hit: the entry that answers, from which tier, and its cosine to the query."""

    entry: Entry
    tier: Tier
    similarity: float


class ResponseCache:
    """Both tiers in this process; ``semantic`` None keeps the exact tier only."""

    # Called with the operation ("lookup", "write") when a backend fails; only the shared
    # cache has one that can (the gateway counts them).
    on_error: Callable[[str], None] | None = None

    def __init__(self, exact: ExactCache, semantic: SemanticIndex | None = None,
                 verifier: Verifier | None = None, candidates: int = 1, encoder: str = "",
                 gate: Gate | None = None):
        if (semantic is None) != (verifier is None):
            raise ValueError("the semantic tier needs both its index and its verifier")
        self.exact, self.semantic, self.verifier = exact, semantic, verifier
        self.candidates = candidates
        self.encoder = encoder  # which encoder made the vectors (snapshots record it)
        self.gate = check_gate(gate, semantic)
        self.gate_counts = [0, 0]  # lookups the gate stopped, and let through
        self.semantic_hits = 0
        self.kept = 0  # answers kept since start
        # Purges so far per tenant and per (tenant, user): an answer made while one landed is
        # not kept (it would undo an erasure).
        self._purges: dict[tuple[str, str | None], int] = {}
        # The last snapshot: where, when, and ``kept`` when its entries were taken.
        self.snapshot: tuple[str, float, int] | None = None
        if semantic is not None:  # an answer that leaves takes its vector along
            exact.on_remove = lambda entry: semantic.remove_entry(entry.id)

    @property
    def dim(self) -> int | None:
        """The vector size the semantic tier reads (None: exact tier only)."""
        return self.semantic.dim if self.semantic is not None else None

    async def get(self, key: str) -> Entry | None:
        """The live entry under the exact ``key``, or None."""
        return self.exact.get(key)

    def may_match(self, tenant: str, scope: str) -> bool:
        """Whether the semantic tier holds any entry of this scope: without one, a lookup need
        not even embed the query."""
        return self.semantic is not None and self.semantic.has_scope(tenant, scope)

    def admits(self, tenant: str, scope: str, static: np.ndarray) -> bool:
        """The gate: whether the nearest entry of ``tenant``'s ``scope`` by the static routing
        vector ``static`` is close enough that ``find`` may hit (always, without a gate)."""
        if self.gate is None or self.semantic is None:
            return True
        found = self.semantic.search(static, tenant, scope, k=1, space="static")
        passed = bool(found) and found[0].cosine >= self.gate.threshold
        self.gate_counts[passed] += 1
        return passed

    async def find(self, tenant: str, scope: str, text: str, vector: np.ndarray
                   ) -> Match | None:
        """The semantic hit for ``text`` (its ``vector``) in ``tenant``'s ``scope``, or None."""
        if self.semantic is None or self.verifier is None:
            return None
        found = self.semantic.search(vector, tenant, scope, k=self.candidates)
        live = []
        for c in found:
            entry = await self._entry(c.meta.entry)
            if entry is None:  # its answer is gone: so is the vector
                self.semantic.remove([c.id])
            else:
                live.append((c, entry))
        if not live:
            return None
        same = next(((c, e) for c, e in live if c.meta.text == text), None)
        if same is not None:  # the very question, sent in another form (spacing, parts)
            candidate, entry = same
        else:
            stored = self.semantic.vectors(tenant, [c.id for c, _ in live])
            q = np.broadcast_to(np.asarray(vector, dtype=np.float32), stored.shape)
            logits = self.verifier.score([text] * len(live), [c.meta.text for c, _ in live],
                                         q, stored)
            best = int(np.argmax(logits))
            if logits[best] < self.verifier.threshold:
                return None
            candidate, entry = live[best]
        self.semantic.touch(candidate.id)
        self._served(entry)
        self.semantic_hits += 1
        return Match(entry, "semantic", candidate.cosine)

    async def _entry(self, entry_id: str) -> Entry | None:
        # A candidate is not a hit yet: no hit counted, no recency changed (``_served``).
        return self.exact.get_id(entry_id, touch=False)

    def _served(self, entry: Entry) -> None:
        self.exact.touch(entry.id)

    def generation(self, tenant: str, user: str | None) -> tuple[int, int]:
        """How many purges have reached ``tenant`` and its ``user`` so far (``keep`` compares
        it with the count when the request came in)."""
        return self._purges.get((tenant, None), 0), self._purges.get((tenant, user), 0)

    def keep(self, entry: Entry, text: str | None = None, scope: str | None = None,
             vector: np.ndarray | None = None, *, static: np.ndarray | None = None,
             generation: tuple[int, int] | None = None) -> tuple[int, int]:
        """Keep a new answer (in the semantic tier too when ``text`` and ``scope`` are given
        with its ``vector`` or its ``static`` vector: the other may follow, ``index``);
        returns how many entries each tier's bounds evicted to make room. With
        ``generation`` (``self.generation`` when the request came in), an answer whose tenant
        or user was purged meanwhile is not kept."""
        if generation is not None and generation != self.generation(entry.tenant, entry.user):
            return 0, 0
        exact, semantic = self.exact.evicted, self._semantic_evicted()
        self.kept += 1
        static = static if self.gate is not None else None
        if (self.semantic is None or text is None or scope is None
                or (vector is None and static is None)):
            self.exact.put(entry)
        elif self.exact.put(entry, self.semantic.entry_bytes(text)):
            self._add(entry, text, scope, vector, static)
        return self.exact.evicted - exact, self._semantic_evicted() - semantic

    def index(self, entry: Entry, text: str, scope: str, vector: np.ndarray | None,
              static: np.ndarray | None = None) -> None:
        """Give a kept entry the vectors that came after it (embedded after the response): a
        new semantic entry, or the missing vector of one kept with the other."""
        if self.semantic is None or self.exact.get_id(entry.id, touch=False) is None:
            return  # exact tier only, or the entry has gone meanwhile
        static = static if self.gate is not None else None
        if self.semantic.holds(entry.id):
            for space, v in (("text", vector), ("static", static)):
                if v is not None:
                    self.semantic.attach(entry.id, v, space)
        elif vector is not None or static is not None:
            self._add(entry, text, scope, vector, static)
            self.exact.charge(entry.id, self.semantic.entry_bytes(text))

    def _add(self, entry: Entry, text: str, scope: str, vector: np.ndarray | None,
             static: np.ndarray | None = None) -> None:
        assert self.semantic is not None
        self.semantic.add(vector, Meta(entry=entry.id, tenant=entry.tenant, user=entry.user,
                                       scope=scope, text=text, expires=entry.expires), static)

    def _semantic_evicted(self) -> int:
        return self.semantic.evicted if self.semantic is not None else 0

    async def delete(self, entry_id: str) -> bool:
        """Drop one entry from both tiers; False when there was none."""
        return self.exact.delete(entry_id)  # its vector goes with it (``on_remove``)

    async def purge(self, tenant: str, user: str | None = None) -> int:
        """Drop every entry of ``tenant`` (of its ``user`` only, when given) from both tiers;
        how many answers went."""
        key = (tenant, user)
        self._purges[key] = self._purges.get(key, 0) + 1
        if self.semantic is not None:  # at once, not entry by entry
            self.semantic.purge(tenant, user)
        return self.exact.purge(tenant, user)

    async def stats(self) -> dict[str, object]:
        """Both tiers' sizes, bounds, hits and evictions."""
        out: dict[str, object] = {"exact": self.exact.stats()}
        if self.snapshot is not None:
            path, written, kept = self.snapshot
            # What a crash now would lose: the answers kept since the last snapshot.
            out["snapshot"] = {"path": path, "written": written,
                               "kept_since": self.kept - kept}
        semantic = self._semantic_stats()
        if semantic is not None:
            out["semantic"] = semantic
        return out

    def _semantic_stats(self) -> dict[str, object] | None:
        if self.semantic is None or self.verifier is None:
            return None
        out: dict[str, object] = {
            "entries": len(self.semantic), "index": self.semantic.factory,
            "hits": self.semantic_hits, "evicted": self.semantic.evicted,
            "candidates": self.candidates,
            "verifier": {"target_false_hit_rate": self.verifier.target_false_hit_rate,
                         "threshold": self.verifier.threshold}}
        if self.gate is not None:
            stopped, passed = self.gate_counts
            out["gate"] = {"encoder": self.gate.encoder, "threshold": self.gate.threshold,
                           "stopped": stopped, "passed": passed}
        return out

    async def start(self) -> None:
        """Begin the cache's background work (the shared cache follows its feed); none here."""

    async def close(self) -> None:
        """End the cache's background work and connections (at shutdown, after the drain,
        or when a reconfiguration replaces it); none here."""

    def stored(self) -> list[Stored]:
        """Every live entry with what the semantic tier keeps of it, least recently used
        first (what a snapshot writes)."""
        semantic = self.semantic.by_entry() if self.semantic is not None else {}
        out = []
        for entry in self.exact.entries():
            found = semantic.get(entry.id)
            if found is None:
                out.append(Stored(entry))
            else:
                meta, vec, static = found
                out.append(Stored(entry, meta.text, meta.scope, _bytes(vec), _bytes(static)))
        return out

    def restore(self, stored: list[Stored], encoder: str = "", static_encoder: str = "") -> int:
        """Put ``stored`` entries back (a snapshot's, oldest use first); how many. Vectors made
        by another ``encoder`` than this cache's live in another space: their entries come
        back to the exact tier only. Static vectors are kept when ``static_encoder`` is the
        gate's table (``Gate.key``); an entry without one never passes the gate (the snapshot
        loader rebuilds them: ``service.cache_snapshots``)."""
        same_space = encoder == self.encoder
        same_static = self.gate is not None and static_encoder == self.gate.key
        for s in stored:
            vector = static = None
            if s.vector is not None and self.dim is not None and same_space:
                vector = _vector(s.vector, self.dim)
            if vector is not None and s.static is not None and same_static:
                assert self.gate is not None
                static = _vector(s.static, self.gate.dim)
            self.keep(s.entry, s.text, s.scope, vector, static=static)
        return len(stored)


def _bytes(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tobytes()


def _vector(raw: bytes, dim: int) -> np.ndarray | None:
    """A stored vector, or None when it has another size (written with another encoder)."""
    vector = np.frombuffer(raw, dtype=np.float32)
    return vector if vector.size == dim else None


def check_gate(gate: Gate | None, semantic: SemanticIndex | None) -> Gate | None:
    """``gate`` when the index keeps static vectors of its size; ``ValueError`` otherwise."""
    if gate is not None and (semantic is None or semantic.static_dim != gate.dim):
        raise ValueError("a gate needs a semantic index that keeps static vectors of its size")
    return gate


def check_cache(config: Config) -> list[str]:
    """The cache settings' problems, each naming its path, without loading anything large:
    the index factory string builds, the verifier file exists."""
    c = config.cache
    if not (c.enabled and c.semantic):
        return []
    errors = []
    try:
        SemanticIndex(8, c.index)
    except ValueError as exc:
        errors.append(f"cache.index: {exc}")
    path = config.resolve(c.verifier)
    if not path.is_file():
        errors.append(f"cache.verifier: {path} does not exist (the shipped verifier is "
                      "models/cache/verifier.npz; or set cache.semantic: false)")
    if c.gate and not config.resolve(c.gate).is_file():
        errors.append(f"cache.gate: {config.resolve(c.gate)} does not exist (the shipped gate "
                      "is models/cache/gate.json; \"\" for none)")
    return errors


def build_cache(config: Config, dim: int | None, encoder: str = "", gate: Gate | None = None
                ) -> ResponseCache | None:
    """The empty cache ``config`` asks for (None when it is off); ``dim`` is the text encoder's
    vector size and ``encoder`` its ``id:sha256`` (the verifier must have been fitted on that
    encoder's vectors); ``gate`` the static-vector gate when routing reads a static table
    (``router.cache.gate.gate_for``). ``ConfigError`` naming ``cache.index`` or
    ``cache.verifier`` when the semantic tier cannot be built as configured. This is the
    in-process cache: with ``redis.url`` the gateway builds the shared one
    (``router.cache.shared``)."""
    c = config.cache
    if not c.enabled:
        return None
    semantic, verifier = semantic_tier(config, dim, encoder, gate)
    exact = ExactCache(c.max_entries, c.max_bytes)
    if semantic is None:
        return ResponseCache(exact, encoder=encoder)
    return ResponseCache(exact, semantic, verifier, c.candidates, encoder,
                         gate if semantic.static_dim else None)


def semantic_tier(config: Config, dim: int | None, encoder: str = "", gate: Gate | None = None
                  ) -> tuple[SemanticIndex, Verifier] | tuple[None, None]:
    """The empty index (keeping static vectors too when there is a ``gate``) and the verifier
    of the semantic tier ``config`` asks for (both None when it is off or there is no text
    encoder); ``ConfigError`` naming ``cache.index`` or ``cache.verifier`` when they cannot be
    built, or when the verifier was fitted on another encoder's vectors than ``encoder``
    (``id:sha256``)."""
    from router.cache.verifier import Verifier
    from router.config import ConfigError

    c = config.cache
    if not c.semantic or not dim:
        return None, None
    try:
        index = SemanticIndex(dim, c.index, max_entries=c.max_entries,
                              static_dim=gate.dim if gate is not None else None)
    except ValueError as exc:
        raise ConfigError(f"cache.index: {exc}") from None
    path = config.resolve(c.verifier)
    try:
        verifier = Verifier.load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cache.verifier: cannot load {path}: {exc}") from None
    if verifier.dim and verifier.dim != dim:
        raise ConfigError(f"cache.verifier: {path} was fitted on {verifier.dim}-d vectors of "
                          f"{verifier.encoder or 'another encoder'}; encoder.text_path gives "
                          f"{dim}-d")
    encoder_id = encoder.split(":", 1)[0]
    if verifier.encoder and encoder_id and verifier.encoder != encoder_id:
        raise ConfigError(f"cache.verifier: {path} was fitted on {verifier.encoder}'s vectors; "
                          f"encoder.text_path is {encoder_id}: refit the verifier "
                          "(python -m training.cache_verifier) or set cache.semantic: false")
    return index, verifier
