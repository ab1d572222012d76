"""The response cache shared by several replicas (``redis.url`` set): the exact tier lives in
Redis, and every replica's semantic index learns the entries the others keep.

Same face as the in-process cache (``router.cache.store.ResponseCache``), so the cache stage
and the admin API do not know which one they hold.

Redis keys (all under ``redis.prefix``, e.g. ``contextforge:``):

- ``cache:e:<exact key>``: the entry, msgpack, expiring with it (``PX``);
- ``cache:i:<entry id>``: the exact key of an entry (what a semantic hit or an invalidation
  names), same expiry;
- ``cache:t:<tenant>`` and ``cache:u:<[tenant, user]>``: sorted sets of entry ids scored by
  expiry, for purges; trimmed of expired ids on each write, expiring with their last entry;
- ``cache:all``: every live id by expiry (the entry count ``stats`` reports);
- ``cache:stream``: the feed of vectors, deletes and purges (``router.cache.sync``).

Bounds: in Redis every key expires with its entry (``cache.ttl_s`` or the request's ``ttl``),
and an entry larger than ``cache.max_bytes`` is not kept; beyond that, Redis's own
``maxmemory`` and ``maxmemory-policy`` bound it (``cache.max_entries`` bounds only the local
index and the stream here). Each replica's index holds every live vector (``max_entries``
at most, least recently used evicted first).

Writes: ``keep`` is called from a stage's synchronous exit, so it never waits: it indexes the
vector locally at once and writes Redis in a task (entry, id, sets and the ``put`` event in
one pipeline). Until that write lands, this replica serves the entry from memory, so a repeat
a millisecond later is already a hit. ``delete`` and ``purge`` wait for pending writes they
concern (so a write in flight cannot bring back an erased entry), delete in Redis at once and
tell the other replicas.

Redis down: requests never fail because of it. A lookup error is a miss, a write error drops
the write; each is logged (one line per ``_QUIET_S``) and counted (``stats``, and the
gateway's ``contextforge_cache_backend_errors``), and for ``_PAUSE_S`` after an error
lookups and writes skip Redis rather than each wait for it. ``delete`` and ``purge`` raise
``CacheUnavailable``: an erasure that did not happen must not be reported as done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING

import msgspec
import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.cache.exact import Entry
from router.cache.semantic import Meta, SemanticIndex
from router.cache.store import ResponseCache, Stored, check_gate, semantic_tier
from router.cache.sync import Delete, Event, Feed, Purge, Put
from router.cache.verifier import Verifier
from router.errors import CacheUnavailable

if TYPE_CHECKING:
    from router.cache.gate import Gate
    from router.config import Config

log = logging.getLogger("contextforge.cache")

_ENCODE = msgspec.msgpack.Encoder()
_DECODE = msgspec.msgpack.Decoder(Entry)
_PAUSE_S = 1.0  # after an error, Redis is skipped this long (a miss, a dropped write)
_QUIET_S = 10.0  # at most one log line per this long while Redis keeps failing
_CHUNK = 500  # ids per round trip in a purge
_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class SharedCache(ResponseCache):
    """The exact tier in Redis; the semantic index local, fed by every replica's writes."""

    def __init__(self, client: Redis, reader: Redis, prefix: str, *,
                 semantic: SemanticIndex | None = None, verifier: Verifier | None = None,
                 candidates: int = 1, max_entries: int = 100_000, max_bytes: int = 1 << 28,
                 block_ms: int = 1000, clock: Callable[[], float] = time.time,
                 encoder: str = "", gate: Gate | None = None):
        # No local exact tier: the base's constructor (which wants one) is not called.
        if (semantic is None) != (verifier is None):
            raise ValueError("the semantic tier needs both its index and its verifier")
        self.exact = None
        self.semantic, self.verifier, self.candidates = semantic, verifier, candidates
        self.semantic_hits = 0
        self.gate, self.gate_counts = check_gate(gate, semantic), [0, 0]
        self.encoder, self.kept, self.snapshot = encoder, 0, None
        self._purges: dict[tuple[str, str | None], int] = {}  # see ResponseCache.generation
        self.client, self.prefix = client, prefix + "cache:"
        self.max_bytes, self._clock = max_bytes, clock
        self.replica = os.urandom(6).hex()
        self.feed = Feed(client, reader, self.prefix + "stream", self.replica, max_entries,
                         self._apply, block_ms=block_ms, clock=clock)
        self._reader_client = reader
        self.hits = 0
        self.errors = 0
        # Kept here, not yet in Redis: by exact key, and the same entries by id.
        self._pending: dict[str, Entry] = {}
        self._pending_ids: dict[str, Entry] = {}
        self._writes: dict[str, asyncio.Task[bool]] = {}  # by entry id
        self._tasks: set[asyncio.Task] = set()
        self._following: asyncio.Task | None = None
        self._paused_until = 0.0
        self._logged_at = -_QUIET_S

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start following the other replicas' writes (the stream from its start)."""
        if self._following is None:
            self._following = asyncio.get_running_loop().create_task(self.feed.run())

    async def close(self) -> None:
        """Stop following, let pending writes finish (each bounded by ``timeout_s``), close."""
        if self._following is not None:
            await self.feed.stop(self._following)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()
        await self._reader_client.aclose()

    # -- lookups -----------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        """The live entry under the exact ``key`` (from any replica), or None; None too when
        Redis fails (logged and counted)."""
        entry = self._pending.get(key)
        if entry is None and not self._paused():
            try:
                entry = self._decode(await self.client.get(self.prefix + "e:" + key))
            except _FAILURES as exc:
                self._failed("lookup", exc)
        if entry is None or entry.expires <= self._clock():
            return None
        self.hits += 1
        return entry

    async def find(self, tenant: str, scope: str, text: str, vector: np.ndarray):
        """The semantic hit (``ResponseCache.find``); a miss when Redis fails."""
        try:
            return await super().find(tenant, scope, text, vector)
        except CacheUnavailable:
            return None

    def _served(self, entry: Entry) -> None:
        """Nothing to refresh: Redis keeps entries until their TTL."""

    async def _entry(self, entry_id: str) -> Entry | None:
        # Raises CacheUnavailable rather than say "gone": the vector must stay.
        pending = self._pending_ids.get(entry_id)
        if pending is not None:
            return pending
        if self._paused():
            raise CacheUnavailable("Redis is paused after an error")
        try:
            key = await self.client.get(self.prefix + "i:" + entry_id)
            if key is None:
                return None
            entry = self._decode(await self.client.get(self.prefix + "e:" + key.decode()))
        except _FAILURES as exc:
            self._failed("lookup", exc)
            raise CacheUnavailable(str(exc)) from None
        return entry if entry is not None and entry.id == entry_id else None

    # -- writes ------------------------------------------------------------------------

    def keep(self, entry: Entry, text: str | None = None, scope: str | None = None,
             vector: np.ndarray | None = None, *, static: np.ndarray | None = None,
             generation: tuple[int, int] | None = None) -> tuple[int, int]:
        """Keep a new answer: served from memory at once, written to Redis in a task (with
        its vectors' ``put`` event when ``text``, ``scope`` and ``vector`` are given; a
        ``static`` vector alone is indexed here, and published with the vector that follows);
        not when a purge of its tenant or user (here or on another replica) landed since
        ``generation``. Returns the local index's evictions as ``(0, n)``: Redis evicts on
        its own."""
        if entry.size > self.max_bytes or entry.expires <= self._clock():
            return 0, 0
        if generation is not None and generation != self.generation(entry.tenant, entry.user):
            return 0, 0
        self.kept += 1
        before = self._semantic_evicted()
        self._pending[entry.key] = self._pending_ids[entry.id] = entry
        put = self._index(entry, text, scope, vector, static)
        self._writes[entry.id] = self._spawn(self._write(entry, put))
        return 0, self._semantic_evicted() - before

    def index(self, entry: Entry, text: str | None, scope: str | None,
              vector: np.ndarray | None, static: np.ndarray | None = None) -> None:
        """Add a kept entry's vectors (known after the response) here, and to the others once
        the entry itself is in Redis."""
        if entry.size > self.max_bytes or entry.expires <= self._clock():
            return
        put = self._index(entry, text, scope, vector, static)
        if put is not None:
            self._spawn(self._publish_after(entry.id, put))

    def _index(self, entry: Entry, text: str | None, scope: str | None,
               vector: np.ndarray | None, static: np.ndarray | None = None) -> Put | None:
        """Index what is known here; the ``put`` event for the others once the transformer's
        vector is (with the static one: the others' gates read it)."""
        index = self.semantic
        static = static if self.gate is not None else None
        if index is None or text is None or scope is None or (vector is None and static is None):
            return None
        if index.holds(entry.id):  # kept with its static vector; the text one came after
            if vector is not None:
                index.attach(entry.id, vector)
            if static is not None:
                index.attach(entry.id, static, "static")
            if static is None:
                static = index.vector_of(entry.id, "static")
        else:
            index.add(vector, Meta(entry=entry.id, tenant=entry.tenant, user=entry.user,
                                   scope=scope, text=text, expires=entry.expires), static)
        if vector is None:
            return None
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        return Put(entry.id, entry.tenant, entry.user, scope, text, v.tobytes(), entry.expires,
                   None if static is None else np.asarray(static, np.float32).tobytes())

    async def _write(self, entry: Entry, put: Put | None) -> bool:
        try:
            if self._paused():
                raise CacheUnavailable("Redis is paused after an error")
            now = self._clock()
            ttl_ms = max(1, int((entry.expires - now) * 1000))
            p, pipe = self.prefix, self.client.pipeline(transaction=False)
            pipe.set(p + "e:" + entry.key, _ENCODE.encode(entry), px=ttl_ms)
            pipe.set(p + "i:" + entry.id, entry.key, px=ttl_ms)
            for ids in (self._tenant_set(entry.tenant), self._user_set(entry.tenant, entry.user),
                        p + "all"):
                if ids is None:
                    continue
                pipe.zremrangebyscore(ids, "-inf", now)
                pipe.zadd(ids, {entry.id: entry.expires})
                if ids != p + "all":  # lives as long as its longest-lived entry
                    pipe.pexpire(ids, ttl_ms, nx=True)
                    pipe.pexpire(ids, ttl_ms, gt=True)
            if put is not None:
                self.feed.add(pipe, put)
            await pipe.execute()
            return True
        except (*_FAILURES, CacheUnavailable) as exc:
            self._failed("write", exc)
            return False
        finally:
            if self._pending.get(entry.key) is entry:
                del self._pending[entry.key]
            self._pending_ids.pop(entry.id, None)
            self._writes.pop(entry.id, None)

    async def _publish_after(self, entry_id: str, put: Put) -> None:
        task = self._writes.get(entry_id)
        if task is not None and not await task:
            return  # the entry is not in Redis: the others could not serve it
        try:
            await self.feed.publish(put)
        except _FAILURES as exc:
            self._failed("write", exc)

    # -- invalidation ------------------------------------------------------------------

    async def delete(self, entry_id: str) -> bool:
        """Drop one entry here, in Redis and from every replica's index; False when there
        was none. ``CacheUnavailable`` when Redis cannot be reached."""
        task = self._writes.get(entry_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if self.semantic is not None:
            self.semantic.remove_entry(entry_id)
        p = self.prefix
        try:
            key = await self.client.get(p + "i:" + entry_id)
            entry = self._decode(await self.client.get(p + "e:" + key.decode())) if key else None
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(p + "i:" + entry_id)
            pipe.zrem(p + "all", entry_id)
            if entry is not None and entry.id == entry_id:
                pipe.delete(p + "e:" + entry.key)
                pipe.zrem(self._tenant_set(entry.tenant), entry_id)
                user_set = self._user_set(entry.tenant, entry.user)
                if user_set is not None:
                    pipe.zrem(user_set, entry_id)
            self.feed.add(pipe, Delete(entry_id))
            await pipe.execute()
        except _FAILURES as exc:
            raise CacheUnavailable(f"the cache's Redis did not answer: {exc}") from None
        return entry is not None and entry.id == entry_id

    async def purge(self, tenant: str, user: str | None = None) -> int:
        """Drop every entry of ``tenant`` (of its ``user`` only, when given) in Redis and
        from every replica's index; how many answers went. ``CacheUnavailable`` when Redis
        cannot be reached."""
        self._purged(tenant, user)
        pending = [t for e in list(self._pending.values()) if e.tenant == tenant
                   and (t := self._writes.get(e.id)) is not None]
        await asyncio.gather(*pending, return_exceptions=True)
        if self.semantic is not None:
            self.semantic.purge(tenant, user)
        ids_key = self._tenant_set(tenant) if user is None else self._user_set(tenant, user)
        try:
            ids = [i.decode() for i in await self.client.zrange(ids_key, 0, -1)]
            purged = 0
            for start in range(0, len(ids), _CHUNK):
                purged += await self._purge_ids(ids[start:start + _CHUNK], tenant, user)
            pipe = self.client.pipeline(transaction=False)
            if user is None:
                pipe.delete(ids_key)
            self.feed.add(pipe, Purge(tenant, user))
            await pipe.execute()
        except _FAILURES as exc:
            raise CacheUnavailable(f"the cache's Redis did not answer: {exc}") from None
        return purged

    async def _purge_ids(self, ids: list[str], tenant: str, user: str | None) -> int:
        p = self.prefix
        keys = await self.client.mget([p + "i:" + i for i in ids])
        found = [k.decode() for k in keys if k is not None]
        entries = [self._decode(raw) for raw in await self.client.mget(
            [p + "e:" + k for k in found])] if found else []
        wanted = set(ids)
        doomed = [e for e in entries if e is not None and e.id in wanted
                  and e.tenant == tenant and (user is None or e.user == user)]
        pipe = self.client.pipeline(transaction=False)
        if doomed:
            pipe.delete(*[p + "e:" + e.key for e in doomed])
        pipe.delete(*[p + "i:" + i for i in ids])
        pipe.zrem(p + "all", *ids)
        pipe.zrem(self._tenant_set(tenant), *ids)
        if user is not None:
            pipe.zrem(self._user_set(tenant, user), *ids)
        await pipe.execute()
        return len(doomed)

    def _apply(self, events: list[Event]) -> None:
        """Another replica's writes, in order, into this replica's index."""
        index = self.semantic
        if index is None:  # exact tier only: purges still stop answers in flight
            for event in events:
                if isinstance(event, Purge):
                    self._purged(event.tenant, event.user)
            return
        # A run of puts, by tenant and by whether they carry a static vector of this gate's
        # size: one add per run.
        puts: dict[tuple[str, bool], list[Put]] = {}
        static_bytes = 4 * index.static_dim if index.static_dim else -1
        for event in [*events, None]:
            if isinstance(event, Put):
                if len(event.vector) == 4 * index.dim:  # else written with another encoder
                    with_static = event.static is not None and len(event.static) == static_bytes
                    puts.setdefault((event.tenant, with_static), []).append(event)
                continue
            for (_, with_static), run in puts.items():
                index.add_many(np.frombuffer(b"".join(e.vector for e in run), np.float32),
                               [Meta(entry=e.entry, tenant=e.tenant, user=e.user,
                                     scope=e.scope, text=e.text, expires=e.expires)
                                for e in run],
                               np.frombuffer(b"".join(e.static or b"" for e in run),
                                             np.float32) if with_static else None)
            puts.clear()
            if isinstance(event, Delete):
                index.remove_entry(event.entry)
            elif isinstance(event, Purge):
                self._purged(event.tenant, event.user)
                index.purge(event.tenant, event.user)

    def _purged(self, tenant: str, user: str | None) -> None:
        self._purges[(tenant, user)] = self._purges.get((tenant, user), 0) + 1

    # -- reporting ---------------------------------------------------------------------

    async def stats(self) -> dict[str, object]:
        """The shared tier's live entries (None when Redis does not answer), this replica's
        hits and Redis errors, the index's figures, and how far the feed has been applied."""
        try:
            entries = await self.client.zcount(self.prefix + "all", self._clock(), "+inf")
        except _FAILURES:
            entries = None
        out: dict[str, object] = {
            "exact": {"backend": "redis", "entries": entries, "hits": self.hits,
                      "errors": self.errors, "max_entry_bytes": self.max_bytes},
            "shared": {"replica": self.replica, "following": self.feed.following,
                       "events_applied": self.feed.applied}}
        semantic = self._semantic_stats()
        if semantic is not None:
            out["semantic"] = semantic
        return out

    def stored(self) -> list[Stored]:
        """Nothing: the entries are Redis's, which keeps them across restarts (validation
        refuses ``cache.snapshot_path`` with ``redis.url``)."""
        return []

    # -- helpers -----------------------------------------------------------------------

    def _tenant_set(self, tenant: str) -> str:
        return self.prefix + "t:" + tenant

    def _user_set(self, tenant: str, user: str | None) -> str | None:
        # JSON: a tenant or user holding ":" cannot be confused with another pair.
        return None if user is None else self.prefix + "u:" + json.dumps([tenant, user])

    def _decode(self, raw: bytes | None) -> Entry | None:
        if raw is None:
            return None
        try:
            return _DECODE.decode(raw)
        except msgspec.DecodeError:  # written by another version: a miss, not an error
            return None

    def _paused(self) -> bool:
        return self._clock() < self._paused_until

    def _failed(self, op: str, exc: BaseException) -> None:
        self.errors += 1
        if self.on_error is not None:
            self.on_error(op)
        now = self._clock()
        if not isinstance(exc, CacheUnavailable):  # a real failure, not the pause itself
            self._paused_until = now + _PAUSE_S
        if now - self._logged_at >= _QUIET_S:
            self._logged_at = now
            log.warning("cache: Redis %s failed (%s): served as a miss / not kept; Redis is "
                        "skipped for %.0f s", op, exc, _PAUSE_S)

    def _spawn(self, work: Coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def build_shared_cache(config: Config, dim: int | None, encoder: str = "",
                       gate: Gate | None = None) -> SharedCache:
    """The empty shared cache ``config`` asks for (its ``redis`` and ``cache`` sections; ``dim``
    is the text encoder's vector size), not yet connected: it connects on first use, and
    ``start`` begins following the feed. ``ConfigError`` as ``build_cache`` raises it."""
    from router.redis_client import connect

    c, feed_block_s = config.cache, 0.5
    semantic, verifier = semantic_tier(config, dim, encoder, gate)
    return SharedCache(connect(config.redis), connect(config.redis, blocking_s=feed_block_s),
                       config.redis.prefix, semantic=semantic, verifier=verifier,
                       candidates=c.candidates, max_entries=c.max_entries,
                       max_bytes=c.max_bytes, block_ms=int(feed_block_s * 1000),
                       encoder=encoder, gate=gate if semantic is not None else None)
