"""Two gateway replicas (two uvicorn servers, each with its own event loop) on the local Redis:
an answer one of them keeps is a hit through the other within a second, exact or paraphrased,
and a purge through one purges both.

Replica B asks with ``cache: {no_store: true}``: it never keeps an answer itself, so a hit
there can only come from what replica A kept."""

from __future__ import annotations

import os
import time

import httpx
import msgspec
import pytest

from router.config import CacheConfig, RedisConfig, load_config
from tests.e2e.gateway_server import gateway, redis_prefix

REDIS_URL = os.environ.get("CONTEXTFORGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY = "replica-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
WATER = "Is it safe to drink tap water in Mexico?"
PARAPHRASE = "Is it safe to drink the tap water in Mexico?"


def asking(text: str, **extra) -> dict:
    return {"model": "auto", "temperature": 0,
            "messages": [{"role": "user", "content": text}], **extra}



@pytest.fixture()
def prefix():
    yield from redis_prefix()


def replica(folder, prefix: str):
    folder.mkdir()
    cfg = load_config()
    return msgspec.structs.replace(
        cfg, cache=CacheConfig(enabled=True),
        redis=RedisConfig(url=REDIS_URL, prefix=prefix),
        server=msgspec.structs.replace(cfg.server, master_key=KEY),
        traffic=msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{folder / 't.sqlite3'}"))


def within(seconds: float, ask, done):
    """``ask()`` until ``done(answer)`` or ``seconds`` pass; the last answer."""
    deadline = time.monotonic() + seconds
    while not done(answer := ask()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return answer


def test_replicas_share_answers_and_a_purge_through_one_purges_both(tmp_path, engine, prefix):
    with gateway(replica(tmp_path / "a", prefix), engine) as url_a, \
            gateway(replica(tmp_path / "b", prefix), engine) as url_b, \
            httpx.Client(base_url=url_a, headers=AUTH) as a, \
            httpx.Client(base_url=url_b, headers=AUTH) as b:

        def on_b(text: str) -> httpx.Response:
            r = b.post("/v1/chat/completions", json=asking(text, cache={"no_store": True}))
            assert r.status_code == 200, r.text
            return r

        def cache_of(r: httpx.Response) -> str:
            return r.headers["x-contextforge-cache"]

        assert cache_of(on_b(WATER)) == "miss"  # nothing kept yet, and b keeps nothing
        first = a.post("/v1/chat/completions", json=asking(WATER))
        assert cache_of(first) == "miss"
        started = time.monotonic()
        exact = within(1.0, lambda: on_b(WATER), lambda r: cache_of(r) == "hit-exact")
        para = within(1.0, lambda: on_b(PARAPHRASE), lambda r: cache_of(r) == "hit-semantic")
        assert time.monotonic() - started < 2.0
        assert cache_of(exact) == "hit-exact" and cache_of(para) == "hit-semantic"
        assert exact.json()["choices"] == first.json()["choices"]
        assert para.json()["choices"] == first.json()["choices"]
        assert b.get("/admin/cache").json()["semantic"]["entries"] == 1  # from a's feed

        purge = a.post("/admin/cache/purge", json={"tenant": "default"})
        assert purge.status_code == 200 and purge.json()["purged"] == 1
        # b's index drops the vector on a's word (before any lookup there could notice).
        stats_b = within(1.0, lambda: b.get("/admin/cache").json(),
                         lambda s: s["semantic"]["entries"] == 0)
        assert stats_b["semantic"]["entries"] == 0
        assert stats_b["exact"]["entries"] == 0 and stats_b["shared"]["following"]
        assert a.get("/admin/cache").json()["semantic"]["entries"] == 0
        assert cache_of(on_b(WATER)) == "miss" and cache_of(on_b(PARAPHRASE)) == "miss"


def test_a_reconfigured_replica_replays_the_feed_into_its_new_cache(tmp_path, engine, prefix):
    from litestar.testing import TestClient

    from service.app import create_app

    cfg = replica(tmp_path / "a", prefix)
    with TestClient(create_app(cfg, engine=engine)) as c:
        c.headers.update(AUTH)
        gw = c.app.state.gateway
        old = gw.cache
        assert c.post("/v1/chat/completions",
                      json=asking(WATER)).headers["x-contextforge-cache"] == "miss"
        longer = msgspec.structs.replace(cfg, cache=CacheConfig(enabled=True, ttl_s=600))
        with c.portal() as portal:
            portal.call(gw.reconfigure, longer)
        assert gw.cache is not old and old._following.done()  # the old reader stopped

        def ask():
            return c.post("/v1/chat/completions",
                          json=asking(PARAPHRASE, cache={"no_store": True}))

        para = within(1.0, ask, lambda r: r.headers["x-contextforge-cache"] == "hit-semantic")
        assert para.headers["x-contextforge-cache"] == "hit-semantic"


def test_a_gateway_whose_redis_is_down_answers_every_request(tmp_path, engine, prefix):
    import socket

    from litestar.testing import TestClient

    from service.app import create_app

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = replica(tmp_path / "a", prefix)
    cfg = msgspec.structs.replace(cfg, redis=RedisConfig(url=f"redis://127.0.0.1:{port}/0"))
    with TestClient(create_app(cfg, engine=engine)) as c:
        c.headers.update(AUTH)
        answers = [c.post("/v1/chat/completions", json=asking(text))
                   for text in (WATER, WATER, PARAPHRASE)]
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert {r.headers["x-contextforge-cache"] for r in answers} == {"miss"}
        assert answers[0].json()["choices"][0]["message"]["content"]
        metrics = c.get("/metrics").text
        purge = c.post("/admin/cache/purge", json={"tenant": "default"})
        stats = c.get("/admin/cache").json()
    assert 'contextforge_cache_backend_errors_total{op="lookup"}' in metrics
    assert 'contextforge_cache_backend_errors_total{op="write"}' in metrics
    # An erasure that did not happen is never reported as done.
    assert purge.status_code == 503 and purge.json()["error"]["code"] == "cache_unavailable"
    assert stats["exact"]["entries"] is None and not stats["shared"]["following"]
