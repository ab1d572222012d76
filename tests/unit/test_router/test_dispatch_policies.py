"""Dispatch policies: balancing strategies, breaker rules, retries, timeouts, regions."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

from router.config import Deployment
from router.dispatch import (
    CircuitBreaker,
    NoDeploymentInRegion,
    RetryPolicy,
    probe_once,
    state_of,
)
from router.dispatch_config import BreakerConfig, ProbeConfig, RetryConfig
from router.providers import (
    ChatCompletionChunk,
    ChatRequest,
    Timeouts,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from router.wire.openai import ChunkChoice, Delta
from tests.unit.test_router.test_dispatch import REQUEST, Clock, Fake, answer, dispatcher


def first_of(d, **kw) -> str:
    return d.order(**kw)[0].label


# --- strategies ---------------------------------------------------------------------------


def test_least_busy_prefers_the_deployment_with_fewest_calls_in_flight():
    d = dispatcher(Fake("a"), Fake("b"), strategy="least_busy")
    d.upstreams[0].health.inflight = 3
    assert {first_of(d) for _ in range(50)} == {"b"}
    d.upstreams[1].health.inflight = 5
    assert {first_of(d) for _ in range(50)} == {"a"}


def test_lowest_latency_reads_whole_answers_or_first_chunks_and_measures_unknowns_first(
        monkeypatch):
    from router.dispatch import _strategies

    monkeypatch.setattr(_strategies, "_EXPLORE", 0.0)  # exploration: measured at the end
    d = dispatcher(Fake("a"), Fake("b"), Fake("c"), strategy="lowest_latency")
    a, b, c = (u.health for u in d.upstreams)
    a.latency(100.0)
    b.latency(10.0)
    assert first_of(d) == "c"  # never measured: tried first
    c.latency(500.0)
    assert [u.label for u in d.order()] == ["b", "a", "c"]
    a.first_token(5.0)
    b.first_token(50.0)
    c.first_token(80.0)
    assert first_of(d, stream=True) == "a"  # streams rank by time to first chunk
    for _ in range(20):  # the average follows the latest calls
        b.latency(300.0)
    monkeypatch.setattr(_strategies, "_EXPLORE", 0.02)
    firsts = Counter(first_of(d) for _ in range(5000))
    assert 0.97 < firsts["a"] / 5000 < 0.995  # a slow one is still measured now and then
    assert firsts["b"] + firsts["c"] > 0


def test_lowest_cost_uses_a_deployments_own_price_else_the_models():
    deps = {"a": Deployment(provider="fake", input_price=5.0, output_price=15.0),
            "b": Deployment(provider="fake", input_price=1.0, output_price=2.0)}
    d = dispatcher(Fake("a"), Fake("b"), deployments=deps, strategy="lowest_cost")
    d.upstreams[0].price, d.upstreams[1].price = 20.0, 3.0
    assert {first_of(d) for _ in range(50)} == {"b"}


def test_usage_based_keeps_each_deployment_under_its_rpm():
    clock = Clock()
    deps = {"a": Deployment(provider="fake", rpm=10), "b": Deployment(provider="fake", rpm=10)}
    a, b = Fake("a"), Fake("b")
    d = dispatcher(a, b, deployments=deps, strategy="usage_based", clock=clock)
    for _ in range(20):
        answer(d)
    assert a.calls == b.calls == 10  # always the one with more headroom
    clock.now += 61  # a minute later the counts are gone
    assert d.upstreams[0].health.minute() == (0, 0)


def test_usage_based_counts_tokens_against_tpm():
    clock = Clock()
    deps = {"a": Deployment(provider="fake", tpm=100), "b": Deployment(provider="fake",
                                                                      tpm=1000)}
    d = dispatcher(Fake("a"), Fake("b"), deployments=deps, strategy="usage_based", clock=clock)
    d.upstreams[0].health.used(60)  # 60 % of a's minute
    d.upstreams[1].health.used(100)  # 10 % of b's
    assert {first_of(d) for _ in range(20)} == {"b"}


def test_a_call_may_name_another_strategy_than_the_models():
    d = dispatcher(Fake("a"), Fake("b"))  # weighted
    d.upstreams[0].health.inflight = 9
    assert {first_of(d, strategy="least_busy") for _ in range(30)} == {"b"}
    assert {first_of(d) for _ in range(200)} == {"a", "b"}


# --- circuit breaker ----------------------------------------------------------------------


def breaker(clock: Clock, **cfg) -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(**cfg), clock)


def test_breaker_opens_on_a_failure_rate_once_enough_calls_fell_in_the_window():
    clock = Clock()
    b = breaker(clock, consecutive_failures=100, failure_rate=0.5, min_requests=10,
                window_s=60)
    for _ in range(4):  # 8 calls at 50 %: not enough calls yet
        b.success()
        b.failure()
    assert b.state == "closed"
    b.success()
    b.failure()  # the 10th call: 50 % of 10
    assert b.state == "open"


def test_breaker_window_forgets_old_failures():
    clock = Clock()
    b = breaker(clock, consecutive_failures=100, failure_rate=0.5, min_requests=4, window_s=10)
    b.failure()
    b.failure()
    clock.now += 11
    b.success()
    b.success()
    b.success()
    b.failure()  # 1 of 4 in the window
    assert b.state == "closed" and b.error_rate() == (0.25, 4)


def test_requests_the_upstream_refused_never_open_a_circuit():
    a = Fake("a", [UpstreamRejected("content policy")] * 50)
    d = dispatcher(a, failure_threshold=1)
    for _ in range(50):
        with pytest.raises(UpstreamRejected):
            answer(d)
    u = d.upstreams[0]
    assert u.breaker.state == "closed" and u.breaker.failures == 0
    assert state_of(u.breaker) == "healthy"


def test_half_open_lets_one_probe_through_and_a_failed_probe_reopens():
    clock = Clock()
    b = breaker(clock, consecutive_failures=2, cooldown_s=10)
    b.failure()
    b.failure()
    assert b.state == "open" and not b.allows()
    clock.now += 10
    assert b.state == "half-open"
    assert b.allows() and not b.allows()  # one probe at a time
    b.failure()  # the probe failed: open for another cooldown
    assert b.state == "open"
    clock.now += 10
    for _ in range(2):  # successes in a row, one trial at a time, short of half_open_calls
        assert b.allows() and not b.allows()
        b.success()
        assert b.state == "half-open"
    assert b.allows()
    b.success()  # the third
    assert b.state == "closed" and b.allows() and b.allows()


def test_a_late_success_leaves_an_open_breaker_open_and_a_failed_trial_restarts_the_count():
    clock = Clock()
    b = breaker(clock, consecutive_failures=1, cooldown_s=10, half_open_calls=2)
    b.failure()
    b.success()  # a call sent before it opened, answering now
    assert b.state == "open"
    clock.now += 10
    assert b.allows()
    b.success()
    assert b.allows()
    b.failure()  # the second trial failed: open again, and the trials start over
    assert b.state == "open"
    clock.now += 10
    assert b.allows()
    b.success()
    assert b.state == "half-open"


def test_deployment_state_is_healthy_degraded_or_open():
    clock = Clock()
    b = breaker(clock, consecutive_failures=3, degraded_rate=0.2)
    b.success()
    assert state_of(b) == "healthy"
    b.failure()
    assert state_of(b) == "degraded"
    b.failure()
    b.failure()
    assert state_of(b) == "open"


# --- retries --------------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_cap():
    policy = RetryPolicy(RetryConfig(backoff_base_ms=100, backoff_max_ms=1000),
                         random.Random(1))
    for retry, cap in ((0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (30, 1.0)):
        waits = [policy.backoff_s(retry) for _ in range(2000)]
        assert 0 <= min(waits) < cap * 0.02 and cap * 0.98 < max(waits) <= cap
        assert abs(sum(waits) / len(waits) - cap / 2) < cap * 0.05  # uniform: mean cap/2


def test_retry_after_is_honoured_before_calling_the_deployment_again():
    a = Fake("a", [UpstreamRateLimited("slow down", retry_after=0.2)])
    d = dispatcher(a, clock=time.monotonic)
    start = time.monotonic()
    assert answer(d) == "a"
    assert a.calls == 2 and time.monotonic() - start >= 0.2


def test_a_retry_after_longer_than_max_wait_goes_back_to_the_client():
    a = Fake("a", [UpstreamRateLimited("slow down", retry_after=30.0)] * 3)
    d = dispatcher(a, clock=time.monotonic)
    start = time.monotonic()
    with pytest.raises(UpstreamRateLimited) as info:
        answer(d)
    assert a.calls == 1 and info.value.retry_after == 30.0
    assert time.monotonic() - start < 0.5


def test_the_request_deadline_bounds_every_attempt():
    slow = Fake("slow", delay=5.0)
    d = dispatcher(slow, Fake("slow2", delay=5.0), clock=time.monotonic,
                   retry=RetryConfig(deadline_s=0.2, max_attempts=5))
    start = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        answer(d)
    assert time.monotonic() - start < 1.0 and slow.calls == 1


def test_backoff_that_would_cross_the_deadline_ends_the_request():
    a = Fake("a", [UpstreamUnavailable("down")] * 5)
    d = dispatcher(a, clock=time.monotonic,
                   retry=RetryConfig(deadline_s=0.05, backoff_base_ms=10_000,
                                     backoff_max_ms=10_000, max_attempts=5))
    # (the helper's legacy backoff_ms: 0 wins over retry's base: give the policy its own)
    d._retry = RetryPolicy(RetryConfig(backoff_base_ms=10_000, backoff_max_ms=10_000),
                           random.Random(0))
    with pytest.raises(UpstreamUnavailable):
        answer(d)
    assert a.calls == 1


@pytest.mark.parametrize("how", ["adapter", "gateway"])
def test_a_timeout_is_counted_once(how):
    failures = []
    # the adapter's own read timeout (httpx) as UpstreamTimeout, or the gateway's per attempt
    a = Fake("a", [UpstreamTimeout("read timeout")]) if how == "adapter" else Fake("a", delay=1)
    d = dispatcher(a, Fake("b"), on_failure=lambda u, m, e: failures.append((u.label, e)))
    d.upstreams[0].timeout_s = 0.05
    d.order = lambda *_: list(d.upstreams)
    assert answer(d) == "b"
    assert len(failures) == 1 and isinstance(failures[0][1], UpstreamTimeout)
    assert d.upstreams[0].breaker.error_rate() == (1.0, 1)
    assert d.upstreams[0].breaker.failures == 1


# --- timeouts --------------------------------------------------------------------------------


class Slow:
    """A stream whose first chunk comes after ``first`` s and each next after ``gap`` s."""

    name = "slow"

    def __init__(self, first: float, gap: float, n: int = 3):
        self.first, self.gap, self.n, self.calls = first, gap, n, 0

    async def complete(self, request: ChatRequest):
        return await Fake("slow", delay=self.first).complete(request)

    async def stream(self, request: ChatRequest):
        self.calls += 1
        for i in range(self.n):
            await asyncio.sleep(self.first if i == 0 else self.gap)
            yield ChatCompletionChunk(id="x", created=0, model="m", choices=[
                ChunkChoice(index=0, delta=Delta(content=str(i)))])

    async def aclose(self) -> None:
        pass


def stream_all(d):
    async def run():
        first, rest, _ = await d.open_stream(REQUEST)
        out = [first.choices[0].delta.content]
        try:
            async for c in rest:
                out.append(c.choices[0].delta.content)
        finally:
            await rest.aclose()
        return out
    return asyncio.run(run())


def test_first_token_and_total_timeouts_apply_to_their_own_calls():
    d = dispatcher(Slow(first=0.15, gap=0), clock=time.monotonic, max_attempts=1)
    d.upstreams[0].timeouts = Timeouts(first_token_s=0.05, total_s=2.0)
    with pytest.raises(UpstreamTimeout, match="no first chunk"):
        stream_all(d)
    assert answer(d) == "slow"  # a whole answer has total_s
    d.upstreams[0].timeouts = Timeouts(first_token_s=2.0, total_s=0.05)
    assert stream_all(d) == ["0", "1", "2"]
    with pytest.raises(UpstreamTimeout, match="no answer"):
        answer(d)


def test_stream_idle_timeout_ends_a_stalled_stream_and_is_counted_once():
    failures = []
    d = dispatcher(Slow(first=0, gap=0.3), clock=time.monotonic,
                   on_failure=lambda u, m, e: failures.append(e))
    d.upstreams[0].timeouts = Timeouts(stream_idle_s=0.05)
    with pytest.raises(UpstreamTimeout, match="no next chunk"):
        stream_all(d)
    assert len(failures) == 1 and d.upstreams[0].health.inflight == 0


def test_an_unread_stream_releases_its_deployment():
    d = dispatcher(Fake("a"))

    async def run():
        _, rest, u = await d.open_stream(REQUEST)
        assert u.health.inflight == 1
        await rest.aclose()
        await rest.aclose()
        return u.health.inflight
    assert asyncio.run(run()) == 0


def test_a_deployments_timeouts_reach_the_shared_clients_requests():
    from router.providers import build_http_client, call_timeouts

    client = build_http_client(timeout_s=30, backend="httpx")
    assert client.build_request("GET", "http://x/").extensions["timeout"]["connect"] == 10.0
    with call_timeouts(0.5, 90):
        request = client.build_request("GET", "http://x/")
    assert request.extensions["timeout"] == {"connect": 0.5, "read": 90, "write": 30,
                                             "pool": 30}
    with call_timeouts(0.5):
        assert client.build_request("GET", "http://x/").extensions["timeout"]["read"] == 30


# --- regions ---------------------------------------------------------------------------------


def regional(*names_regions, **cfg):
    fakes = [Fake(n, [UpstreamUnavailable("down")] * 100 if fail else []) for n, _, fail in
             names_regions]
    deps = {n: Deployment(provider="fake", residency=r) for n, r, _ in names_regions}
    return fakes, dispatcher(*fakes, deployments=deps, **cfg)


def test_a_region_pinned_call_never_reaches_another_region():
    (eu, us), d = regional(("eu", "eu", True), ("us", "us", False), failure_threshold=1000,
                           max_attempts=10)
    for _ in range(20):
        with pytest.raises(UpstreamUnavailable):
            asyncio.run(d.complete(REQUEST, regions={"eu"}))
    # every attempt went to eu (its breaker opened after 20 at a 100 % failure rate)
    assert us.calls == 0 and eu.calls == 20
    assert answer(d) == "us"  # unpinned, the live one answers


def test_no_deployment_in_the_required_regions_is_a_clear_error():
    (_, us), d = regional(("us", "us", False), ("us2", "", False))
    with pytest.raises(NoDeploymentInRegion, match=r"region.*eu") as info:
        asyncio.run(d.complete(REQUEST, regions={"eu"}))
    assert info.value.status == 503 and not info.value.retryable and us.calls == 0


# --- active probes -----------------------------------------------------------------------


def test_a_probe_closes_a_recovered_deployments_circuit():
    clock = Clock()
    a = Fake("a", [UpstreamUnavailable("down")] * 2)
    d = dispatcher(a, Fake("b"), clock=clock, failure_threshold=2, cooldown_s=600)
    d.order = lambda *_: list(d.upstreams)
    answer(d)
    answer(d)
    assert d.upstreams[0].breaker.state == "open"
    # probes are trials before the cooldown ends; half_open_calls (3) of them close it
    for state in ("half-open", "half-open", "closed"):
        assert asyncio.run(probe_once({"m": d}, ProbeConfig(enabled=True))) == 1
        assert d.upstreams[0].breaker.state == state
    assert a.calls == 5


def test_windows_stay_bounded_whatever_the_traffic():
    clock = Clock()
    b = breaker(clock, window_s=60)
    for _ in range(20_000):
        clock.now += 0.005
        b.success()
    # 60 s of calls, give or take one bucket (3 s)
    assert len(b._window._buckets) <= 21 and 12_000 <= b.error_rate()[1] <= 12_600
