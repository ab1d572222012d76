"""The shared cache against the local Redis: two replicas (two ``SharedCache`` objects, as two
gateways hold them) see each other's entries, vectors, deletes and purges; tenants stay apart;
and a Redis that is down makes misses and dropped writes, never an error in a request.

Every test writes under its own key prefix and removes it afterwards, so runs in parallel
and a developer's own gateway on the same Redis do not meet."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid

import msgspec
import pytest
from redis.asyncio import Redis

from router.cache.gate import Gate
from router.cache.semantic import SemanticIndex
from router.cache.shared import SharedCache
from router.config import CacheConfig, Config, RedisConfig
from router.errors import CacheUnavailable
from router.redis_client import connect
from tests.unit.test_router.test_cache.test_store import DIM, PARA, Q, entry, unit
from tests.unit.test_router.test_cache.test_store import verifier as verifier  # the fixture

pytestmark = pytest.mark.anyio
REDIS_URL = os.environ.get("CONTEXTFORGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture()
def anyio_backend():
    return "asyncio"


@pytest.fixture()
async def prefix():
    p = f"cf-test-{uuid.uuid4().hex[:12]}:"
    yield p
    r = Redis.from_url(REDIS_URL)
    keys = [k async for k in r.scan_iter(match=p + "*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


@pytest.fixture()
async def replica(prefix, verifier):
    """``make()`` -> a started replica on the test's prefix (closed at the end)."""
    made: list[SharedCache] = []

    async def make(url: str = REDIS_URL, start: bool = True, gate: Gate | None = None
                   ) -> SharedCache:
        cfg = RedisConfig(url=url, prefix=prefix, timeout_s=0.5)
        index = SemanticIndex(DIM, "Flat", static_dim=gate.dim if gate else None)
        cache = SharedCache(connect(cfg), connect(cfg, blocking_s=0.2), prefix,
                            semantic=index, verifier=verifier, block_ms=200, gate=gate)
        if start:
            await cache.start()
        made.append(cache)
        return cache

    yield make
    await asyncio.gather(*(cache.close() for cache in made))


async def within(seconds: float, check):
    """``check()``'s first truthy value within ``seconds`` (its last value otherwise)."""
    deadline = time.monotonic() + seconds
    while not (got := await check()) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return got


def live(i: int, tenant: str = "t", user: str | None = None, ttl: float = 60.0):
    """Entry ``i`` of ``tenant`` expiring ``ttl`` seconds from now."""
    now = time.time()
    return msgspec.structs.replace(entry(i, tenant, user), created=now, expires=now + ttl)


async def test_an_answer_kept_by_one_replica_is_an_exact_hit_on_the_other(replica):
    a, b = await replica(), await replica()
    kept = live(1)
    a.keep(kept)
    assert await a.get("k1") == kept  # at once, before its write reaches Redis
    assert await within(1.0, lambda: b.get("k1")) == kept  # b never kept it: Redis has it
    assert await b.get("k2") is None
    assert (await b.stats())["exact"]["entries"] == 1


async def test_an_entry_expires_in_redis_with_its_ttl(replica, prefix):
    a, b = await replica(), await replica()
    a.keep(live(1, ttl=0.3))
    assert await within(1.0, lambda: b.get("k1"))
    r = Redis.from_url(REDIS_URL)
    try:
        assert 0 < await r.pttl(prefix + "cache:e:k1") <= 300
        await asyncio.sleep(0.4)
        assert await b.get("k1") is None and not await r.exists(prefix + "cache:e:k1")
    finally:
        await r.aclose()


async def test_a_vector_kept_by_one_replica_serves_a_paraphrase_on_the_other(replica):
    a, b = await replica(), await replica()
    v = unit(0)
    a.keep(live(1), Q, "s", v)
    match = await within(1.0, lambda: b.find("t", "s", PARA, unit(1, near=v)))
    assert match is not None and match.entry.id == "ce-1" and match.tier == "semantic"
    assert b.may_match("t", "s") and not b.may_match("other", "s")
    assert await b.find("other", "s", PARA, v) is None  # another tenant: never


async def test_a_vector_known_after_the_response_reaches_the_other_replica(replica):
    a, b = await replica(), await replica()
    kept, v = live(1), unit(0)
    a.keep(kept)  # the question's vector was not made on the way in
    a.index(kept, Q, "s", v)
    assert await within(1.0, lambda: b.find("t", "s", PARA, unit(1, near=v)))


async def test_a_gated_replica_publishes_both_vectors_once_the_transformers_comes(replica):
    gate = Gate(encoder="tiny", sha256="ab" * 32, dim=DIM, threshold=0.9)
    a, b = await replica(gate=gate), await replica(gate=gate)
    kept, v, s = live(1), unit(0), unit(5)
    a.keep(kept, Q, "s", None, static=s)  # a miss the gate stopped: the static vector only
    assert a.admits("t", "s", s) and not b.may_match("t", "s")
    a.index(kept, Q, "s", v)  # the transformer's, after the response: now the others learn
    assert await within(1.0, lambda: b.find("t", "s", PARA, unit(1, near=v)))
    assert b.admits("t", "s", unit(2, near=s)) and not b.admits("t", "s", unit(7))


