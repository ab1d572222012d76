"""Region pinning through the gateway: a request pinned to a region never reaches another
region's deployment, whatever fails — not by failover, retry or route-level fallback.

Two OpenAI-compatible upstreams over real HTTP, each counting the requests it receives: "eu"
serves gpt-4o only; "us" serves gpt-4o and every other catalog model (the default deployment),
so a leak to any other deployment or model lands on a counter that must stay at zero.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from router.config import Deployment, ProviderEntry, RouteEntry, load_config
from router.dispatch_config import HedgeConfig
from router.providers import Timeouts
from service.app import create_app
from tests.upstreams import serve
from tests.upstreams.openai_compat import SimState
from tests.upstreams.openai_compat import create_app as openai_sim

KEY = "sk-sim-0123456789abcdef"
PROMPT = "Prove that the square root of 2 is irrational."


class Counted:
    """An ASGI app that counts its HTTP requests and, when ``slow``, answers them late."""

    def __init__(self, app: Any):
        self.app, self.calls, self.slow = app, 0, 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
            if self.slow:
                await asyncio.sleep(self.slow)
        await self.app(scope, receive, send)



@pytest.fixture(scope="module")
def upstreams():
    eu, us = Counted(openai_sim(SimState(api_key=KEY, strict=False))), \
        Counted(openai_sim(SimState(api_key=KEY, strict=False)))
    with serve(eu) as eu_url, serve(us) as us_url:
        yield {"eu": (eu_url, eu), "us": (us_url, us)}


def configured(upstreams, *, eu_endpoint: str | None = None, eu_timeouts: Timeouts | None = None,
               tenant_regions=None, routes=(), hedge: HedgeConfig | None = None):
    cfg = load_config()
    providers = [ProviderEntry(name=name, type="openai-compatible", endpoint=f"{url}/v1",
                               api_key=KEY) for name, (url, _) in upstreams.items()]
    if eu_endpoint is not None:
        providers[0] = ProviderEntry(name="eu", type="openai-compatible", endpoint=eu_endpoint)
    eu = Deployment(provider="eu", residency="eu", timeouts=eu_timeouts or Timeouts())
    us = Deployment(provider="us", residency="us")
    models = [msgspec.structs.replace(m, deployments=[eu, us]) if m.name == "gpt-4o" else m
              for m in cfg.models]
    dispatch = msgspec.structs.replace(cfg.dispatch, backoff_ms=0, max_attempts=4,
                                       fallback_models=3,
                                       tenant_regions=tenant_regions or {},
                                       hedge=hedge or HedgeConfig())
    return msgspec.structs.replace(
        cfg, providers=providers, models=models, dispatch=dispatch, default_deployment=us,
        routes=[*cfg.routes, *routes],
        traffic=msgspec.structs.replace(cfg.traffic, enabled=False))


def ask(c: TestClient, text: str, model: str = "gpt-4o", regions: str | None = "eu", **kw):
    headers = {"x-contextforge-regions": regions} if regions else {}
    return c.post("/v1/chat/completions", headers=headers, json={
        "model": model, "messages": [{"role": "user", "content": text}], **kw})


FAULTS = ["FAIL 500", "FAIL 503", "FAIL 429", "FAIL MALFORMED", "dead", "slow"]


def faulty(upstreams, fault: str):
    """The config and the prompt that make the EU deployment fail with ``fault``."""
    if fault == "dead":  # nothing listens on port 1: connection refused
        return configured(upstreams, eu_endpoint="http://127.0.0.1:1/v1"), PROMPT
    if fault == "slow":
        upstreams["eu"][1].slow = 1.0
        return configured(upstreams, eu_timeouts=Timeouts(total_s=0.2, first_token_s=0.2)), \
            PROMPT
    return configured(upstreams), f"{PROMPT} {fault}"


@pytest.mark.parametrize("fault", FAULTS)
def test_a_pinned_request_never_reaches_another_region_under_any_fault(upstreams, engine,
                                                                      fault):
    cfg, text = faulty(upstreams, fault)
    eu, us = upstreams["eu"][1], upstreams["us"][1]
    us_before, eu_before = us.calls, eu.calls
    try:
        with TestClient(create_app(cfg, engine=engine)) as c:
            replies = [ask(c, text), ask(c, text, stream=True), ask(c, text, model="auto"),
                       ask(c, text, model="auto", stream=True), ask(c, text, model="budget")]
    finally:
        eu.slow = 0.0
    # (a stream may start before its fault: then it ends with an error event, status 200)
    assert all(r.status_code >= 400 for r in replies[::2]), [r.status_code for r in replies]
    assert us.calls == us_before  # no failover, retry or fallback left the EU
    if fault != "dead":
        assert eu.calls > eu_before  # the EU deployment was tried (and failed)


@pytest.mark.parametrize("pinned", [True, False])
def test_a_hedge_never_leaves_the_required_regions(upstreams, engine, pinned):
    """The EU deployment turns slow (late, not failing): hedging on, a pinned request waits
    for it; the control, unpinned, is hedged to the US one (so a leak would show)."""
    eu, us = upstreams["eu"][1], upstreams["us"][1]
    hedge = HedgeConfig(enabled=True, min_delay_ms=20, max_share=1.0, min_samples=5)
    regions = "eu" if pinned else None
    cfg = configured(upstreams, hedge=hedge)
    cfg = msgspec.structs.replace(cfg, dispatch=msgspec.structs.replace(
        cfg.dispatch, strategy="lowest_latency"))
    with TestClient(create_app(cfg, engine=engine)) as c:
        # EU first for every request: the US deployment is made the slower on record
        us.slow = 0.05
        assert all(ask(c, f"warm {i}", regions=None, stream=s).status_code == 200
                   for i in range(8) for s in (False, True))
        us.slow, eu.slow = 0.0, 0.6
        before = us.calls
        try:
            replies = [ask(c, f"late {i}", regions=regions, stream=i % 2 == 1)
                       for i in range(4)]
        finally:
            eu.slow = 0.0
    assert all(r.status_code == 200 for r in replies)
    if pinned:
        assert us.calls == before  # no hedge (nor anything else) left the EU
    else:
        assert us.calls > before


@pytest.mark.parametrize("fault", ["FAIL 503", "dead"])
def test_unpinned_the_same_faults_fail_over_to_the_other_region(upstreams, engine, fault):
    """The control: without a region the US deployment answers (so the test above would see
    a leak)."""
    cfg, text = faulty(upstreams, fault)
    us = upstreams["us"][1]
    before = us.calls
    with TestClient(create_app(cfg, engine=engine)) as c:
        replies = [ask(c, PROMPT if fault == "dead" else text, regions=None) for _ in range(6)]
    assert us.calls > before
    if fault == "dead":
        assert all(r.status_code == 200 for r in replies)


def test_pinned_requests_are_served_in_their_region(upstreams, engine):
    eu, us = upstreams["eu"][1], upstreams["us"][1]
    us_before, eu_before = us.calls, eu.calls
    with TestClient(create_app(configured(upstreams), engine=engine)) as c:
        replies = [ask(c, f"question {i}", model=m) for i in range(4) for m in ("gpt-4o", "auto")]
    assert all(r.status_code == 200 for r in replies)
    assert {r.headers["x-contextforge-model"] for r in replies} == {"gpt-4o"}
    assert eu.calls == eu_before + 8 and us.calls == us_before


def test_tenant_and_route_regions_pin_without_a_header(upstreams, engine):
    eu, us = upstreams["eu"][1], upstreams["us"][1]
    route = RouteEntry(name="eu-only", regions=["eu"])
    for cfg, model in ((configured(upstreams, tenant_regions={"default": ["eu"]}), "auto"),
                       (configured(upstreams, routes=[route]), "eu-only")):
        us_before = us.calls
        with TestClient(create_app(cfg, engine=engine)) as c:
            ok = ask(c, "hello", model=model, regions=None)
            failed = ask(c, "hello FAIL 503", model=model, regions=None)
        assert ok.status_code == 200 and ok.headers["x-contextforge-model"] == "gpt-4o"
        assert failed.status_code == 503 and us.calls == us_before
    assert eu.calls > 0


def test_no_deployment_in_the_regions_is_a_422_naming_them(upstreams, engine):
    cfg = configured(upstreams, tenant_regions={"default": ["eu"]})
    with TestClient(create_app(cfg, engine=engine)) as c:
        nowhere = ask(c, "hello", regions="apac")  # the tenant's eu and the header's apac
        assert nowhere.status_code == 422
        error = nowhere.json()["error"]
        assert error["code"] == "no_deployment_in_region"
        assert "organisation 'default' requires eu" in error["message"]
        assert "x-contextforge-regions header requires apac" in error["message"]
        pinned = ask(c, "hello", model="claude-4")  # only deployed in the us
        assert pinned.status_code == 422 and "claude-4" in pinned.json()["error"]["message"]
        bad = ask(c, "hello", regions="eu west!")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == \
            "x-contextforge-regions"


def test_a_header_pinned_request_meets_only_cached_answers_made_under_its_pin(upstreams,
                                                                              engine):
    cfg = configured(upstreams)
    cfg = msgspec.structs.replace(cfg, cache=msgspec.structs.replace(
        cfg.cache, enabled=True, semantic=False, snapshot_path=""))  # nothing left on disk
    with TestClient(create_app(cfg, engine=engine)) as c:
        free = ask(c, "cache me", regions=None, temperature=0)
        pinned = [ask(c, "cache me", temperature=0) for _ in range(2)]
        again = ask(c, "cache me", regions=None, temperature=0)
    assert free.headers["x-contextforge-cache"] == "miss"
    assert [r.headers["x-contextforge-cache"] for r in pinned] == ["miss", "hit-exact"]
    assert again.headers["x-contextforge-cache"] == "hit-exact"
