"""``router.usage`` on both backends: PostgreSQL's driver reads ``%`` as a placeholder, so the
cache-hit count's ``LIKE 'hit%'`` must reach it escaped (``TrafficLog.read``)."""

from __future__ import annotations

import pytest

from router.traffic import TrafficLog, TrafficRecord
from router.usage import usage


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request, tmp_path):
    dsn = (f"sqlite:///{tmp_path / 't.sqlite3'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_dsn"))
    log = TrafficLog(dsn)
    yield log
    log.close()


def test_usage_groups_and_filters_on_both_backends(log):
    rows = [("a", "acme", "hit-exact", 0.0, 200), ("b", "acme", "miss", 0.25, 200),
            ("c", "acme", "miss", None, 502), ("d", "globex", "hit-semantic", 0.0, 200)]
    for i, (rid, tenant, cache, cost, status) in enumerate(rows):
        log.write(TrafficRecord(id=rid, ts=86400.0 * (i + 1), status=status, tenant=tenant,
                                cache=cache, cost_usd=cost, input_tokens=10, output_tokens=5))
    assert usage(log, ["tenant"], tenant="acme") == [
        {"tenant": "acme", "requests": 3, "errors": 1, "cache_hits": 1, "input_tokens": 30,
         "output_tokens": 15, "cost_usd": 0.25}]
    by_day = usage(log, ["day"], since=2 * 86400, until=4 * 86400)
    assert sorted(r["day"] for r in by_day) == ["1970-01-03", "1970-01-04"]