async def test_a_replica_that_starts_later_replays_the_live_vectors(replica):
    a = await replica()
    a.keep(live(1), Q, "s", unit(0))
    a.keep(live(2, ttl=0.2), PARA, "s2", unit(3))
    await asyncio.sleep(0.4)  # the second has expired by the time c starts
    c = await replica()
    await asyncio.wait_for(c.feed.caught_up.wait(), 1.0)
    assert len(c.semantic) == 1 and c.may_match("t", "s") and not c.may_match("t", "s2")


async def test_delete_and_purge_on_one_replica_reach_every_replica(replica):
    a, b = await replica(), await replica()
    v = unit(0)
    for i, user in ((1, "ann"), (2, "bob"), (3, "bob")):
        a.keep(live(i, user=user), Q, f"s{i}", v)
    a.keep(live(4, tenant="u"), Q, "s1", v)
    assert await within(1.0, lambda: _true(len(b.semantic) == 4))
    assert await b.delete("ce-1") and not await b.delete("ce-1")
    assert await a.get("k1") is None
    assert await within(1.0, lambda: _true(len(a.semantic) == 3))
    assert await b.purge("t", "bob") == 2
    assert await a.get("k2") is None and await a.get("k3") is None
    assert await within(1.0, lambda: _true(len(a.semantic) == 1))
    assert await a.get("k4") is not None and a.may_match("u", "s1")  # the other tenant's
    assert await b.purge("u") == 1 and await b.get("k4") is None
    assert await within(1.0, lambda: _true(len(a.semantic) == 0))


async def test_a_purge_waits_for_writes_in_flight(replica):
    a, b = await replica(), await replica()
    a.keep(live(1))
    assert await a.purge("t") == 1  # its write had not landed: the purge waited for it
    await asyncio.sleep(0.1)
    assert await b.get("k1") is None and await a.get("k1") is None


async def _true(value: bool) -> bool:
    return value


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_redis_down_is_a_miss_and_a_dropped_write_never_an_error(replica, caplog):
    down = await replica(url=f"redis://127.0.0.1:{closed_port()}/0")
    v = unit(0)
    with caplog.at_level(logging.WARNING, "contextforge.cache"):
        down.keep(live(1), Q, "s", v)  # never raises, never blocks
        await asyncio.sleep(0.1)
        assert await down.get("k1") is None  # the write was dropped
        assert await down.find("t", "s", PARA, unit(1, near=v)) is None
        assert await down.get("k2") is None
    assert down.errors >= 1 and (await down.stats())["exact"]["entries"] is None
    assert "Redis write failed" in caplog.text
    assert "lost the Redis feed" in caplog.text and caplog.text.count("lost the Redis") == 1
    assert len(down.semantic) == 1  # its vector stays for when Redis is back
    with pytest.raises(CacheUnavailable):  # an erasure that did not happen says so
        await down.purge("t")
    with pytest.raises(CacheUnavailable):
        await down.delete("ce-1")


def test_the_shared_cache_is_built_from_the_config_without_connecting(anyio_backend):
    from router.cache.shared import build_shared_cache

    cfg = Config(cache=CacheConfig(enabled=True, semantic=False),
                 redis=RedisConfig(url="redis://127.0.0.1:1/0", prefix="x:"))
    shared = build_shared_cache(cfg, None)  # nothing listens there: no connection yet
    assert shared.prefix == "x:cache:" and shared.semantic is None


class Proxy:
    """A TCP proxy to the local Redis that a test can cut and restore: a Redis that goes away
    and comes back, without touching the real one."""

    def __init__(self) -> None:
        self.port = closed_port()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._open):
            w.close()
        await self._server.wait_closed()

    async def _serve(self, client_r, client_w) -> None:
        host, port = REDIS_URL.split("//")[1].split("/")[0].split(":")
        server_r, server_w = await asyncio.open_connection(host, int(port))
        self._open |= {client_w, server_w}

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()
                self._open.discard(w)

        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))


async def test_a_reader_that_loses_redis_resumes_where_it_stopped(replica, caplog):
    proxy = Proxy()
    await proxy.start()
    a, b = await replica(), await replica(url=f"redis://127.0.0.1:{proxy.port}/0")
    a.keep(live(1), Q, "s", unit(0))
    assert await within(1.0, lambda: _true(len(b.semantic) == 1))
    with caplog.at_level(logging.INFO, "contextforge.cache"):
        await proxy.cut()
        a.keep(live(2), PARA, "s2", unit(3))  # while b cannot hear it
        await asyncio.sleep(0.5)
        assert len(b.semantic) == 1 and await b.get("k2") is None  # a miss, not an error
        await proxy.start()
        # b's reader comes back (backoff from 0.1 s, doubling) and reads what it missed.
        assert await within(5.0, lambda: _true(len(b.semantic) == 2))
    assert caplog.text.count("lost the Redis feed") == 1
    assert "the Redis feed is back" in caplog.text
    assert (await within(2.0, lambda: b.get("k2"))).id == "ce-2"  # lookups resume too
    await proxy.cut()
