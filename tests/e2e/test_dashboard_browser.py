"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
a real gateway on a free port, real requests of two organisations (routed, streamed, a cache
hit, a failure, scores beside some answers), then the page: sign in, every panel drawn with
data, no console errors, a screenshot saved as a test artifact (``tests/artifacts/``)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from tests.e2e.dashboard_traffic import MASTER, dashboard_config, make_traffic, new_key, score
from tests.upstreams import serve

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PANELS = ["requests", "errors", "latency", "routing", "cache", "spend", "budgets",
          "deployments", "quality", "value"]
CHARTS = ["requests", "cache", "spend", "budgets"]  # the panels that draw a uPlot canvas

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs /usr/bin/chromium (apt-get install -y chromium; "
                                       ".ci/run installs it)")


def test_every_panel_shows_the_requests_made(tmp_path, engine, secret):
    # Imported here, not skipped when missing: playwright is in the dev extra, and only a
    # missing browser is a reason to skip.
    from playwright.sync_api import sync_playwright
    cfg = dashboard_config(tmp_path)
    keys = {org: new_key(cfg, org) for org in ("acme", "globex")}
    viewer = new_key(cfg, "acme", role="viewer")
    with serve(create_app(cfg, engine=engine), lifespan="on") as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        ids = make_traffic(lambda path, body, headers: client.post(path, json=body,
                                                                   headers=headers), keys)
        score(cfg.traffic.dsn, ids["acme"][:3], 0.8)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--headless", "--no-sandbox", "--disable-gpu",
                      "--disable-background-networking", "--disable-component-update",
                      "--no-first-run"])
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                problems: list[str] = []
                page.on("console", lambda m: m.type in ("error", "warning")
                        and problems.append(m.text))
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(f"{base}/dashboard")
                page.fill("#key", "wrong-key")
                page.click("#login-form button")
                page.wait_for_selector("#login-error:not(:empty)")  # refused, asks again
                page.fill("#key", MASTER)
                page.click("#login-form button")
                for name in PANELS:
                    page.wait_for_selector(f"#panel-{name}[data-state=data]", timeout=15_000)
                drawn = {name: page.locator(f"#panel-{name} .table tbody tr").count()
                         for name in PANELS if name not in ("requests", "cache")}
                canvases = {name: page.locator(f"#panel-{name} canvas").count()
                            for name in CHARTS}
                texts = {name: page.inner_text(f"#panel-{name}") for name in PANELS}
                ARTIFACTS.mkdir(exist_ok=True)
                shot = ARTIFACTS / "dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
                print(f"dashboard screenshot: {shot}")
                # The session keeps the key: a reload draws again without asking.
                page.reload()
                page.wait_for_selector("#panel-spend[data-state=data]", timeout=15_000)
                assert not page.locator("#login").evaluate("d => d.open")
                # An organisation's viewer: its own tenant, and no deployments (empty state).
                page.click("#logout")
                page.fill("#key", viewer)
                page.click("#login-form button")
                page.wait_for_selector("#status:has-text('tenant acme')", timeout=15_000)
                page.select_option("#spend-by", "tenant")
                viewer_spend = page.inner_text("#panel-spend .table")
                viewer_deployments = page.get_attribute("#panel-deployments", "data-state")
            finally:
                browser.close()
    assert all(n > 0 for n in drawn.values()), drawn
    assert all(n > 0 for n in canvases.values()), canvases
    assert "acme" in texts["budgets"] and "globex" in texts["budgets"]
    assert "hit rate" in texts["cache"] and "$" in texts["cache"]
    assert "quality-first" in texts["routing"] and "auto" in texts["value"]
    assert re.search(r"0\.800 \(\d\)", texts["quality"])  # the scores written beside acme's answers
    assert "command" in texts["deployments"] and "simulated" in texts["errors"]
    assert "acme" in viewer_spend and "globex" not in viewer_spend
    assert viewer_deployments == "empty"
    # 401 for the wrong key is the one console error a browser reports on its own.
    assert [p for p in problems if "401" not in p] == [], problems
