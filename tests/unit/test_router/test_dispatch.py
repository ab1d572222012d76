"""Dispatch: weighted load balancing, failover, retries, circuit breakers."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from router.config import Deployment, DispatchConfig
from router.dispatch import CircuitBreaker, Dispatcher, Health, Upstream
from router.providers import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Message,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from router.wire.openai import AssistantMessage, Choice, ChunkChoice, Delta

REQUEST = ChatRequest(model="m", messages=[Message(role="user", content="hi")])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Fake:
    """A provider that fails with the queued errors, then answers with its name."""

    def __init__(self, name: str, errors: list[Exception] | None = None, delay: float = 0.0):
        self.name, self.errors, self.delay, self.calls = name, list(errors or []), delay, 0

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.errors:
            raise self.errors.pop(0)
        msg = AssistantMessage(role="assistant", content=self.name)
        return ChatCompletion(id="x", created=0, model="m",
                              choices=[Choice(index=0, message=msg, finish_reason="stop")])

    async def stream(self, request: ChatRequest):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        for piece in (self.name, "!"):
            yield ChatCompletionChunk(id="x", created=0, model="m", choices=[
                ChunkChoice(index=0, delta=Delta(content=piece))])

    async def aclose(self) -> None:
        pass


def dispatcher(*fakes: Fake, weights=None, clock=None, deployments=None, strategy=None,
               on_failure=None, **cfg) -> Dispatcher:
    config = DispatchConfig(**{"backoff_ms": 0, **cfg})
    clock = clock or Clock()
    ups = [Upstream(f.name, (deployments or {}).get(f.name) or Deployment(
                        provider="fake", weight=(weights or {}).get(f.name, 1.0)),
                    f, CircuitBreaker(config.breaker, clock), 5.0, health=Health(clock=clock))
           for f in fakes]
    return Dispatcher("m", ups, config, rng=random.Random(0), clock=clock, strategy=strategy,
                      on_failure=on_failure)


def answer(d: Dispatcher) -> str:
    completion, _ = asyncio.run(d.complete(REQUEST))
    return completion.choices[0].message.content


def test_weights_split_traffic_in_proportion():
    d = dispatcher(Fake("a"), Fake("b"), weights={"a": 3.0, "b": 1.0})
    counts = Counter(answer(d) for _ in range(2000))
    assert 0.70 < counts["a"] / 2000 < 0.80  # expected 0.75


@pytest.mark.parametrize("error", [UpstreamUnavailable("down"), UpstreamError("bad body"),
                                   UpstreamTimeout("slow"), UpstreamRateLimited("429", 1.0)])
def test_retryable_failures_fail_over_to_the_other_deployment(error):
    a, b = Fake("a", [error] * 100), Fake("b")
    d = dispatcher(a, b, failure_threshold=100)
    assert {answer(d) for _ in range(20)} == {"b"}
    assert a.calls >= 1  # a was tried first at least once, and b answered instead


def test_rejected_request_is_not_retried():
    a, b = Fake("a", [UpstreamRejected("bad image")]), Fake("b", [UpstreamRejected("bad")])
    d = dispatcher(a, b)
    with pytest.raises(UpstreamRejected):
        answer(d)
    assert a.calls + b.calls == 1


def test_single_deployment_is_retried_up_to_max_attempts():
    a = Fake("a", [UpstreamUnavailable("1"), UpstreamUnavailable("2")])
    assert answer(dispatcher(a, max_attempts=3)) == "a" and a.calls == 3
    b = Fake("b", [UpstreamUnavailable(str(i)) for i in range(5)])
    with pytest.raises(UpstreamUnavailable, match="2"):  # the last error is the one reported
        answer(dispatcher(b, max_attempts=3))
    assert b.calls == 3


def test_timeout_per_attempt_then_failover():
    slow, fast = Fake("slow", delay=1.0), Fake("fast")
    d = dispatcher(slow, fast)
    d.upstreams[0].timeout_s = 0.05
    results = {answer(d) for _ in range(6)}
    assert results == {"fast"}


def test_breaker_opens_after_threshold_skips_then_probes():
    clock = Clock()
    a = Fake("a", [UpstreamUnavailable("x")] * 3)
    b = Fake("b")
    d = dispatcher(a, b, clock=clock, failure_threshold=3, cooldown_s=10, max_attempts=1)
    outcomes = []
    for _ in range(40):
        try:
            outcomes.append(answer(d))
        except UpstreamUnavailable:
            outcomes.append("error")
    assert a.calls == 3 and d.upstreams[0].breaker.state == "open"
    calls_when_open = a.calls
    for _ in range(20):
        assert answer(d) == "b"  # open: a is skipped
    assert a.calls == calls_when_open
    clock.now += 11  # cooldown over: one probe, which succeeds and closes the breaker
    for _ in range(30):
        answer(d)
    assert d.upstreams[0].breaker.state == "closed" and a.calls > calls_when_open


def test_all_open_fails_fast_with_retry_after():
    clock = Clock()
    a = Fake("a", [UpstreamUnavailable("x")] * 10)
    d = dispatcher(a, clock=clock, failure_threshold=2, cooldown_s=30, max_attempts=2)
    with pytest.raises(UpstreamUnavailable):
        answer(d)
    calls = a.calls
    with pytest.raises(UpstreamUnavailable, match="cooling down") as info:
        answer(d)
    assert a.calls == calls  # no call went out
    assert 29 <= info.value.retry_after <= 30


def test_rate_limit_cools_the_deployment_for_retry_after():
    clock = Clock()
    a = Fake("a", [UpstreamRateLimited("slow down", retry_after=20.0)])
    b = Fake("b")
    d = dispatcher(a, b, clock=clock)
    for _ in range(20):
        answer(d)
    assert a.calls == 1  # after its 429, a sat out the 20 s
    clock.now += 21
    for _ in range(20):
        answer(d)
    assert a.calls > 1


def test_stream_fails_over_before_the_first_chunk():
    a, b = Fake("a", [UpstreamUnavailable("down")] * 100), Fake("b")
    d = dispatcher(a, b, failure_threshold=100)

    async def run() -> tuple[list[str], str]:
        first, rest, upstream = await d.open_stream(REQUEST)
        pieces = [first.choices[0].delta.content]
        pieces += [c.choices[0].delta.content async for c in rest]
        return pieces, upstream.label

    for _ in range(10):
        assert asyncio.run(run()) == (["b", "!"], "b")
    assert a.calls >= 1


class CutAfterRole(Fake):
    """A stream that sends its role chunk (no content), then fails."""

    async def stream(self, request: ChatRequest):
        self.calls += 1
        yield ChatCompletionChunk(id="x", created=0, model="m", choices=[
            ChunkChoice(index=0, delta=Delta(role="assistant"))])
        raise UpstreamUnavailable("cut")


def test_a_stream_fails_over_until_its_first_content_not_its_first_chunk():
    a, b = CutAfterRole("a"), Fake("b")
    d = dispatcher(a, b, failure_threshold=100)
    d.order = lambda *a, **k: list(d.upstreams)  # the cutting one first

    async def run() -> tuple[list[str | None], str]:
        first, rest, upstream = await d.open_stream(REQUEST)
        pieces = [first.choices[0].delta.content]
        pieces += [c.choices[0].delta.content async for c in rest]
        return pieces, upstream.label

    assert asyncio.run(run()) == (["b", "!"], "b")
    assert a.calls == 1 and d.upstreams[0].breaker.failures == 1


def test_a_stream_cut_mid_answer_counts_once_and_a_clean_one_resets_the_count():
    failures = []
    a = Fake("a")
    d = dispatcher(a, on_failure=lambda u, m, e: failures.append(e), failure_threshold=2)

    async def cut() -> None:
        _, rest, _ = await d.open_stream(REQUEST)
        rest._chunks = _failing()  # the upstream connection drops after the first content
        with pytest.raises(UpstreamUnavailable):
            async for _ in rest:
                pass
        await rest.aclose()

    async def _failing():
        raise UpstreamUnavailable("cut")
        yield  # an async generator

    asyncio.run(cut())
    assert len(failures) == 1 and d.upstreams[0].breaker.failures == 1
    assert answer(d) == "a" and d.upstreams[0].breaker.failures == 0
    asyncio.run(cut())
    asyncio.run(cut())
    assert d.upstreams[0].breaker.state == "open"


def test_an_adapter_bug_fails_over_and_ends_as_a_502_naming_its_type(caplog):
    """Anything but a ProviderError from an adapter is that deployment's failure: the next
    deployment answers; when none does, the client gets a 502 naming the type only."""
    buggy = Fake("a", [ValueError("the HTTP client refused the request")])
    d = dispatcher(buggy, Fake("b"))
    d.order = lambda *a: list(d.upstreams)  # a first
    completion, upstream = asyncio.run(d.complete(REQUEST))
    assert upstream.label == "b" and completion.choices[0].message.content == "b"
    only = dispatcher(Fake("a", [KeyError("k")] * 3), max_attempts=3)
    with pytest.raises(UpstreamError) as err:
        asyncio.run(only.complete(REQUEST))
    assert err.value.status == 502 and "adapter failed (KeyError)" in str(err.value)
    assert "ValueError" in caplog.text
