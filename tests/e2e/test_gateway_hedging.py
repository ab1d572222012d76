"""Hedged requests through the gateway: two deployments of one model over real HTTP, the one
tried first (the cheaper) turning slow; a late first token races the other deployment."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import msgspec
import pytest
from litestar.testing import TestClient

from router.config import Deployment, ProviderEntry, load_config
from router.dispatch_config import HedgeConfig
from service.app import create_app
from tests.upstreams import serve
from tests.upstreams.faults import ANTHROPIC_KEY, OPENAI_KEY, Fault, FaultUpstream, Schedule, Tally

SLOW_S = 1.5
HEDGE = HedgeConfig(enabled=True, percentile=95, min_delay_ms=20, max_share=1.0,
                    min_samples=10)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, tuple[str, FaultUpstream]]]:
    slow, fast = FaultUpstream(), FaultUpstream()
    with serve(slow) as slow_url, serve(fast) as fast_url:
        yield {"slow": (slow_url, slow), "fast": (fast_url, fast)}


@pytest.fixture()
def upstreams(servers):
    for _, up in servers.values():
        up.set(Schedule())
        up.tally = Tally()
    return servers["slow"][1], servers["fast"][1]


def app(servers, engine, *, hedge: HedgeConfig = HEDGE, fmt: str = "openai"):
    """gpt-4o on both upstreams, ``lowest_cost`` balancing: "slow" (free) is always called
    first, "fast" only by a hedge or a failover."""
    cfg = load_config()
    kind, key = ("anthropic", ANTHROPIC_KEY) if fmt == "anthropic" else (
        "openai-compatible", OPENAI_KEY)
    providers = [ProviderEntry(name=name, type=kind, api_key=key, timeout_s=5.0,
                               endpoint=url if fmt == "anthropic" else f"{url}/v1")
                 for name, (url, _) in servers.items()]
    deployments = [Deployment(provider="slow", model="sim", input_price=0.0, output_price=0.0),
                   Deployment(provider="fast", model="sim", input_price=9.0, output_price=9.0)]
    models = [msgspec.structs.replace(m, deployments=deployments) if m.name == "gpt-4o" else m
              for m in cfg.models]
    dispatch = msgspec.structs.replace(cfg.dispatch, strategy="lowest_cost", backoff_ms=0,
                                       hedge=hedge)
    return create_app(msgspec.structs.replace(
        cfg, providers=providers, models=models, dispatch=dispatch,
        traffic=msgspec.structs.replace(cfg.traffic, enabled=False)), engine=engine)


def chat(c: TestClient, nonce: str, **kw):
    return c.post("/v1/chat/completions", json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": f"hedge me nonce={nonce}"}],
        **kw})


def text_of(r) -> str:
    if r.headers["content-type"].startswith("text/event-stream"):
        assert r.text.rstrip().endswith("data: [DONE]")
        return "".join(e["choices"][0]["delta"].get("content") or ""
                       for line in r.text.splitlines()
                       if line.startswith("data: {") and (e := msgspec.json.decode(line[6:]))
                       and e.get("choices"))
    return r.json()["choices"][0]["message"]["content"]


def hedged(c: TestClient, answered: str = "hedge") -> float:
    """Hedges sent whose answer was used (``answered="hedge"``) or not (``"other"``)."""
    series = f'contextforge_hedged_requests_total{{answered="{answered}",model="gpt-4o"}}'
    m = re.search(re.escape(series) + r" (\S+)", c.get("/metrics").text)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_late_deployment_is_hedged_and_the_other_answers_once(servers, upstreams, engine,
                                                                stream, fmt):
    slow, fast = upstreams
    with TestClient(app(servers, engine, fmt=fmt)) as c:
        warm = [chat(c, f"w{i:02d}", stream=stream) for i in range(12)]  # slow's usual timings
        assert all(r.status_code == 200 for r in warm) and fast.tally.received == 0
        slow.set(Schedule([Fault(kind="latency", seconds=SLOW_S)]))
        t0 = time.perf_counter()
        replies = [chat(c, f"h{i:02d}", stream=stream) for i in range(4)]
        took = time.perf_counter() - t0
        count = hedged(c)
    assert took < 4 * SLOW_S / 2  # none waited out the slow answer
    for i, r in enumerate(replies):
        assert r.status_code == 200 and f"nonce=h{i:02d}" in text_of(r)
    # every request reached the slow one, was hedged, and only the hedge's answer was made
    assert {f"h{i:02d}" for i in range(4)} <= set(slow.tally.received_by_nonce)
    assert fast.tally.answered_by_nonce == {f"h{i:02d}": 1 for i in range(4)}
    assert not any(n.startswith("h") for n in slow.tally.answered_by_nonce)
    assert count == 4
    if not stream:  # the cancelled call's prompt is part of what the request cost
        warm_cost = float(warm[-1].headers["x-contextforge-cost-usd"])
        hedged_cost = float(replies[-1].headers["x-contextforge-cost-usd"])
        assert hedged_cost > warm_cost > 0


def test_without_hedging_the_request_waits_for_the_late_deployment(servers, upstreams, engine):
    slow, fast = upstreams
    with TestClient(app(servers, engine, hedge=HedgeConfig())) as c:
        assert all(chat(c, f"w{i:02d}").status_code == 200 for i in range(12))
        slow.set(Schedule([Fault(kind="latency", seconds=SLOW_S)]))
        t0 = time.perf_counter()
        r = chat(c, "n00")
        took = time.perf_counter() - t0
        assert hedged(c) == 0
    assert r.status_code == 200 and took >= SLOW_S
    assert fast.tally.received == 0


def test_the_cap_bounds_the_hedged_share(servers, upstreams, engine):
    slow, fast = upstreams
    # The median of 30 quick warm-up timings stays the lateness while 25 slow answers come in.
    cap = msgspec.structs.replace(HEDGE, max_share=0.1, percentile=50)
    with TestClient(app(servers, engine, hedge=cap)) as c:
        assert all(chat(c, f"w{i:02d}").status_code == 200 for i in range(30))
        slow.set(Schedule([Fault(kind="latency", seconds=0.15)]))
        replies = [chat(c, f"c{i:02d}") for i in range(25)]
        count = hedged(c) + hedged(c, "other")  # (a loaded machine may let a first call win)
    assert all(r.status_code == 200 for r in replies)
    # every one of the 25 was late; at most 10% of the 55 requests may be hedged
    assert fast.tally.received == count == 5
