"""``Dispatcher``: one model's deployments, called in the strategy's order until one answers."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

from router.dispatch._health import CircuitBreaker
from router.dispatch._hedge import Hedge, Waste
from router.dispatch._retry import Deadline, RetryPolicy
from router.dispatch._strategies import STRATEGIES
from router.dispatch._stream import Rest, carries_answer
from router.dispatch._upstream import Upstream
from router.dispatch_config import DispatchConfig, ProbeConfig
from router.providers import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    EmbeddingProvider,
    EmbeddingsRequest,
    EmbeddingsResponse,
    Message,
    ProviderError,
    UpstreamRateLimited,
    UpstreamRefused,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    call_timeouts,
)

T = TypeVar("T")
FailureHook = Callable[[Upstream, str, ProviderError], None]
Regions = Collection[str] | None
# What to do with a call's result that lost a race but arrived anyway: release what it holds
# (a stream's connection) and say its tokens, if known.
Release = Callable[[Upstream, T], Awaitable[tuple[int, int] | None]]


class AttemptObserver(Protocol):
    """Told of each call to a deployment (``service.tracing`` implements it, so ``router``
    needs no tracing library): ``attempt`` returns a context manager the call runs inside,
    which sees the call's failure as its exception (the ``ProviderError`` the dispatcher made
    of it, or ``CancelledError`` for a hedge race's loser). ``hedge``: the call is a hedge's
    second one; ``model`` the catalog model called. A stream's attempt ends at its first
    content (the failover decision)."""

    def attempt(self, u: Upstream, *, model: str, hedge: bool, stream: bool,
                ) -> AbstractContextManager[object]: ...


class NoDeploymentInRegion(UpstreamUnavailable):
    """The request may only reach deployments in some regions, and the model has none there
    (503, not retried: no other deployment of this model may be called)."""

    retryable = False


class Dispatcher:
    """One model's deployments: balancing, failover, retries, circuit breakers, timeouts.

    ``strategy`` is the model's (``models[].strategy``, else ``dispatch.strategy``); a call may
    name another (a route's). ``regions``, when a call gives them, is a hard filter: a
    deployment whose ``residency`` is not among them is never called, by any attempt.
    ``observer`` (None: no cost) is told of every attempt."""

    def __init__(self, model: str, upstreams: list[Upstream], config: DispatchConfig,
                 *, strategy: str | None = None, rng: random.Random | None = None,
                 on_failure: FailureHook | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 observer: AttemptObserver | None = None):
        if not upstreams:
            raise ValueError(f"model {model!r} has no deployments")
        self.model = model
        self.upstreams = upstreams
        self.config = config
        self.strategy = strategy or config.strategy
        self._rng = rng or random.Random()
        self._retry = RetryPolicy(config.retry, self._rng)
        self._on_failure = on_failure
        self._clock = clock
        self.observer = observer

    def serves(self, regions: Regions) -> bool:
        """Whether any deployment is in ``regions`` (``None``: no requirement)."""
        return regions is None or any(u.region in regions for u in self.upstreams)

    def order(self, strategy: str | None = None, regions: Regions = None,
              stream: bool = False) -> list[Upstream]:
        """The deployments to try, in order: those in ``regions`` whose breaker is not open,
        as the strategy ranks them. This is the whole dispatch decision."""
        ready = [u for u in self.upstreams if u.breaker.state != "open"
                 and (regions is None or u.region in regions)]
        return STRATEGIES[strategy or self.strategy](ready, self._rng, stream)

    async def complete(self, request: ChatRequest, *, regions: Regions = None,
                       strategy: str | None = None, hedge: Hedge | None = None,
                       ) -> tuple[ChatCompletion, Upstream]:
        """The first deployment's answer that succeeds, and which one gave it. With ``hedge``
        (enabled), a late answer races a second call to another deployment."""

        async def release(u: Upstream, late: ChatCompletion) -> tuple[int, int] | None:
            usage = late.usage
            return (usage.prompt_tokens, usage.completion_tokens) if usage else None

        return await self._attempts(lambda u: u.provider.complete(request), regions, strategy,
                                    hedge=hedge, release=release)

    async def embed(self, request: EmbeddingsRequest, *, regions: Regions = None,
                    ) -> tuple[EmbeddingsResponse, Upstream]:
        """Embeddings from the first deployment that serves them."""

        async def call(u: Upstream) -> EmbeddingsResponse:
            if not isinstance(u.provider, EmbeddingProvider):
                raise UpstreamRejected(f"provider {u.deployment.provider!r} serves no "
                                       "embeddings")
            return await u.provider.embed(request)

        return await self._attempts(call, regions, None)

    async def open_stream(self, request: ChatRequest, *, regions: Regions = None,
                          strategy: str | None = None, hedge: Hedge | None = None,
                          ) -> tuple[ChatCompletionChunk | None,
                                     AsyncIterator[ChatCompletionChunk], Upstream]:
        """A stream whose first content has arrived, and its deployment: its first chunk
        (``None``: an empty stream), the rest of it (replaying any chunks read ahead), and the
        deployment. Content-free chunks (a role, empty deltas) are held back until a chunk
        carries content, a tool call or a finish reason, so a failure before any of the answer
        fails over like one before the first byte. The rest is read under the deployment's
        ``stream_idle_s``; a failure there ends the stream with an ``UpstreamTimeout`` /
        ``ProviderError``, recorded in the breaker once (streams fail over only until their
        first content: after it the client has the answer's start, and a switch would splice
        two answers). With ``hedge`` (enabled), a late first content races a second stream
        from another deployment, and the loser is closed before the client sees a chunk."""

        async def head(u: Upstream) -> tuple[list[ChatCompletionChunk],
                                             AsyncIterator[ChatCompletionChunk]]:
            chunks = u.provider.stream(request)
            held: list[ChatCompletionChunk] = []
            try:
                while not (held and carries_answer(held[-1])):
                    held.append(await anext(chunks))
            except StopAsyncIteration:
                pass
            except BaseException:
                await chunks.aclose()  # type: ignore[attr-defined]
                raise
            return held, chunks

        async def release(u: Upstream, late: tuple[list[ChatCompletionChunk],
                                                    AsyncIterator[ChatCompletionChunk]],
                          ) -> tuple[int, int] | None:
            await late[1].aclose()  # type: ignore[attr-defined]
            u.health.inflight -= 1  # a stream's call stays in flight until it is closed
            u.breaker.success()
            return None

        (held, rest), upstream = await self._attempts(head, regions, strategy, stream=True,
                                                      hedge=hedge, release=release)
        first = held[0] if held else None
        if first is not None and first.usage is not None:
            upstream.health.used(first.usage.total_tokens)
        return first, Rest(upstream, rest, self._failed, held[1:]), upstream

    async def probe(self, u: Upstream, config: ProbeConfig) -> bool:
        """One active health check of ``u`` (a one-token chat call); its outcome counts
        toward the breaker like real traffic's, and a success is a half-open trial even
        before the cooldown ended (``breaker.half_open_calls`` of them close it)."""
        request = ChatRequest(model=self.model, max_tokens=1,
                              messages=[Message(role="user", content=config.prompt)])
        try:
            with call_timeouts(u.timeouts.connect_s, config.timeout_s):
                async with asyncio.timeout(config.timeout_s):
                    await u.provider.complete(request)
        except (TimeoutError, ProviderError) as exc:
            if isinstance(exc, ProviderError) and not exc.retryable:
                u.breaker.probed()  # it answered: the request was at fault
                return True
            u.breaker.failure(exc.retry_after if isinstance(exc, UpstreamRateLimited)
                              else None)
            return False
        except Exception as exc:
            u.unexpected(exc)
            u.breaker.failure()
            return False
        u.breaker.probed()
        return True

    async def _attempts(self, call: Callable[[Upstream], Awaitable[T]], regions: Regions,
                        strategy: str | None, stream: bool = False, *,
                        hedge: Hedge | None = None, release: Release[T] | None = None,
                        ) -> tuple[T, Upstream]:
        if not self.serves(regions):
            raise NoDeploymentInRegion(
                f"no deployment of {self.model!r} is in the required region(s) "
                f"{', '.join(sorted(regions or ()))}")
        cfg = self.config.retry
        deadline = Deadline.after(cfg.deadline_s, self._clock)
        last: ProviderError | None = None
        tried: set[int] = set()
        attempt = retries = waits = 0
        if hedge is not None and not hedge.config.enabled:
            hedge = None
        if hedge is not None:
            hedge.count_request()

        def spare() -> Upstream | None:
            """Another deployment for a hedge: allowed here, closed breaker, not tried yet,
            the best the strategy ranks (and then it counts as an attempt)."""
            nonlocal attempt
            if attempt >= cfg.max_attempts:
                return None
            for h in self.order(strategy, regions, stream):
                if id(h) not in tried and h.breaker.state == "closed":
                    tried.add(id(h))
                    attempt += 1
                    return h
            return None
        while attempt < cfg.max_attempts:
            order = self.order(strategy, regions, stream)
            if not order:  # every deployment cooling down: wait for a short Retry-After
                wait = self._soonest(regions)
                waits += 1
                if (last is None or wait > cfg.max_wait_s or wait >= deadline.remaining()
                        or waits > cfg.max_attempts):
                    break
                await asyncio.sleep(wait)
                continue
            called = False
            for u in order:
                if attempt >= cfg.max_attempts or not u.breaker.allows():
                    continue
                if id(u) in tried:
                    pause = self._retry.backoff_s(retries)
                    retries += 1
                    if pause >= deadline.remaining():
                        u.breaker.probing = False
                        break
                    if pause:
                        try:
                            await asyncio.sleep(pause)
                        except BaseException:  # the client left: free the half-open probe
                            u.breaker.probing = False
                            raise
                remaining = deadline.remaining()
                if remaining <= 0:
                    u.breaker.probing = False
                    break
                tried.add(id(u))
                attempt += 1
                called = True
                try:
                    if hedge is None:
                        return await self._call(u, call, remaining, stream), u
                    assert release is not None
                    return await self._hedged(u, call, deadline, stream, hedge, spare, release)
                except ProviderError as failure:
                    if not failure.retryable:
                        raise
                    last = failure
            if not called or deadline.remaining() <= 0:
                break
        if last is not None:
            raise last
        if deadline.remaining() <= 0:
            raise UpstreamTimeout(f"no deployment of {self.model!r} answered within "
                                  f"{cfg.deadline_s:g} s (dispatch.retry.deadline_s)")
        raise self._all_open(regions)

    async def _call(self, u: Upstream, call: Callable[[Upstream], Awaitable[T]],
                    remaining: float, stream: bool, hedge: bool = False) -> T:
        """One attempt at ``u``, inside the observer's record of it when there is one."""
        if self.observer is None:
            return await self._attempt(u, call, remaining, stream)
        with self.observer.attempt(u, model=self.model, hedge=hedge, stream=stream):
            return await self._attempt(u, call, remaining, stream)

    async def _attempt(self, u: Upstream, call: Callable[[Upstream], Awaitable[T]],
                       remaining: float, stream: bool) -> T:
        """One attempt at ``u``: its outcome recorded once (breaker, health, failure hook)."""
        u.calls += 1
        health = u.health
        health.inflight += 1
        health.started()
        limit = min(u.first_token_s() if stream else u.total_s(), remaining)
        start = time.perf_counter()
        try:
            # httpx's read timeout too: the client's default (server.upstream_timeout_s) would
            # cut a deployment whose own timeouts are longer
            read = max(limit, u.idle_s()) if stream else limit
            with call_timeouts(u.timeouts.connect_s, read):
                async with asyncio.timeout(limit):
                    result = await call(u)
        except TimeoutError:
            what = "no first chunk" if stream else "no answer"
            failure: ProviderError = UpstreamTimeout(
                f"{u.deployment.provider} upstream gave {what} in {limit:g} s")
        except ProviderError as exc:
            failure = exc
            if isinstance(exc, UpstreamRefused):
                exc.provider = u.deployment.provider
        except Exception as exc:  # an adapter bug fails this deployment, not the client
            failure = u.unexpected(exc)
        except asyncio.CancelledError:  # the client left, or a hedge race was decided
            health.inflight -= 1
            u.breaker.probing = False  # a half-open breaker's probe must not stay taken
            raise
        else:
            ms = (time.perf_counter() - start) * 1e3
            if stream:
                # In flight until the stream ends; its breaker outcome is the whole stream's
                # (``Rest``): a success here would reset the count of streams cut mid-answer.
                health.first_token(ms)
            else:
                health.latency(ms)
                health.inflight -= 1
                health.used(_tokens(result))
                u.breaker.success()
            return result
        health.inflight -= 1
        if isinstance(failure, UpstreamTimeout):  # slowness is latency too
            ms = (time.perf_counter() - start) * 1e3
            (health.first_token if stream else health.latency)(ms)
        self._failed(u, u.clean(failure))
        raise failure

    async def _hedged(self, u: Upstream, call: Callable[[Upstream], Awaitable[T]],
                      deadline: Deadline, stream: bool, hedge: Hedge,
                      spare: Callable[[], Upstream | None], release: Release[T],
                      ) -> tuple[T, Upstream]:
        """One attempt at ``u`` that, when its first token is late, races a second call to
        ``spare()``: the first to succeed answers, the other is cancelled (or, if it too
        answered, released) and noted in ``hedge.wasted``. A racer that fails leaves the other
        running: that is the failover. A cancelled call counts as a failure of its
        deployment (a timeout) only when it had been running past its own lateness, so a
        deployment that hangs opens its breaker while every request it holds is rescued."""
        cfg = hedge.config
        late = u.health.late_after_ms(stream, cfg.percentile, cfg.min_samples)
        remaining = deadline.remaining()
        if late is None or max(late, cfg.min_delay_ms) / 1e3 >= remaining:
            return await self._call(u, call, remaining, stream), u
        racers: dict[asyncio.Task[T], tuple[Upstream, float]] = {
            asyncio.ensure_future(self._call(u, call, remaining, stream)):
                (u, time.perf_counter())}
        decided = False  # a racer answered (not: the client left, the request was refused)
        try:
            done, _ = await asyncio.wait(racers, timeout=max(late, cfg.min_delay_ms) / 1e3)
            if not done and hedge.budget.allows() and (h := spare()) is not None:
                hedge.budget.take()
                hedge.fired += 1
                task = asyncio.ensure_future(self._call(h, call, deadline.remaining(), stream,
                                                        hedge=True))
                racers[task] = (h, time.perf_counter())
            failure: BaseException | None = None
            while racers:
                done, _ = await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in racers if t in done]:  # the first call first
                    who, _started = racers.pop(task)
                    failure = task.exception()
                    if failure is None:
                        hedge.won += who is not u
                        decided = True
                        return task.result(), who
                    if isinstance(failure, ProviderError) and not failure.retryable:
                        raise failure  # the request's fault: the other call's too
            assert failure is not None
            raise failure
        finally:
            await self._settle_losers(racers, hedge, stream, release, decided)

    async def _settle_losers(self, racers: dict[asyncio.Task[T], tuple[Upstream, float]],
                             hedge: Hedge, stream: bool, release: Release[T],
                             decided: bool) -> None:
        """Cancel the calls still racing, and record what each cost and how it ended. Only
        a race another call won (``decided``) says anything of a loser's deployment: past its
        lateness, it counts as a timeout. A client that left, or a request refused, blames no
        one."""
        for task in racers:
            task.cancel()
        await asyncio.gather(*racers, return_exceptions=True)
        cfg = hedge.config
        for task, (who, started) in racers.items():
            if task.cancelled():
                hedge.wasted.append(Waste(who))
                if not decided:
                    continue
                ran_ms = (time.perf_counter() - started) * 1e3
                late = who.health.late_after_ms(stream, cfg.percentile, cfg.min_samples)
                # Its time is not a timing: cut short, it would sit just past the lateness
                # and pull the percentile up to the hedge point, so later hedges come later
                # (benchmarks/hedging.py: p99 213 ms against 110 ms). Left out, the slow
                # calls hedges rescue drop out of the samples; max_share bounds what that
                # drift can spend.
                if late is not None and ran_ms >= max(late, cfg.min_delay_ms):
                    self._failed(who, UpstreamTimeout(
                        f"{who.deployment.provider} upstream gave no first token in "
                        f"{ran_ms:.0f} ms (a hedge answered first)"))
            elif task.exception() is None:  # it answered too, in a race too close to call
                hedge.wasted.append(Waste(who, await release(who, task.result())))

    def _failed(self, u: Upstream, exc: ProviderError) -> None:
        """Record one failed attempt, once: the hook (metrics), then the breaker."""
        if self._on_failure is not None:
            self._on_failure(u, self.model, exc)
        if not exc.retryable:
            u.breaker.answered()  # it answered: the request was at fault
            return
        cool = exc.retry_after if isinstance(exc, UpstreamRateLimited) else None
        u.breaker.failure(cool)

    def _soonest(self, regions: Regions) -> float:
        """Seconds until the first of the (allowed) deployments' breakers lets a call in."""
        now = self._clock()
        return max(0.0, min((u.breaker.open_until - now for u in self.upstreams
                             if regions is None or u.region in regions), default=0.0))

    def _all_open(self, regions: Regions) -> UpstreamUnavailable:
        exc = UpstreamUnavailable(f"every deployment of {self.model!r} is cooling down after "
                                  "repeated failures")
        exc.retry_after = max(1.0, self._soonest(regions))
        return exc


def _tokens(result: object) -> int:
    usage = getattr(result, "usage", None)
    return getattr(usage, "total_tokens", 0) or 0


__all__ = [
    "AttemptObserver",
    "CircuitBreaker",
    "Dispatcher",
    "FailureHook",
    "NoDeploymentInRegion",
    "Regions",
    "Release",
]
