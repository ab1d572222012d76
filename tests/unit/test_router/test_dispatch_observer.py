"""The dispatcher's attempt observer: told of every call to a deployment, how it ended, and
whether it was a hedge (what tracing builds its attempt spans on)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from router.dispatch import Upstream
from router.providers import UpstreamUnavailable
from tests.unit.test_router.test_dispatch_hedge import REQUEST, Slow, dispatcher, hedge


class Recorder:
    """An ``AttemptObserver`` noting (deployment, model, hedge, stream, how it ended)."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, str, bool, bool, str]] = []

    @contextmanager
    def attempt(self, u: Upstream, *, model: str, hedge: bool, stream: bool) -> Iterator[None]:
        try:
            yield
        except BaseException as exc:
            self.attempts.append((u.label, model, hedge, stream, type(exc).__name__))
            raise
        self.attempts.append((u.label, model, hedge, stream, "ok"))


def test_a_failover_is_two_attempts_and_the_first_failed():
    d = dispatcher(Slow("a", error=UpstreamUnavailable("down")), Slow("b"))
    d.observer = seen = Recorder()
    _, u = asyncio.run(d.complete(REQUEST))
    assert u.label == "b"
    assert seen.attempts == [("a", "m", False, False, "UpstreamUnavailable"),
                             ("b", "m", False, False, "ok")]


def test_a_hedge_is_flagged_and_the_loser_is_seen_cancelled():
    d, h = dispatcher(Slow("slow", delay=2.0), Slow("fast", delay=0.01)), hedge()
    d.observer = seen = Recorder()
    _, u = asyncio.run(d.complete(REQUEST, hedge=h))
    assert u.label == "fast"
    assert sorted(seen.attempts) == [("fast", "m", True, False, "ok"),
                                     ("slow", "m", False, False, "CancelledError")]


def test_a_streams_attempt_ends_at_its_first_content():
    d = dispatcher(Slow("a"))
    d.observer = seen = Recorder()

    async def go() -> list[str]:
        first, rest, _ = await d.open_stream(REQUEST)
        assert seen.attempts == [("a", "m", False, True, "ok")]  # before the rest is read
        out = [first.choices[0].delta.content or ""] if first else []
        async for chunk in rest:
            out.append(chunk.choices[0].delta.content or "")
        return out

    assert "".join(asyncio.run(go())) == "a!"
