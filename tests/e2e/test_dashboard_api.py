"""``GET /admin/stats`` (the dashboard's JSON API) and ``/dashboard`` through the app: shapes
from real requests, credentials, the tenant view, window validation, the page's headers."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from service.app import create_app
from tests.e2e.dashboard_traffic import (
    FAILING,
    MASTER,
    bearer,
    dashboard_config,
    make_traffic,
    new_key,
    score,
)

ADMIN = bearer(MASTER)


@pytest.fixture(scope="module")
def served(tmp_path_factory, engine):
    """One app with traffic of two organisations (acme, globex) and scores beside acme's."""
    tmp = tmp_path_factory.mktemp("dash")
    with pytest.MonkeyPatch.context() as mp:
        # A fixed key-hashing secret, so the keys made here verify in the app.
        mp.setenv("CONTEXTFORGE_KEY_SECRET", "test-secret-0123456789")
        cfg = dashboard_config(tmp)
        keys = {org: new_key(cfg, org) for org in ("acme", "globex")}
        viewer = new_key(cfg, "acme", role="viewer")
        with TestClient(create_app(cfg, engine=engine)) as c:
            ids = make_traffic(lambda path, body, headers: c.post(path, json=body,
                                                                  headers=headers), keys)
            score(cfg.traffic.dsn, ids["acme"][:2], 0.5)
            yield c, viewer, keys


def stats(c, headers=ADMIN, **params):
    r = c.get("/admin/stats", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_every_section_holds_the_requests_made(served):
    c, _, _ = served
    s = stats(c, window_s=600)
    assert s["window_s"] == 600 and s["tenant"] is None and s["traffic_log"] is True
    # Per org: 4 routed + 1 hit + 1 stream + 1 failure.
    assert s["requests"]["total"] == 14 and s["requests"]["errors"] == 2
    assert sum(s["requests"]["series"]["requests_per_s"]) * s["bucket_s"] == pytest.approx(14)
    assert len(s["requests"]["series"]["t"]) == len(s["requests"]["series"]["errors_per_s"])
    errors = {e["provider"]: e for e in s["errors"]}
    assert errors["simulated"]["errors"] == 2 and errors["cache"]["errors"] == 0
    lat = {(r["provider"], r["model"]): r for r in s["latency"]}
    assert all(r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] for r in lat.values())
    assert any(r["ttft_p50_ms"] is not None for r in lat.values())  # the streams
    routes = {r["route"] for r in s["routing"]}
    assert {"auto", "quality-first"} <= routes
    for route in routes:
        assert sum(r["share"] for r in s["routing"] if r["route"] == route) == pytest.approx(1)
    assert s["cache"]["hits"] == 2 and s["cache"]["hits_by_tier"] == {"exact": 2}
    assert s["cache"]["saved_usd"] > 0 and 0 < s["cache"]["hit_rate"] < 1
    assert {t["tenant"] for t in s["spend"]["by_tenant"]} == {"acme", "globex"}
    assert s["spend"]["total_usd"] == pytest.approx(sum(t["cost_usd"]
                                                        for t in s["spend"]["by_tenant"]))
    assert set(s["spend"]["series"]["tenant"]) == {"acme", "globex"}
    assert FAILING not in {m["model"] for m in s["quality"]}  # only answers count
    assert all(0 <= m["predicted"] <= 1 for m in s["quality"])
    assert any(m["scored"] == 0.5 and m["scored_requests"] >= 1 for m in s["quality"])
    assert all(v["usd_per_quality"] > 0 for v in s["value"])
    budgets = {b["bucket"]: b for b in s["budgets"]}
    assert set(budgets) == {"org:acme", "org:globex"}
    acme = budgets["org:acme"]
    assert acme["limit_usd"] == 1.0 and acme["spent_usd"] > 0
    assert acme["remaining_usd"] == pytest.approx(1.0 - acme["spent_usd"])
    assert acme["series"]["remaining_usd"][-1] == pytest.approx(acme["remaining_usd"])
    states = {(d["model"], d["state"]) for d in s["deployments"]}
    assert any(model == FAILING for model, _ in states)


def test_a_viewer_sees_its_own_organisation_only(served):
    c, viewer, _ = served
    s = stats(c, bearer(viewer))
    assert s["tenant"] == "acme" and s["requests"]["total"] == 7
    assert [t["tenant"] for t in s["spend"]["by_tenant"]] == ["acme"]
    assert [b["bucket"] for b in s["budgets"]] == ["org:acme"]
    assert s["deployments"] is None  # the platform's, not an organisation's
    other = c.get("/admin/stats", params={"tenant": "globex"}, headers=bearer(viewer))
    assert other.status_code == 403 and "globex" in other.json()["error"]["message"]
    assert stats(c, tenant="globex")["requests"]["total"] == 7  # the platform may look


def test_credentials(served):
    c, _, keys = served
    assert c.get("/admin/stats").status_code == 401
    assert c.get("/admin/stats", headers=bearer("wrong")).status_code == 401
    member = c.get("/admin/stats", headers=bearer(keys["acme"]))
    assert member.status_code == 403 and "member" in member.json()["error"]["message"]


@pytest.mark.parametrize("window", ["abc", "0", "59", "1e9", "nan", "inf", "-5"])
def test_a_bad_window_is_a_clear_400(served, window):
    c, _, _ = served
    r = c.get("/admin/stats", params={"window_s": window}, headers=ADMIN)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "window_s" and "from 60 to 2592000" in err["message"]


def test_answers_are_kept_briefly_so_pollers_share_them(served):
    c, _, keys = served
    first = stats(c, window_s=900)
    c.post("/v1/chat/completions", json={"model": "auto", "messages": [
        {"role": "user", "content": "One more question."}]}, headers=bearer(keys["acme"]))
    kept = stats(c, window_s=900)
    assert kept["requests"]["total"] == first["requests"]["total"]  # within the TTL
    assert stats(c, window_s=901)["requests"]["total"] == first["requests"]["total"] + 1


def test_the_page_and_its_assets(served):
    c, _, _ = served
    page = c.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert 'id="panel-requests"' in page.text and "cdn" not in page.text.lower()
    lib = c.get("/dashboard/assets/uPlot.iife.min.js")
    assert lib.status_code == 200 and "uPlot" in lib.text[:200]
    assert "MIT" in c.get("/dashboard/assets/LICENSE.uPlot.txt").text
    assert c.get("/dashboard/assets/../app.py").status_code == 404
    assert c.get("/dashboard/assets/secret.py").status_code == 404
