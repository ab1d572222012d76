"""``contextforge report`` through the CLI's entry point: the config's log or ``--logs``, on
SQLite and PostgreSQL, relative ``--since``, budgets from the config, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import DEFAULT_CONFIG
from service.cli import main
from service.cli_report import _budgets, parse_when
from tests.report_log import AS_OF, build_records, count, money, tables, write_log

UNTIL = "2026-03-16"


@pytest.fixture(scope="module")
def dsn(tmp_path_factory):
    dsn = f"sqlite:///{tmp_path_factory.mktemp('cli-report') / 'traffic.sqlite3'}"
    write_log(dsn)
    return dsn


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["report", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_report_from_logs_with_a_relative_since(dsn, tmp_path, capsys):
    code, out, _ = _run(capsys, "--logs", dsn, "--until", UNTIL, "--since", "7d",
                        "--tenant", "acme", "--out", str(tmp_path / "r"))
    assert code == 0
    report = tmp_path / "r" / "report.md"
    assert str(report) in out.splitlines() and (tmp_path / "r" / "forecast.png").is_file()
    t = tables(report.read_text())
    rows, _ = build_records()
    since = AS_OF.timestamp() - 7 * 86400
    assert count(t["Summary"][0]["requests"]) == sum(
        r.tenant == "acme" and r.ts >= since for r in rows) == 14
    assert "Window: 2026-03-09 00:00 UTC to 2026-03-16 00:00 UTC, tenant **acme**" in \
        report.read_text()


def test_report_reads_the_configs_log_and_shows_its_budgets(dsn, tmp_path, capsys):
    # A config beside its log, naming it by a relative path, with org budgets per month.
    (tmp_path / "t.sqlite3").write_bytes(Path(dsn.removeprefix("sqlite:///")).read_bytes())
    text = DEFAULT_CONFIG.read_text().replace("sqlite:///var/traffic.sqlite3",
                                              "sqlite:///t.sqlite3", 1)
    text = text.replace("  budgets: []", "  budgets: [{scope: org, name: acme, usd: 2.48}, "
                        "{scope: org, usd: 100}]", 1)
    config = tmp_path / "contextforge.yaml"
    config.write_text(text)
    code, _, _ = _run(capsys, "--config", str(config), "--until", UNTIL, "--out",
                      str(tmp_path / "r"))
    assert code == 0
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert f"Traffic log: sqlite:///{(tmp_path / 't.sqlite3').resolve()}" in markdown
    forecast = {r["tenant"]: r for r in tables(markdown)["Spend forecast for 2026-03"]}
    assert money(forecast["acme"]["budget"]) == 2.48
    assert forecast["acme"]["forecast / budget"] == "50%"  # $1.24 of $2.48
    assert money(forecast["globex"]["budget"]) == 100  # the * rule


def test_report_on_postgresql(pg_dsn, tmp_path, capsys):
    rows, _ = write_log(pg_dsn)
    code, _, _ = _run(capsys, "--logs", pg_dsn, "--until", UNTIL, "--out", str(tmp_path / "r"))
    assert code == 0
    markdown = (tmp_path / "r" / "report.md").read_text()
    t = tables(markdown)
    assert count(t["Summary"][0]["requests"]) == len(rows)
    assert {r["arm"] for r in t["A/B arms"]} == {"v1", "v2", "(none)"}
    assert {r["model"] for r in t["Quality per model"]} == {"big", "small"}
    forecast = {r["tenant"]: r for r in t["Spend forecast for 2026-03"]}
    assert money(forecast["acme"]["forecast total"]) == pytest.approx(1.24, rel=1e-3)
    assert "options" not in markdown  # the DSN shown is host and database only


@pytest.mark.parametrize(("argv", "message"), [
    (["--logs", "sqlite:///{tmp}/missing.sqlite3"], "missing.sqlite3: no such file"),
    (["--logs", "{dsn}", "--since", "last week"], "--since 'last week': give an ISO 8601"),
    (["--logs", "{dsn}", "--until", UNTIL, "--tenant", "nobody"],
     "no requests in the traffic log before 2026-03-16 00:00 UTC for tenant 'nobody'"),
    (["--logs", "{dsn}", "--since", "2026-04-01", "--until", UNTIL], "--since must be before"),
    (["--logs", "postgresql://cf:secret@127.0.0.1:1/none"],
     "traffic log postgresql://***@127.0.0.1:1/none: cannot open"),
])
def test_errors_are_one_clear_line(dsn, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, dsn=dsn) for a in argv]
    code, _, err = _run(capsys, *argv, "--out", str(tmp_path / "r"))
    assert code == 2
    assert err.startswith("contextforge report: error: ") and message in err
    assert "Traceback" not in err and "secret" not in err
    assert not (tmp_path / "missing.sqlite3").exists()  # not created by looking
    assert not (tmp_path / "r" / "report.md").exists()


def test_since_and_until_parse_spans_and_dates():
    now = AS_OF.timestamp()
    assert parse_when("7d", now, "--since") == now - 7 * 86400
    assert parse_when("12h", now, "--since") == now - 12 * 3600
    assert parse_when("2026-03-01", now, "--since") == now - 15 * 86400
    assert parse_when("2026-03-16T02:00:00+02:00", now, "--since") == now
    assert parse_when(None, now, "--since") is None
    with pytest.raises(ValueError, match="--until '7 days'"):
        parse_when("7 days", now, "--until")


def test_the_monthly_budget_shown_is_the_smallest_rule_that_applies():
    from types import SimpleNamespace as NS

    def rule(name, usd, scope="org", period="month"):
        return NS(name=name, usd=usd, scope=scope, period=period)

    config = NS(limits=NS(budgets=[rule("*", 50.0), rule("acme", 80.0), rule("beta", 20.0),
                                   rule("acme", 5.0, period="day"), rule("u1", 1.0, "user")]))
    budget = _budgets(config)
    # every org rule naming the tenant or * charges one bucket: the smallest refuses first
    assert (budget("acme"), budget("beta"), budget("other")) == (50.0, 20.0, 50.0)
    assert _budgets(NS(limits=NS(budgets=[])))("acme") is None
