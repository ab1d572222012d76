"""Runs batch lines through the gateway's pipeline, beside live traffic and below it.

One ``BatchRunner`` per replica, started in the app's lifespan. It claims pending lines
(``router.batch.store``) and runs each as an ``Exchange`` of the batch creator's principal,
through the same stages as a live request: guard (rate limits, budgets), cache, route,
reserve, dispatch, account. Two things keep it from starving live traffic: at most
``batch.concurrency`` lines in flight (4 by default, so batches never hold more than a few of
the upstreams' connections or the event loop's turns), and no new line while
``batch.yield_above`` live requests are in flight (``LiveRequests`` counts them).

Durability: a line's result and its count are committed together (``BatchStore.finish``)
before the line is done. A crash before that commit leaves the line ``running``; it is run
again after the restart (its first upstream call, if one was made, is paid for but never
reported), so every ``custom_id`` is in the output or the error file exactly once. A line a
rate limit refuses goes back to ``pending`` and its batch waits the ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from router.batch.forwarding import ForwardStore
from router.batch.store import BatchStore, Claimed, new_id
from router.batch.wire import LineResponse, OutputLine
from router.config import BatchConfig
from router.governance.principal import Principal
from router.wire.openai import EMBEDDINGS_DECODER, REQUEST_DECODER
from service.batch_native import NativeBatches, Routed
from service.errors import APIError, ErrorBody, decode_body, to_api_error
from service.gateway import Gateway
from service.pipeline import Exchange, Pipeline
from service.stages.dispatch import Dispatch
from service.stages.forward import Forward, has_native

log = logging.getLogger("contextforge.batch")
_PRINCIPAL = msgspec.json.Decoder(Principal)
_ENCODE = msgspec.json.Encoder()
# Not live traffic: the batch endpoints themselves, and what operators poll.
_NOT_LIVE = ("/v1/files", "/v1/batches")


class LiveRequests:
    """How many live API requests (``/v1/...``, not the batch endpoints) are in flight, as
    an ASGI middleware counts them: from the request's arrival to its last byte (a stream
    to its end)."""

    def __init__(self) -> None:
        self.in_flight = 0

    def middleware(self, app: Callable[..., Any]) -> Callable[..., Any]:
        async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
            path = scope.get("path", "") if scope["type"] == "http" else ""
            if not path.startswith("/v1/") or path.startswith(_NOT_LIVE):
                await app(scope, receive, send)
                return
            self.in_flight += 1
            try:
                await app(scope, receive, send)
            finally:
                self.in_flight -= 1

        return counted


class BatchRunner:
    """Claims and runs batch lines until cancelled (see the module docstring)."""

    def __init__(self, store: BatchStore, gateway: Gateway, config: BatchConfig,
                 live: LiveRequests, *, exclusive: bool,
                 authorize: Callable[[Principal], Awaitable[None]] | None = None):
        self.store, self.gateway, self.config, self.live = store, gateway, config, live
        # Raises when the batch's credential stopped working (a revoked key): its lines fail.
        self.authorize = authorize
        # exclusive: this process is the database's only runner (SQLite), so at start-up
        # every line left running was its own predecessor's, and is freed at once.
        self.exclusive = exclusive
        self.owner = new_id("runner-")
        self._wake = asyncio.Event()
        self._lines: set[asyncio.Task[None]] = set()
        self._wait_until: dict[str, float] = {}  # batch -> when a rate limit lets it go on
        self._finalized = self._started = 0.0
        self._new = False  # a batch was created or cancelled since the last round
        self._stopping = False
        self.yielded = 0  # rounds that claimed nothing because live traffic was high
        # Lines whose model has a native_batch deployment go to its provider's batch API
        # (``service.batch_native``): dispatch's place in their stages is the forward stage.
        self.forwards = ForwardStore(store.db)
        self.native = NativeBatches(self.forwards, gateway, config, owner=self.owner,
                                    exclusive=exclusive, on_change=self.wake)
        self._forwarding: Pipeline | None = None  # built when first needed

    @property
    def in_flight(self) -> int:
        """Lines this runner is running now."""
        return len(self._lines)

    def wake(self, *, batch: bool = True) -> None:
        """Look for work now: a batch was created or cancelled (``batch``), or a line ended."""
        self._new = self._new or batch
        self._wake.set()

    async def stop(self, task: asyncio.Task[None], grace_s: float) -> None:
        """End ``task`` (this runner's ``run``): no new line starts, lines in flight get
        ``grace_s`` to finish and commit (an answer paid for is kept), then the rest are
        abandoned uncommitted and run again after the restart."""
        self._stopping = True
        if self._lines:
            await asyncio.wait(set(self._lines), timeout=grace_s)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def run(self) -> None:
        """The runner's loop; ``stop`` ends it."""
        released = False
        native = asyncio.get_running_loop().create_task(self.native.run())
        try:
            while True:
                self._wake.clear()
                busy = False
                try:
                    if not released:  # before the first claim: the last run's lines
                        freed = await asyncio.to_thread(self.store.release,
                                                        everyone=self.exclusive)
                        released = True
                        if freed:
                            log.info("batch: %d lines the last run left in flight will run "
                                     "again", freed)
                    busy = await self._round()
                except Exception:  # the store is down: the next round tries again
                    log.exception("batch: a round of the runner failed")
                if busy:  # live traffic is high: look again soon, not at once
                    await asyncio.sleep(min(self.config.poll_s, 0.05))
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.poll_s):
                        await self._wake.wait()
        finally:
            native.cancel()
            for task in self._lines:
                task.cancel()
            await asyncio.gather(native, *self._lines, return_exceptions=True)

    async def _round(self) -> bool:
        """Start batches, claim what there is room for, end finished batches. True when it
        held back for live traffic."""
        store, now = self.store, time.monotonic()
        if self._new or now - self._started > self.config.poll_s:
            self._new, self._started = False, now  # (not a write per line ended)
            await asyncio.to_thread(store.start)
        free = 0 if self._stopping else self.config.concurrency - len(self._lines)
        if free > 0 and self.live.in_flight >= self.config.yield_above:
            self.yielded += 1
            return True
        claimed: list[Claimed] = []
        if free > 0:
            self._wait_until = {b: t for b, t in self._wait_until.items() if t > now}
            waiting = list(self._wait_until)
            claimed = await asyncio.to_thread(store.claim, self.owner, free,
                                              self.config.lease_s, skip=waiting)
            for line in claimed:
                task = asyncio.get_running_loop().create_task(self._run_line(line))
                self._lines.add(task)
                task.add_done_callback(self._line_done)
        if len(claimed) < free or now - self._finalized > self.config.poll_s:
            # Nothing more to claim (a batch may have ended), or a while since the last look
            # (a cancelled batch, another replica's, a lease run out).
            self._finalized = now
            if not self.exclusive:
                await asyncio.to_thread(store.release, everyone=False)
            for batch_id in await asyncio.to_thread(store.finalize):
                log.info("batch: %s ended", batch_id)
        return False

    def _line_done(self, task: asyncio.Task[None]) -> None:
        self._lines.discard(task)
        self.wake(batch=False)

    async def _run_line(self, line: Claimed) -> None:
        status, body, request_id, retry_after, tokens = await self._answer(line)
        if isinstance(body, Routed):  # held for its deployment's batch API
            try:
                if await asyncio.to_thread(self.forwards.forward, self.owner, line.batch_id,
                                           line.line, body.model, body.deployment,
                                           _ENCODE.encode(body)):
                    self.native.wake()
            except Exception:  # the lease frees it; it is admitted again
                log.exception("batch: could not forward line %d of %s", line.line,
                              line.batch_id)
            return
        if retry_after is not None:
            self._wait_until[line.batch_id] = time.monotonic() + min(retry_after, 60.0)
            try:
                await asyncio.to_thread(self.store.requeue, self.owner, line.batch_id,
                                        line.line)
            except Exception:  # the lease frees it
                log.exception("batch: could not requeue line %d of %s", line.line,
                              line.batch_id)
            return
        result = _ENCODE.encode(OutputLine(
            id=new_id("batch_req_"), custom_id=line.custom_id,
            response=LineResponse(status_code=status, request_id=request_id, body=body),
            error=None))
        try:
            if not await asyncio.to_thread(self.store.finish, self.owner, line.batch_id,
                                           line.line, 200 <= status < 300, result, tokens):
                log.warning("batch: line %d of %s was taken over (its lease ended): this "
                            "answer is dropped", line.line, line.batch_id)
        except Exception:  # the lease frees it; it runs again
            log.exception("batch: could not record line %d of %s", line.line, line.batch_id)

    def _pipeline(self, line: Claimed, chat: bool) -> Pipeline:
        """The live stages, or (a chat line that may be forwarded, and a deployment that
        takes them) the same with the forward stage in dispatch's place."""
        gw = self.gateway
        if not chat or line.live or not has_native(gw):
            return gw.pipeline
        if self._forwarding is None:
            self._forwarding = Pipeline([Forward(s) if isinstance(s, Dispatch) else s
                                         for s in gw.pipeline.stages])
        return self._forwarding

    async def _answer(self, line: Claimed
                      ) -> tuple[int, Any, str, float | None, tuple[int, int]]:
        """(status, body, request id, retry after when refused for now, (input, output)
        tokens) of one line; the body is the line's ``Routed`` when it is to be forwarded."""
        chat = line.endpoint == "/v1/chat/completions"
        request_id = ""
        try:
            principal = _PRINCIPAL.decode(line.principal)
            if self.authorize is not None:
                await self.authorize(principal)
            request = decode_body(REQUEST_DECODER if chat else EMBEDDINGS_DECODER, line.body)
            ex = Exchange("chat" if chat else "embeddings", request, principal=principal,
                          tenant=principal.tenant)
            request_id = ex.id
            # Bounded well inside the lease, so no other runner takes the line meanwhile.
            async with asyncio.timeout(self.config.lease_s / 2):
                await self._pipeline(line, chat).run(ex, self.gateway)
            if ex.deferred:
                return 200, Routed.of(ex), request_id, None, (0, 0)
            usage, tokens = ex.usage, (0, 0)
            if usage is not None:  # embeddings have no completion tokens
                tokens = (usage.prompt_tokens, getattr(usage, "completion_tokens", 0))
            return 200, ex.result, request_id, None, tokens
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                err = APIError("the request took longer than batch.lease_s / 2",
                               code="timeout")
                err.status = 504
            else:
                err = to_api_error(exc)
            if err.status == 429 and err.retry_after is not None:
                return err.status, None, request_id, err.retry_after, (0, 0)
            return (err.status, ErrorBody(err.detail()), request_id or new_id("req_"), None,
                    (0, 0))
