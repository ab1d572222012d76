"""The exact tier: answers kept under the exact key of their request (``router.cache.keys``).

In-process (one replica; ``router.cache.shared`` keeps it in Redis for several): an ordered
dict in least-recently-used order, bounded by entry count and by bytes, each entry with its
own expiry. Every operation runs on the event loop's thread and is O(1) but
``purge`` (a scan: erasure requests are rare).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable

import msgspec


class Entry(msgspec.Struct, frozen=True):
    """One cached answer: the completion as it was sent (JSON), whose it is, when it ends."""

    id: str
    key: str
    tenant: str
    user: str | None
    route: str  # what the request named: a route, ``none`` when pinned
    model: str  # the catalog model that answered
    body: bytes  # the ChatCompletion, JSON
    created: float
    expires: float
    cost_usd: float = 0.0  # what the answer cost when it was made: what a hit saves
    latency_ms: float = 0.0

    @property
    def size(self) -> int:
        return len(self.body) + len(self.key) + len(self.id) + 200  # the rest, roughly


def entry_id() -> str:
    return "ce-" + os.urandom(8).hex()


class ExactCache:
    """Answers by exact key, LRU-evicted past ``max_entries`` or ``max_bytes``."""

    def __init__(self, max_entries: int, max_bytes: int,
                 clock: Callable[[], float] = time.time):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._clock = clock
        self._by_key: OrderedDict[str, Entry] = OrderedDict()
        self._by_id: dict[str, str] = {}
        self._extra: dict[str, int] = {}  # bytes held elsewhere for an entry (its vector)
        # Called with each entry that leaves (evicted, expired, deleted, purged), so what is
        # held elsewhere for it (the semantic tier's vector) goes with it.
        self.on_remove: Callable[[Entry], None] | None = None
        self.bytes = 0
        self.evicted = 0  # past a bound (expired entries are not counted)
        self.hits = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: str) -> Entry | None:
        """The live entry under ``key`` (now the most recently used), or None."""
        entry = self._by_key.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._remove(key)
            return None
        self._by_key.move_to_end(key)
        self.hits += 1
        return entry

    def get_id(self, entry_id: str, touch: bool = True) -> Entry | None:
        """The live entry with id ``entry_id`` (what a semantic hit points at), or None."""
        key = self._by_id.get(entry_id)
        if key is None:
            return None
        if not touch:
            entry = self._by_key[key]
            return entry if entry.expires > self._clock() else None
        return self.get(key)

    def touch(self, entry_id: str) -> None:
        """Mark an entry as just used (a semantic hit served it), without counting a hit."""
        key = self._by_id.get(entry_id)
        if key is not None:
            self._by_key.move_to_end(key)

    def put(self, entry: Entry, extra_bytes: int = 0) -> bool:
        """Keep ``entry`` (replacing one under its key), then evict the least recently used
        entries until both bounds hold; ``extra_bytes`` is what is held elsewhere for it (its
        vector), counted against ``max_bytes`` too. An entry larger than ``max_bytes`` is not
        kept (False)."""
        size = entry.size + extra_bytes
        if size > self.max_bytes:
            return False
        if entry.key in self._by_key:
            self._remove(entry.key)
        self._by_key[entry.key] = entry
        self._by_id[entry.id] = entry.key
        if extra_bytes:
            self._extra[entry.id] = extra_bytes
        self.bytes += size
        while len(self._by_key) > self.max_entries or self.bytes > self.max_bytes:
            self._remove(next(iter(self._by_key)))
            self.evicted += 1
        return entry.key in self._by_key

    def charge(self, entry_id: str, extra_bytes: int) -> None:
        """Count ``extra_bytes`` more for a kept entry (its vector, indexed after it was
        kept), evicting the least recently used entries if the bytes bound is passed."""
        if entry_id not in self._by_id:
            return
        self._extra[entry_id] = self._extra.get(entry_id, 0) + extra_bytes
        self.bytes += extra_bytes
        while self.bytes > self.max_bytes and len(self._by_key) > 1:
            self._remove(next(iter(self._by_key)))
            self.evicted += 1

    def delete(self, entry_id: str) -> bool:
        """Drop one entry by id (a reported wrong answer, an admin's invalidate)."""
        key = self._by_id.get(entry_id)
        if key is None:
            return False
        self._remove(key)
        return True

    def purge(self, tenant: str, user: str | None = None) -> int:
        """Drop every entry of ``tenant`` (of its ``user`` only, when given): erasure."""
        doomed = [k for k, e in self._by_key.items()
                  if e.tenant == tenant and (user is None or e.user == user)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def _remove(self, key: str) -> None:
        entry = self._by_key.pop(key)
        self._by_id.pop(entry.id, None)
        self.bytes -= entry.size + self._extra.pop(entry.id, 0)
        if self.on_remove is not None:
            self.on_remove(entry)

    def stats(self) -> dict[str, int]:
        """Entries, bytes, hits served and evictions since start."""
        return {"entries": len(self._by_key), "bytes": self.bytes, "hits": self.hits,
                "evicted": self.evicted, "max_entries": self.max_entries,
                "max_bytes": self.max_bytes}

    def entries(self) -> list[Entry]:
        """Every entry, least recently used first (what a snapshot keeps, in the order that
        restores the same recency)."""
        return list(self._by_key.values())
