"""Hedged requests: a late first token races a second deployment; caps, regions, costs."""

from __future__ import annotations

import asyncio
import random

import pytest

from router.config import Deployment, DispatchConfig
from router.dispatch import CircuitBreaker, Dispatcher, Health, Hedge, HedgeBudget, Upstream
from router.dispatch_config import HedgeConfig
from router.providers import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Message,
    UpstreamRejected,
    UpstreamUnavailable,
)
from router.wire.openai import AssistantMessage, Choice, ChunkChoice, Delta, Usage

REQUEST = ChatRequest(model="m", messages=[Message(role="user", content="hi")])
HEDGE = HedgeConfig(enabled=True, percentile=90, min_delay_ms=0, max_share=1.0,
                    min_samples=5)


class Slow:
    """A provider whose calls take ``delay`` seconds (``delays`` first, one per call) and
    answer with its name; it notes calls that were cancelled and streams that were closed."""

    def __init__(self, name: str, delay: float = 0.0, delays: list[float] | None = None,
                 error: Exception | None = None):
        self.name, self.delay, self.delays, self.error = name, delay, list(delays or []), error
        self.calls = self.cancelled = self.closed = 0

    def _next_delay(self) -> float:
        return self.delays.pop(0) if self.delays else self.delay

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        self.calls += 1
        try:
            await asyncio.sleep(self._next_delay())
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        msg = AssistantMessage(role="assistant", content=self.name)
        return ChatCompletion(id="x", created=0, model="m", usage=Usage(
            prompt_tokens=3, completion_tokens=1, total_tokens=4),
            choices=[Choice(index=0, message=msg, finish_reason="stop")])

    async def stream(self, request: ChatRequest):
        self.calls += 1
        try:
            yield ChatCompletionChunk(id="x", created=0, model="m", choices=[
                ChunkChoice(index=0, delta=Delta(role="assistant"))])
            await asyncio.sleep(self._next_delay())
            for piece in (self.name, "!"):
                yield ChatCompletionChunk(id="x", created=0, model="m", choices=[
                    ChunkChoice(index=0, delta=Delta(content=piece))])
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.closed += 1


def dispatcher(*fakes: Slow, regions: dict[str, str] | None = None, samples_ms: float = 10.0,
               **cfg) -> Dispatcher:
    """Deployments in the order given (``lowest_cost`` on ascending prices), each with
    recent timings of ``samples_ms`` (so a call is late after about that)."""
    config = DispatchConfig(**{"backoff_ms": 0, "strategy": "lowest_cost", **cfg})
    ups = []
    for i, f in enumerate(fakes):
        d = Deployment(provider="fake", residency=(regions or {}).get(f.name, "us"))
        u = Upstream(f.name, d, f, CircuitBreaker(config.breaker), 5.0, price=float(i),
                     health=Health())
        for _ in range(10):
            u.health.latency(samples_ms)
            u.health.first_token(samples_ms)
        ups.append(u)
    return Dispatcher("m", ups, config, rng=random.Random(0))


def hedge(config: HedgeConfig = HEDGE) -> Hedge:
    return Hedge(config, HedgeBudget(config))


def test_a_late_answer_is_hedged_and_the_faster_deployment_answers():
    slow, fast = Slow("slow", delay=2.0), Slow("fast", delay=0.01)
    d, h = dispatcher(slow, fast), hedge()

    async def go():
        t0 = asyncio.get_running_loop().time()
        completion, u = await d.complete(REQUEST, hedge=h)
        return completion, u, asyncio.get_running_loop().time() - t0

    completion, u, took = asyncio.run(go())
    assert completion.choices[0].message.content == "fast" and u.label == "fast"
    assert took < 0.5  # not the slow call's 2 s
    assert (h.fired, h.won) == (1, 1)
    assert [w.upstream.label for w in h.wasted] == ["slow"] and h.wasted[0].tokens is None
    assert slow.cancelled == 1  # the loser's call was cancelled, not left running
    assert all(x.health.inflight == 0 for x in d.upstreams)


def test_an_answer_on_time_is_not_hedged():
    a, b = Slow("a", delay=0.0), Slow("b")
    d, h = dispatcher(a, b, samples_ms=200.0), hedge()
    completion, _ = asyncio.run(d.complete(REQUEST, hedge=h))
    assert completion.choices[0].message.content == "a"
    assert (h.fired, b.calls, h.wasted) == (0, 0, [])


def test_the_first_call_keeps_the_race_when_it_answers_before_the_hedge():
    # late after 10 ms; the first answers at 60 ms, the hedge would take 1 s
    first, second = Slow("first", delay=0.06), Slow("second", delay=1.0)
    d, h = dispatcher(first, second), hedge()
    for _ in range(20):  # the second is usually slower: late only after ~500 ms
        d.upstreams[1].health.latency(500.0)
    _, u = asyncio.run(d.complete(REQUEST, hedge=h))
    assert u.label == "first" and (h.fired, h.won) == (1, 0)
    assert second.cancelled == 1 and [w.upstream.label for w in h.wasted] == ["second"]
    # the hedge had run only ~50 ms, short of its own lateness: no failure counted
    assert d.upstreams[1].breaker.failures == 0 and d.upstreams[1].breaker.error_rate()[1] == 0


