"""The usage report (eval.report) on a small ~60-day traffic log: its tables against figures
computed here from the rows written, its plots, and its filters."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import numpy as np
import pytest

from eval.report import render, usd, write_report
from eval.report_data import EmptyWindow, Window, gather
from router.traffic import TrafficLog
from tests.report_log import ACME_DAILY, AS_OF, DAYS, count, money, tables, write_log

PNG = b"\x89PNG\r\n\x1a\n"
UNTIL = AS_OF.timestamp()


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """(the log, the rows and scores written)."""
    dsn = f"sqlite:///{tmp_path_factory.mktemp('report') / 'traffic.sqlite3'}"
    rows, scores = write_log(dsn)
    log = TrafficLog(dsn)
    yield log, rows, scores
    log.close()


def _report(log, tmp_path, **window) -> tuple[dict, dict]:
    written = write_report(log, Window(until=UNTIL, **window), tmp_path / "out",
                           source="test")
    return written, tables(written["report.md"].read_text())


@pytest.fixture(scope="module")
def full(logged, tmp_path_factory):
    """The whole log's report: (files written, tables by section)."""
    return _report(logged[0], tmp_path_factory.mktemp("full"))


def _sums(rows, key) -> dict:
    """requests, tokens and spend per ``key(row)``, computed from the rows themselves."""
    out = defaultdict(lambda: {"requests": 0, "input": 0, "output": 0, "spend": 0.0})
    for r in rows:
        s = out[key(r)]
        s["requests"] += 1
        s["input"] += r.input_tokens or 0
        s["output"] += r.output_tokens or 0
        s["spend"] += r.cost_usd or 0.0
    return out


def _check(table: list[dict], expected: dict, *keys: str) -> None:
    got = {tuple(row[k] for k in keys): row for row in table}
    want = {tuple("(none)" if v is None else v for v in (k if isinstance(k, tuple) else (k,))): s
            for k, s in expected.items()}
    assert set(got) == set(want)
    for k, s in want.items():
        row = got[k]
        assert count(row["requests"]) == s["requests"]
        assert count(row["input tokens"]) == s["input"]
        assert count(row["output tokens"]) == s["output"]
        assert money(row["spend"]) == pytest.approx(s["spend"], rel=1e-3)


def test_tables_match_the_rows(logged, full):
    rows, (_, t) = logged[1], full
    [summary] = t["Summary"]
    assert count(summary["requests"]) == len(rows)
    assert count(summary["errors"]) == sum(r.status >= 400 for r in rows)
    assert count(summary["cache hits"]) == sum((r.cache or "").startswith("hit") for r in rows)
    assert money(summary["spend"]) == pytest.approx(sum(r.cost_usd or 0 for r in rows), rel=1e-3)
    _check(t["Models"], _sums(rows, lambda r: r.model), "model")
    _check(t["Users"], _sums(rows, lambda r: (r.tenant, r.user_id)), "tenant", "user")
    _check(t["Projects"], _sums(rows, lambda r: (r.tenant, r.project)), "tenant", "project")
    assert {row["tenant"] for row in t["Tenants"]} == {"acme", "globex", "initech"}
    costs = np.array([r.cost_usd or 0.0 for r in rows])
    [cost] = t["Cost per request"]
    for column, value in (("mean", costs.mean()), ("p50", np.percentile(costs, 50)),
                          ("p99", np.percentile(costs, 99)), ("max", costs.max())):
        assert money(cost[column]) == pytest.approx(value, rel=1e-3)


def test_quality_per_model_and_ab_arms_match_the_scores(logged, full):
    _, rows, scores = logged
    t = full[1]
    by_id = {r.id: r for r in rows}
    per_model = defaultdict(list)
    per_arm = defaultdict(list)
    for s in scores:
        per_model[by_id[s.request_id].model].append(s.score)
        per_arm[by_id[s.request_id].arm].append(s.score)
    quality = {row["model"]: row for row in t["Quality per model"]}
    assert set(quality) == set(per_model)
    for model, values in per_model.items():
        assert count(quality[model]["scored"]) == len(values)
        assert float(quality[model]["mean score"]) == pytest.approx(np.mean(values), abs=5e-4)
        assert float(quality[model]["± 2 s.e."]) == pytest.approx(
            2 * np.std(values, ddof=1) / np.sqrt(len(values)), abs=5e-4)
    arms = {row["arm"]: row for row in t["A/B arms"]}
    # Route auto is split (v1, v2); initech's requests on it were decided by no arm.
    assert set(arms) == {"v1", "v2", "(none)"}
    assert {row["route"] for row in t["A/B arms"]} == {"auto"}
    for arm in ("v1", "v2"):
        mine = [r for r in rows if r.arm == arm]
        assert count(arms[arm]["requests"]) == len(mine)
        assert money(arms[arm]["spend"]) == pytest.approx(sum(r.cost_usd for r in mine))
        assert float(arms[arm]["p95 ms"].replace(",", "")) == pytest.approx(
            np.percentile([r.latency_ms for r in mine], 95), abs=0.05)
        assert arms[arm]["scores"] == (f"reference {np.mean(per_arm[arm]):.3f} "
                                       f"(n={len(per_arm[arm])})")
    assert arms["(none)"]["scores"] == "-"
    assert count(arms["(none)"]["requests"]) == sum(r.tenant == "initech" for r in rows)


