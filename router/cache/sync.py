"""The feed that keeps every replica's semantic index in step: one Redis stream.

Why a stream and not pub/sub: a replica that starts (or reconnects) must learn the vectors
the others wrote before it was listening. A stream keeps its last entries, so a new replica
reads it from the beginning, then blocks for what comes next (``XREAD BLOCK``); pub/sub would
lose everything sent while it was away.

Events (one msgpack field ``e`` per stream entry, with the writer's replica id):

- ``put``: an entry's vector (and its static routing vector, on gateways whose cache has a
  gate) and what the index keeps beside it (tenant, user, scope, last user turn, expiry).
  The answer itself is not here: it lives once, in the exact tier.
- ``delete``: one entry's vectors go (an invalidation, a reported wrong hit).
- ``purge``: every entry of a tenant, or of one of its users (erasure).

The stream is trimmed to about ``cache.max_entries`` events (``MAXLEN ~``), so its length,
and the replay at start, are bounded by the cache's own size. Replayed ``put`` events whose
entries have expired are skipped; one whose answer has gone from the exact tier is dropped by
the first lookup that meets it (``router.cache.store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("contextforge.cache")

BATCH = 100  # events per read: a replay yields to requests between batches (~50 ms of HNSW adds)
BACKOFF_S = (0.1, 5.0)  # first and longest wait before a lost reader tries Redis again


class Put(msgspec.Struct, frozen=True, tag="put"):
    entry: str
    tenant: str
    user: str | None
    scope: str
    text: str
    vector: bytes  # float32, the index's dim
    expires: float
    static: bytes | None = None  # float32: the static routing vector, for a gate


class Delete(msgspec.Struct, frozen=True, tag="delete"):
    entry: str


class Purge(msgspec.Struct, frozen=True, tag="purge"):
    tenant: str
    user: str | None = None


Event = Put | Delete | Purge


class _Envelope(msgspec.Struct, frozen=True):
    replica: str
    event: Event


_ENCODE = msgspec.msgpack.Encoder()
_DECODE = msgspec.msgpack.Decoder(_Envelope)


class Feed:
    """Publish this replica's events on ``stream``; apply every other replica's with ``apply``
    (which gets the events of one read, in order)."""

    def __init__(self, client: Redis, reader: Redis, stream: str, replica: str, maxlen: int,
                 apply: Callable[[list[Event]], None], block_ms: int = 1000,
                 clock: Callable[[], float] = time.time):
        self.client, self.reader, self.stream = client, reader, stream
        self.replica, self.maxlen, self.block_ms = replica, maxlen, block_ms
        self._apply, self._clock = apply, clock
        self.applied = 0  # events of other replicas applied
        self.following = False  # the last read succeeded
        self.caught_up = asyncio.Event()  # the replay at start reached the stream's end
        self._stopping = asyncio.Event()

    def add(self, pipe, event: Event) -> None:
        """Queue ``event`` on ``pipe`` (a pipeline: it goes with the writes it describes)."""
        pipe.xadd(self.stream, {"e": _ENCODE.encode(_Envelope(self.replica, event))},
                  maxlen=self.maxlen, approximate=True)

    async def publish(self, event: Event) -> None:
        """Send one event now (``RedisError`` to the caller)."""
        pipe = self.client.pipeline(transaction=False)
        self.add(pipe, event)
        await pipe.execute()

    async def run(self) -> None:
        """Read the stream from its start, then follow it, until cancelled. Losing Redis logs
        one line; the reader retries with a doubling backoff from where it stopped."""
        last, delay, lost = "0-0", BACKOFF_S[0], False
        while not self._stopping.is_set():
            try:
                got = await self.reader.xread({self.stream: last}, count=BATCH,
                                              block=self.block_ms)
            except (RedisError, OSError) as exc:
                self.following = False
                if self._stopping.is_set():
                    return
                if not lost:
                    log.warning("cache: lost the Redis feed (%s); retrying with backoff", exc)
                    lost = True
                with contextlib.suppress(TimeoutError):  # a stop ends the wait
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, BACKOFF_S[1])
                continue
            if lost:
                log.info("cache: the Redis feed is back")
                lost, delay = False, BACKOFF_S[0]
            self.following = True
            messages = got[0][1] if got else []
            if messages:
                last = messages[-1][0]
                self._deliver(messages)
            if len(messages) < BATCH:
                self.caught_up.set()
            await asyncio.sleep(0)  # a long replay lets requests in between batches

    async def stop(self, task: asyncio.Task) -> None:
        """End ``task`` (this feed's ``run``): it returns after its current read (at most
        ``block_ms``). Not by cancelling it first: redis-py 8 can swallow a cancellation that
        lands in a blocked ``XREAD`` and go on reading; cancelling is the last resort."""
        self._stopping.set()
        done, _ = await asyncio.wait([task], timeout=self.block_ms / 1000 + 1.0)
        if not done:
            task.cancel()
            await asyncio.wait([task], timeout=1.0)

    def _deliver(self, messages: list) -> None:
        events, now = [], self._clock()
        for _id, fields in messages:
            try:
                envelope = _DECODE.decode(fields[b"e"])
            except (KeyError, msgspec.DecodeError):
                log.warning("cache: skipped an unreadable event on %s", self.stream)
                continue
            if envelope.replica == self.replica:
                continue  # applied when it was made
            event = envelope.event
            if isinstance(event, Put) and event.expires <= now:
                continue
            events.append(event)
        if events:
            self._apply(events)
            self.applied += len(events)
