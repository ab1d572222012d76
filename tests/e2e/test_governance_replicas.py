"""Two gateway replicas sharing Redis (limits, budgets) and PostgreSQL (keys): limits hold
exactly across them, concurrent requests never overspend a budget, and a key revoked through
one is refused by the other within a second."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import msgspec
import pytest
import redis

from router.config import (
    BudgetRule,
    GovernanceConfig,
    LimitsConfig,
    RateRule,
    RedisConfig,
    load_config,
)
from router.governance.stores import Governance
from tests.e2e.gateway_server import gateway, redis_prefix

REDIS_URL = os.environ.get("CONTEXTFORGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ASK = {"model": "gpt-4o", "max_tokens": 10,
       "messages": [{"role": "user", "content": "Name three prime numbers."}]}



@pytest.fixture()
def prefix(monkeypatch):
    monkeypatch.setenv("CONTEXTFORGE_KEY_SECRET", "replica-test-secret-0123")
    yield from redis_prefix()


def replica(folder, prefix: str, pg_dsn: str, limits: LimitsConfig):
    folder.mkdir(exist_ok=True)
    cfg = load_config()
    return msgspec.structs.replace(
        cfg, redis=RedisConfig(url=REDIS_URL, prefix=prefix), limits=limits,
        governance=GovernanceConfig(dsn=pg_dsn),  # the default key_cache_s
        traffic=msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{folder / 't.sqlite3'}"))


def two(tmp_path, prefix, pg_dsn, limits, engine):
    return (gateway(replica(tmp_path / "a", prefix, pg_dsn, limits), engine),
            gateway(replica(tmp_path / "b", prefix, pg_dsn, limits), engine))


def create_key(cfg) -> tuple[str, str]:
    gov = Governance.open(cfg)
    try:
        key, presented = gov.keys.create("acme")
        return key.id, presented
    finally:
        gov.close()


def hammer(urls: list[str], key: str, n: int, body: dict, clients: int = 20) -> list[int]:
    def one(i: int) -> int:
        with httpx.Client(base_url=urls[i % 2], timeout=30) as c:
            return c.post("/v1/chat/completions", json=body,
                          headers={"authorization": f"Bearer {key}"}).status_code

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(n)))


def test_a_request_limit_holds_exactly_across_replicas(tmp_path, engine, prefix, pg_dsn):
    limits = LimitsConfig(backend="redis", rules=[RateRule(scope="key",
                                                           requests_per_minute=100)])
    cfg = replica(tmp_path / "a", prefix, pg_dsn, limits)
    _, key = create_key(cfg)
    ga, gb = two(tmp_path, prefix, pg_dsn, limits, engine)
    with ga as a, gb as b:
        codes = hammer([a, b], key, 140, ASK)
    assert codes.count(200) == 100 and codes.count(429) == 40


def test_a_token_limit_holds_exactly_across_replicas(tmp_path, engine, prefix, pg_dsn):
    # Each request is charged an upper bound of its tokens up front (prompt with a margin,
    # plus max_tokens), corrected to the real count after: the real tokens admitted in the
    # window never pass the limit.
    limits = LimitsConfig(backend="redis", rules=[RateRule(scope="org", name="acme",
                                                           tokens_per_minute=400)])
    cfg = replica(tmp_path / "a", prefix, pg_dsn, limits)
    _, key = create_key(cfg)
    used: list[int] = []

    def one(url: str) -> int:
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.post("/v1/chat/completions", json=ASK,
                       headers={"authorization": f"Bearer {key}"})
            if r.status_code == 200:
                used.append(r.json()["usage"]["total_tokens"])
            return r.status_code

    ga, gb = two(tmp_path, prefix, pg_dsn, limits, engine)
    with ga as a, gb as b, ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(one, [a, b] * 20))
    assert codes.count(200) >= 5 and codes.count(429) > 0
    assert sum(used) <= 400


def test_fifty_concurrent_requests_never_overspend_a_shared_budget(tmp_path, engine, prefix,
                                                                   pg_dsn):
    limits = LimitsConfig(backend="redis",
                          budgets=[BudgetRule(scope="org", usd=0.004, period="day")])
    cfg = replica(tmp_path / "a", prefix, pg_dsn, limits)
    _, key = create_key(cfg)
    ga, gb = two(tmp_path, prefix, pg_dsn, limits, engine)
    with ga as a, gb as b:
        codes = hammer([a, b], key, 50, ASK)
        time.sleep(0.5)  # settlements run after each response
    r = redis.Redis.from_url(REDIS_URL)
    try:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        spent = float(r.hget(f"{prefix}budget:org:acme:{day}", "spent") or 0)
        reserved = float(r.hget(f"{prefix}budget:org:acme:{day}", "reserved") or 0)
    finally:
        r.close()
    assert 0 < codes.count(200) < 50 and codes.count(429) > 0
    # Never over; and the admitted requests use the budget (holds are settled to real costs,
    # which lets later requests in).
    assert 0.9 * 0.004 <= spent <= 0.004 + 1e-12 and reserved == pytest.approx(0.0, abs=1e-12)


def test_a_key_revoked_through_one_replica_is_refused_by_the_other_within_a_second(
        tmp_path, engine, prefix, pg_dsn):
    limits = LimitsConfig()
    cfg = replica(tmp_path / "a", prefix, pg_dsn, limits)
    key_id, key = create_key(cfg)
    auth = {"authorization": f"Bearer {key}"}
    ga, gb = two(tmp_path, prefix, pg_dsn, limits, engine)
    with ga as a, gb as b, httpx.Client(base_url=a) as ca, httpx.Client(base_url=b) as cb:
        assert cb.post("/v1/chat/completions", json=ASK, headers=auth).status_code == 200
        gov = Governance.open(cfg)
        gov.keys.revoke(key_id)  # what `contextforge keys revoke` does, on the shared store
        gov.close()
        revoked_at = time.monotonic()
        while cb.post("/v1/chat/completions", json=ASK, headers=auth).status_code != 401:
            assert time.monotonic() - revoked_at < 1.5
            time.sleep(0.05)
        assert time.monotonic() - revoked_at <= 1.0
        assert ca.post("/v1/chat/completions", json=ASK, headers=auth).status_code == 401
