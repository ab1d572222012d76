"""router.stats and router.stats_budgets on a hand-made traffic log: every figure checked
against what the rows say."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router.config import BudgetRule
from router.stats import POINTS, bucket_seconds, provider_of, traffic_stats
from router.stats_budgets import burndown, period_bounds
from router.traffic import CandidateLog, ScoreRow, TrafficLog, TrafficRecord

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()
PRICES = {"big": (10.0, 30.0), "small": (0.1, 0.4)}


def row(i: int, ts: float, **kw) -> TrafficRecord:
    base = dict(id=f"r{i}", ts=ts, status=200, tenant="acme", route="auto", model="big",
                deployment="openai:https://api.example/v1", cache="miss", input_tokens=100,
                output_tokens=50, cost_usd=0.0025, latency_ms=100.0 + i)
    return TrafficRecord(**{**base, **kw})


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request, tmp_path):
    """The same rows in a SQLite log and in one on the local PostgreSQL (the SQL differs)."""
    dsn = (f"sqlite:///{tmp_path / 't.sqlite3'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_dsn"))
    log = TrafficLog(dsn)
    cands = [CandidateLog("big", 0.9, 0.0025), CandidateLog("small", 0.6, 0.0001)]
    rows = [row(i, NOW - 600 + i, candidates=cands) for i in range(10)]
    rows += [row(10, NOW - 300, model="small", cost_usd=0.0001, candidates=cands,
                 deployment="anthropic:x", ttft_ms=40.0, tenant="globex", project="web"),
             row(11, NOW - 200, status=502, deployment=None, cost_usd=0.0, latency_ms=5.0,
                 error="upstream"),
             row(12, NOW - 100, cache="hit-exact", deployment=None, cost_usd=0.0,
                 latency_ms=1.0, input_tokens=1000, output_tokens=1000),
             row(13, NOW - 7200, cost_usd=5.0)]  # outside a one-hour window, same month
    for r in rows:
        log.write(r)
    log.flush()
    log.write_scores([ScoreRow("r0", "judge", 0.5), ScoreRow("r1", "judge", 0.7),
                      ScoreRow("r1", "other", 0.9)])
    yield log
    log.close()


def stats(log, **kw):
    return traffic_stats(log, since=NOW - 3600, until=NOW, price=PRICES.get, **kw)


def test_buckets_give_at_least_the_points_a_chart_needs():
    for window in (60, 300, 3600, 86400, 30 * 86400):
        step = bucket_seconds(window)
        assert window / step >= POINTS or step == 1


def test_provider_names():
    assert provider_of("openai:https://x", "miss") == "openai"
    assert provider_of(None, "hit-semantic") == "cache"
    assert provider_of(None, None) == "none"


def test_counts_series_and_errors(log):
    s = stats(log, providers={"big": "openai"}.get)
    r = s["requests"]
    assert r["total"] == 13 and r["errors"] == 1
    assert sum(r["series"]["requests_per_s"]) * s["bucket_s"] == pytest.approx(13, rel=1e-4)
    assert len(r["series"]["t"]) == 3600 // s["bucket_s"]
    errors = {e["provider"]: e for e in s["errors"]}
    # The failed row names no deployment: it counts against its model's provider.
    assert errors["openai"] == {"provider": "openai", "requests": 11, "errors": 1,
                                "error_rate": pytest.approx(1 / 11, abs=1e-4)}
    assert errors["cache"]["requests"] == 1 and "none" not in errors


def test_latency_percentiles_by_provider_and_model(log):
    lat = {(x["provider"], x["model"]): x for x in stats(log)["latency"]}
    big = lat[("openai", "big")]
    assert big["requests"] == 10 and big["p50_ms"] == pytest.approx(104.5)
    assert big["p99_ms"] == pytest.approx(108.91) and big["ttft_p50_ms"] is None
    assert lat[("anthropic", "small")]["ttft_p50_ms"] == 40.0
    assert lat[("cache", "big")]["p50_ms"] == 1.0


def test_routing_cache_and_spend(log):
    s = stats(log)
    assert {(x["model"], x["requests"]) for x in s["routing"]} == {("big", 11), ("small", 1)}
    c = s["cache"]
    assert c["hits"] == 1 and c["lookups"] == 13 and c["hits_by_tier"] == {"exact": 1}
    assert c["saved_usd"] == pytest.approx((1000 * 10 + 1000 * 30) / 1e6)  # big's prices
    sp = s["spend"]
    assert sp["total_usd"] == pytest.approx(10 * 0.0025 + 0.0001)
    assert [t["tenant"] for t in sp["by_tenant"]] == ["acme", "globex"]
    assert {p["project"] for p in sp["by_project"]} == {"none", "web"}
    assert sum(sp["series"]["model"]["big"]) == pytest.approx(0.025)


def test_quality_predicted_scored_and_value(log):
    s = stats(log)
    q = {x["model"]: x for x in s["quality"]}
    assert q["big"]["predicted"] == 0.9 and q["big"]["scored_requests"] == 2
    # r1's two scorers average to 0.8; with r0's 0.5 the model's mean is 0.65.
    assert q["big"]["scored"] == pytest.approx(0.65)
    assert q["small"]["scored"] is None
    (auto,) = s["value"]
    # 11 answers: 2 scored (0.5, 0.8), 9 predicted (8 x 0.9, 1 x 0.6).
    quality = (0.5 + 0.8 + 8 * 0.9 + 0.6) / 11
    assert auto["quality"] == pytest.approx(quality, abs=1e-4)
    assert auto["usd_per_quality"] == pytest.approx((0.025 + 0.0001) / 11 / quality, rel=1e-3)


def test_one_tenant_sees_its_rows_only(log):
    s = stats(log, tenant="globex")
    assert s["requests"]["total"] == 1 and [t["tenant"] for t in s["spend"]["by_tenant"]] == [
        "globex"]


def test_period_bounds():
    assert period_bounds("day", NOW) == (NOW - 12 * 3600, NOW + 12 * 3600)
    start, end = period_bounds("month", NOW)
    assert datetime.fromtimestamp(start, UTC) == datetime(2026, 12, 1, tzinfo=UTC)
    assert datetime.fromtimestamp(end, UTC) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_bounds("total", NOW) == (None, None)


def test_a_tenant_view_shows_no_other_organisations_unspent_budgets(log):
    rules = [BudgetRule(scope="org", usd=3.0, name="initech"),
             BudgetRule(scope="project", usd=1.0, name="initech/web"),
             BudgetRule(scope="key", usd=2.0, name="k-unused", period="total"),
             BudgetRule(scope="org", usd=4.0, name="globex"),
             BudgetRule(scope="project", usd=1.5, name="web")]  # every tenant's "web"
    seen = {b["bucket"] for b in burndown(log, rules, now=NOW, tenant="globex")}
    assert seen == {"org:globex", "project:globex/web"}  # "web" as globex spent on it
    everything = {b["bucket"] for b in burndown(log, rules, now=NOW)}
    assert {"org:initech", "project:initech/web", "key:k-unused"} <= everything


def test_burndown_per_organisation_and_named(log):
    rules = [BudgetRule(scope="org", usd=10.0), BudgetRule(scope="project", usd=1.0,
                                                           name="globex/web", period="day"),
             BudgetRule(scope="key", usd=2.0, name="k-unused", period="total")]
    out = {b["bucket"]: b for b in burndown(log, rules, now=NOW)}
    acme = out["org:acme"]  # the month so far: the row two hours ago counts too
    assert acme["spent_usd"] == pytest.approx(5.025)
    assert acme["remaining_usd"] == pytest.approx(10 - 5.025)
    assert acme["series"]["remaining_usd"][-1] == pytest.approx(acme["remaining_usd"])
    assert acme["series"]["remaining_usd"][0] == 10.0  # December 1st spent nothing
    assert acme["projected_usd"] == pytest.approx(5.025 * 31 / 4.5)
    assert out["project:globex/web"]["spent_usd"] == pytest.approx(0.0001)
    assert len(out["project:globex/web"]["series"]["t"]) == 12  # hours of the day so far
    assert out["key:k-unused"]["spent_usd"] == 0 and out["key:k-unused"]["projected_usd"] is None
    only = burndown(log, rules[:1], now=NOW, tenant="globex")
    assert [b["bucket"] for b in only] == ["org:globex"]


def test_a_charts_settled_buckets_are_read_once(log):
    """With a memo, a month's chart reads only the buckets not yet over: a row landing in a
    past day (which real traffic never does) is not seen, one of today is."""
    rules, memo = [BudgetRule(scope="org", usd=10.0, name="acme")], {}
    first = burndown(log, rules, now=NOW, memo=memo)[0]
    log.write(row(20, NOW - 3 * 86400, cost_usd=1.0))  # December 2nd: settled
    log.write(row(21, NOW - 60, cost_usd=0.5))  # today
    log.flush()
    again = burndown(log, rules, now=NOW, memo=memo)[0]
    assert again["spent_usd"] == pytest.approx(first["spent_usd"] + 0.5)
    fresh = burndown(log, rules, now=NOW)[0]  # without the memo: every row
    assert fresh["spent_usd"] == pytest.approx(first["spent_usd"] + 1.5)