def test_no_hedge_without_enough_recent_timings():
    slow, fast = Slow("slow", delay=0.2), Slow("fast")
    d = dispatcher(slow, fast)
    h = hedge(HedgeConfig(enabled=True, min_delay_ms=0, max_share=1.0, min_samples=50))
    _, u = asyncio.run(d.complete(REQUEST, hedge=h))
    assert u.label == "slow" and h.fired == 0 and fast.calls == 0


def test_disabled_hedging_never_hedges():
    slow, fast = Slow("slow", delay=0.2), Slow("fast")
    d = dispatcher(slow, fast)
    _, u = asyncio.run(d.complete(REQUEST, hedge=hedge(HedgeConfig(enabled=False))))
    assert u.label == "slow" and fast.calls == 0


def test_the_share_of_hedged_requests_stays_under_the_cap():
    slow, fast = Slow("slow", delay=0.05), Slow("fast")
    d = dispatcher(slow, fast)
    for _ in range(200):  # a median of 10 ms that the slow answers below cannot move
        d.upstreams[0].health.latency(10.0)
    config = HedgeConfig(enabled=True, percentile=50, min_delay_ms=0, max_share=0.2,
                         min_samples=5)
    budget = HedgeBudget(config)

    async def go():
        fired = 0
        for _ in range(30):
            h = Hedge(config, budget)
            await d.complete(REQUEST, hedge=h)
            fired += h.fired
        return fired

    fired = asyncio.run(go())
    assert fired == 6  # 20% of 30: every request was late, only the cap held hedges back
    assert budget.share() == (30, 6)


def test_a_hedge_never_leaves_the_required_regions():
    slow_eu, fast_us = Slow("eu", delay=0.15), Slow("us", delay=0.0)
    d = dispatcher(slow_eu, fast_us, regions={"eu": "eu", "us": "us"})
    h = hedge()
    _, u = asyncio.run(d.complete(REQUEST, regions={"eu"}, hedge=h))
    assert u.label == "eu" and fast_us.calls == 0 and h.fired == 0


def test_a_hanging_deployment_opens_its_breaker_while_every_request_is_rescued():
    hang, ok = Slow("hang", delay=30.0), Slow("ok", delay=0.0)
    d = dispatcher(hang, ok, failure_threshold=3, cooldown_s=60)
    budget = HedgeBudget(HEDGE)

    async def go():
        labels = []
        for _ in range(5):
            _, u = await d.complete(REQUEST, hedge=Hedge(HEDGE, budget))
            labels.append(u.label)
        return labels

    labels = asyncio.run(go())
    assert labels == ["ok"] * 5
    assert hang.calls == 3  # three lost races in a row opened its breaker
    assert d.upstreams[0].breaker.state == "open"


def test_a_failing_racer_leaves_the_other_to_answer():
    # the first is late, then fails; the hedge answers (that is the failover)
    first = Slow("first", delay=0.05, error=UpstreamUnavailable("503"))
    second = Slow("second", delay=0.1)
    d, h = dispatcher(first, second), hedge()
    _, u = asyncio.run(d.complete(REQUEST, hedge=h))
    assert u.label == "second" and h.wasted == [] and first.calls == 1


def test_a_request_the_upstream_rejects_ends_the_race():
    first = Slow("first", delay=0.05, error=UpstreamRejected("bad request"))
    second = Slow("second", delay=5.0)
    d, h = dispatcher(first, second), hedge()
    with pytest.raises(UpstreamRejected):
        asyncio.run(d.complete(REQUEST, hedge=h))
    assert second.cancelled == 1


def test_a_late_stream_is_hedged_and_the_loser_closed_before_any_content():
    slow, fast = Slow("slow", delay=2.0), Slow("fast", delay=0.0)
    d, h = dispatcher(slow, fast), hedge()

    async def go():
        first, rest, u = await d.open_stream(REQUEST, hedge=h)
        text = first.choices[0].delta.content or ""
        async for chunk in rest:
            text += chunk.choices[0].delta.content or ""
        await rest.aclose()
        return text, u

    text, u = asyncio.run(go())
    assert (text, u.label) == ("fast!", "fast")
    assert slow.closed == 1 and slow.cancelled == 1
    assert all(x.health.inflight == 0 for x in d.upstreams)


def test_a_client_that_leaves_mid_race_leaves_nothing_in_flight():
    a, b = Slow("a", delay=5.0), Slow("b", delay=5.0)
    d, h = dispatcher(a, b), hedge()

    async def go():
        task = asyncio.ensure_future(d.complete(REQUEST, hedge=h))
        await asyncio.sleep(0.1)  # both racing by now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert (a.cancelled, b.cancelled) == (1, 1)
    assert all(x.health.inflight == 0 for x in d.upstreams)
    # a client that left says nothing against either deployment
    assert all(x.breaker.failures == 0 and x.breaker.error_rate()[1] == 0 for x in d.upstreams)


def test_lateness_is_a_nearest_rank_percentile_of_the_recent_timings():
    h = Health()
    assert h.late_after_ms(False, 95, 1) is None  # nothing measured yet
    for ms in range(1, 101):  # 1..100 ms
        h.latency(float(ms))
    assert h.late_after_ms(False, 95, 1) == 95.0
    assert h.late_after_ms(False, 50, 1) == 50.0
    assert h.late_after_ms(False, 95, 101) is None  # too few samples to trust
    assert h.late_after_ms(True, 95, 1) is None  # streams' first tokens are their own
    for _ in range(256):  # the window slides: only the last 256 count
        h.latency(1000.0)
    assert h.late_after_ms(False, 50, 1) == 1000.0
