"""deploy/prometheus/alerts.yaml and deploy/grafana/contextforge.json: well-formed, every
expression valid PromQL, and every metric and label they read one the gateway exports
(service/metrics.py): a renamed metric fails here rather than leaving an alert silent."""

from __future__ import annotations

import json
import re

import pytest

from tests.deploy.conftest import DEPLOY, yaml_documents
from tests.deploy.prom_names import exported, from_grafana, problems, reads

ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
DASHBOARD = DEPLOY / "grafana" / "contextforge.json"
# What the brief asks the rules to cover, by a metric each must read.
COVERED = {
    "error rate": "contextforge_requests_total",
    "p99 latency": "contextforge_request_duration_seconds_bucket",
    "circuit open": "contextforge_deployment_state",
    "budget burn": "contextforge_budget_alerts_total",
    "cache backend": "contextforge_cache_backend_errors_total",
    "limits backend": "contextforge_limits_backend_errors_total",
}


def rules() -> list[dict]:
    return [r for g in yaml_documents(ALERTS)[0]["groups"] for r in g["rules"]]


def panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


@pytest.fixture(scope="module")
def known() -> dict[str, frozenset[str]]:
    return exported()


def test_alert_rules_are_well_formed():
    found = rules()
    names = [r["alert"] for r in found]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_alert_expressions_read_only_exported_metrics(known):
    bad = {r["alert"]: p for r in rules() if (p := problems(r["expr"], known))}
    assert bad == {}


def test_alerts_cover_what_operators_page_on():
    read = {name for r in rules() for name, _ in reads(r["expr"]).selectors}
    assert {what for what, metric in COVERED.items() if metric not in read} == set()
    assert any("absent(" in r["expr"] for r in rules()), "no alert for a gateway gone silent"


def test_alert_annotations_use_labels_the_expression_keeps():
    for rule in rules():
        used = set(re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])))
        kept = {label for by, _ in reads(rule["expr"]).grouped for label in by}
        kept |= {label for _, labels in reads(rule["expr"]).selectors for label in labels}
        if " by " not in rule["expr"]:  # no aggregation: every label of the series survives
            kept |= {"instance", "job"}
        assert used <= kept, f"{rule['alert']}: {used - kept} is not in the alert's labels"


def test_dashboard_is_well_formed():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in board["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
    variables = {v["name"] for v in board["templating"]["list"]}
    for p in panels():
        assert p["targets"], f"{p['title']}: no query"
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            used = set(re.findall(r"\$\{?(\w+)", t["expr"])) - {"__rate_interval", "__range",
                                                                 "__interval"}
            assert used <= variables, f"{p['title']}: undefined variables {used - variables}"


def test_dashboard_queries_read_only_exported_metrics(known):
    bad = {p["title"]: pr for p in panels() for t in p["targets"]
           if (pr := problems(from_grafana(t["expr"]), known))}
    assert bad == {}


def test_the_dashboard_shows_every_exported_family(known):
    shown = {name for p in panels() for t in p["targets"]
             for name, _ in reads(from_grafana(t["expr"])).selectors}
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in known}
    unshown = {f for f in families
               if not any(re.sub(r"_(total|bucket)$", "", s) == f for s in shown)}
    assert unshown == set()


def test_a_renamed_metric_or_label_is_caught(known):
    # The check's control: names that are not exported fail it.
    assert problems("rate(contextforge_request_total[5m])", known) == [
        "unknown metric 'contextforge_request_total'"]
    assert problems('sum by (provider) (rate(contextforge_cost_usd_total[5m]))', known) == [
        "by ['provider']: not a label of ['contextforge_cost_usd_total']"]
    assert problems('contextforge_deployment_state{modle="x"}', known) == [
        "contextforge_deployment_state has no label ['modle']"]
    assert problems("sum(rate(contextforge_requests_total[5m])", known)[0].startswith(
        "not PromQL")