def test_forecast_states_its_backtest_error(logged, full):
    rows, (written, t) = logged[1], full
    forecast = {row["tenant"]: row for row in t["Spend forecast for 2026-03"]}
    march = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()
    spent = defaultdict(float)
    for r in rows:
        if r.ts >= march:
            spent[r.tenant] += r.cost_usd or 0.0
    acme, globex = forecast["acme"], forecast["globex"]
    assert money(acme["spent so far"]) == pytest.approx(spent["acme"], rel=1e-3)
    assert money(acme["forecast total"]) == pytest.approx(31 * ACME_DAILY, rel=1e-3)
    assert money(acme["± backtest MAE"]) == 0 and acme["MAPE"] == "0.0%"  # constant: exact
    assert money(globex["± backtest MAE"]) > 0.01  # noisy: a real error, stated
    assert float(globex["MAPE"].rstrip("%")) > 1
    assert money(globex["forecast total"]) > spent["globex"]
    assert forecast["initech"]["forecast total"] == "too little history"
    report = written["report.md"].read_text()
    assert "- initech: too little history: 10 complete days of spend" in report


def test_every_plot_is_a_readable_png(full):
    from matplotlib.image import imread

    written = full[0]
    assert set(written) == {"report.md", "cost_per_request.png", "tokens.png", "models.png",
                            "users_projects.png", "quality.png", "ab_arms.png", "forecast.png"}
    markdown = written["report.md"].read_text()
    for name, path in written.items():
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG
            height, width, _ = imread(path).shape
            assert width >= 600 and height >= 200
            assert f"]({name})" in markdown  # the report shows it


def test_tenant_filters_every_table_and_the_forecast(logged, tmp_path):
    log, rows, _ = logged
    _, t = _report(log, tmp_path, tenant="globex")
    mine = [r for r in rows if r.tenant == "globex"]
    assert count(t["Summary"][0]["requests"]) == len(mine)
    _check(t["Models"], _sums(mine, lambda r: r.model), "model")
    _check(t["Users"], _sums(mine, lambda r: (r.tenant, r.user_id)), "tenant", "user")
    assert "Tenants" not in t
    assert [row["tenant"] for row in t["Spend forecast for 2026-03"]] == ["globex"]
    assert "A/B arms" not in t and "Quality per model" not in t  # globex has neither


def test_since_filters_the_window(logged, tmp_path):
    log, rows, _ = logged
    since = UNTIL - 7 * 86400
    _, t = _report(log, tmp_path, since=since)
    recent = [r for r in rows if r.ts >= since]
    assert count(t["Summary"][0]["requests"]) == len(recent) < len(rows)
    _check(t["Projects"], _sums(recent, lambda r: (r.tenant, r.project)), "tenant", "project")
    # The forecast still reads the whole history: its backtest needs it.
    assert t["Spend forecast for 2026-03"][0]["windows"] == str(DAYS - 14 - 16 + 1)


def test_an_empty_window_is_an_error(logged):
    with pytest.raises(EmptyWindow, match=r"no requests .* for tenant 'nobody'"):
        gather(logged[0], Window(until=UNTIL, tenant="nobody"))
    with pytest.raises(EmptyWindow, match="no requests"):
        gather(logged[0], Window(until=UNTIL + 86400, since=UNTIL))


def test_no_scores_and_no_arms_are_said_not_drawn(tmp_path):
    from router.traffic import TrafficRecord

    log = TrafficLog(f"sqlite:///{tmp_path / 'plain.sqlite3'}")
    try:
        log.write(TrafficRecord(id="r1", ts=UNTIL - 3600, status=200, tenant="t", model="m",
                                input_tokens=5, output_tokens=7, cost_usd=0.002))
        log.flush()
        data = gather(log, Window(until=UNTIL))
        written = write_report(log, Window(until=UNTIL), tmp_path / "out", source="x")
    finally:
        log.close()
    markdown = render(data, source="x")
    assert "No scores on this window's requests" in markdown
    assert "No route split its traffic" in markdown
    assert "quality.png" not in written and "ab_arms.png" not in written
    assert "too little history: 1 complete day of spend" in markdown


@pytest.mark.parametrize(("value", "shown"), [(0, "$0"), (1234.5678, "$1,234.57"),
                                              (12.345, "$12.35"), (0.5, "$0.5000"),
                                              (0.000123456, "$0.0001235"),
                                              (1.2e-17, "$0"), (3e-9, "$0.0000000030")])
def test_usd_keeps_four_significant_figures(value, shown):
    assert usd(value) == shown
