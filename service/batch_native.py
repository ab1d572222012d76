"""Batch lines answered by a provider's own batch API, at its discount: submission,
polling, results back to the lines, accounting, cancellation.

Opt-in per deployment: ``native_batch: true`` on an ``openai`` or ``openai-compatible``
deployment (OpenAI's Files + Batches API) or an ``anthropic`` one (its Message Batches API);
``batch_discount``, 0.5 by default, is the share of the list price taken off. The APIs are
behind one Protocol (``router.providers.batch_api``). Nothing changes for a config without
such a deployment: the runner never builds the forward stage, and this loop only reads.

A line's way, when its model has such a deployment:

1. **Admission** (``service.batch_runner``): the line runs through the live stages with
   ``service.stages.forward`` in dispatch's place: the guard admits it (credential, rate
   limits, concurrency), the cache may answer it (a hit is answered at once and never
   forwarded; a forwarded answer is not stored in the cache), the route stage picks its model
   (``auto`` and named routes are routed), the reserve stage checks the model's limits and
   the budgets (its hold is released at once: the real cost is charged when the answer
   comes). The line is then ``forwarded`` with what the answer's accounting needs
   (``Routed``); a line whose model has no native deployment runs live, as before.
2. **Submission** (``NativeBatches.tick``): a gateway batch's forwarded lines for one
   deployment go into one provider batch once the batch has no line left to admit, or when
   its oldest held line waited ``batch.native_collect_s`` (at most 50,000 lines a provider
   batch). The native batch and its lines are recorded before the upload
   (``router.batch.forwarding``): after a crash mid-submission the provider is asked for it
   first (OpenAI: by a tag in its ``metadata``; Anthropic, which keeps none: a batch of that
   many requests created since), so a line is not submitted twice.
3. **Polling**: every ``batch.native_poll_s``. When the provider batch ends (completed,
   failed, expired, cancelled; Anthropic: ended), its results are read and each line's
   committed under its id there (``<native batch>:<line>``: a batch adopted by mistake
   after a crash answers none of ours). A line the provider answered (2xx,
   or a 4xx the request itself caused) gets that answer, translated by the adapter's live
   code; one it did not (a failed or expired batch, an unrun line, a 429 or 5xx) goes back to
   ``pending`` and runs live.
4. **Accounting**, for each committed line: its traffic-log row (status, tokens, cost at
   ``1 - batch_discount`` of the list price), the metrics, the batch's usage, and the spend
   on every budget the caller falls under. A crash between the commit and the row loses the
   row, never the line's result (the result is never committed twice).
5. **Cancel**: cancelling the gateway batch cancels each of its provider batches; lines not
   yet submitted are skipped, and those the provider cancelled are skipped once its batch
   reports ``cancelled`` (lines it answered before are kept, as OpenAI does).

Only ``/v1/chat/completions`` lines are forwarded (embeddings run live). A routed line's row
lacks the router's candidate list (the decision is not kept across the wait), its latency is
not the provider's, and the token-per-minute windows count its prompt only. A line that fails
over to live is admitted again (its rate limits count twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec

from router.batch.forwarding import ForwardStore, HeldLine, NativeJob
from router.batch.store import new_id
from router.batch.wire import LineResponse, OutputLine
from router.config import BatchConfig
from router.dispatch import Upstream
from router.governance.principal import Principal
from router.limits.budgets import Hold, period_key
from router.limits.plan import budgets_for
from router.providers import ProviderError
from router.providers.batch_api import BatchAPI
from router.providers.batch_api import LineResponse as ProviderResponse
from router.providers.native_batch import batch_api_for, discount_of
from router.wire.openai import ChatRequest
from service.errors import ErrorBody, to_api_error
from service.gateway import Gateway
from service.pipeline import Exchange
from service.stages.account import Account
from service.stages.forward import has_native

log = logging.getLogger("contextforge.batch")
_ENCODE = msgspec.json.Encoder()
_PRINCIPAL = msgspec.json.Decoder(Principal)


class Routed(msgspec.Struct, frozen=True):
    """What a forwarded line's admission decided, kept until its answer comes."""

    id: str  # the answer's id and its traffic-log row's
    model: str
    route: str
    deployment: str
    input_tokens: int
    request: ChatRequest  # as routed: ``model`` is the chosen catalog model

    @classmethod
    def of(cls, ex: Exchange) -> Routed:
        assert ex.model is not None and ex.upstream is not None
        assert isinstance(ex.request, ChatRequest)
        return cls(ex.id, ex.model.name, ex.route, ex.upstream.label, ex.input_tokens,
                   ex.request)


_ROUTED = msgspec.json.Decoder(Routed)


class NativeBatches:
    """Submits, polls and settles provider batches (see the module docstring)."""

    def __init__(self, store: ForwardStore, gateway: Gateway, config: BatchConfig, *,
                 owner: str, exclusive: bool, on_change: Callable[[], None] | None = None):
        self.store, self.gateway, self.config = store, gateway, config
        self.owner, self.exclusive = owner, exclusive
        self.on_change = on_change  # lines went back to pending, or a batch may end
        self._wake = asyncio.Event()
        self._polled: dict[str, float] = {}  # native batch -> when it was last polled
        self._started = False
        self._idle = False  # nothing forwarded or open, seen while no deployment forwards
        self.submissions = 0  # provider batches this process created (for tests, metrics)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Look for work every ``batch.poll_s`` (or when woken) until cancelled."""
        while True:
            self._wake.clear()
            try:
                await self.tick()
            except Exception:  # the store or an upstream is down: the next tick tries again
                log.exception("batch: a round of the provider batches failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll_s):
                    await self._wake.wait()

    async def tick(self) -> None:
        """Skip what cancelled batches no longer need, submit what is ready, poll."""
        store = self.store
        if not has_native(self.gateway):
            # nothing can be forwarded now: once nothing is left from a deployment that did,
            # the store is not read again until one does (a scan of every line otherwise)
            if self._idle or await asyncio.to_thread(store.idle):
                self._idle = True
                return
        else:
            self._idle = False
        await asyncio.to_thread(store.skip_unsubmitted)
        everyone = self.exclusive and not self._started
        self._started = True
        for job in await asyncio.to_thread(store.orphans, self.owner, self.config.lease_s,
                                           everyone=everyone):
            await self._submit(job, resumed=True)
        for batch_id, model, deployment in await asyncio.to_thread(
                store.ready, self.config.native_collect_s):
            job = await asyncio.to_thread(store.assemble, batch_id, model, deployment,
                                          self.owner, self.config.lease_s)
            if job is not None:
                await self._submit(job, resumed=False)
        for job in await asyncio.to_thread(store.active):
            try:
                await self._poll(job)
            except Exception:  # this one's provider or lines: the others go on
                log.exception("batch: polling %s (%s) failed", job.id, job.provider_id)

    def _upstream(self, job: NativeJob) -> tuple[Upstream, BatchAPI] | None:
        dispatcher = self.gateway.dispatchers.get(job.model)
        for up in dispatcher.upstreams if dispatcher is not None else ():
            api = batch_api_for(up.provider, self.gateway.ctx.client()) \
                if up.label == job.deployment else None
            if api is not None:
                return up, api
        return None

    async def _submit(self, job: NativeJob, *, resumed: bool) -> None:
        found = self._upstream(job)
        if found is None:  # the deployment left the config meanwhile
            await self._close(job, skip=False, why="its deployment is gone")
            return
        client = found[1]
        try:
            held = await asyncio.to_thread(self.store.lines, job.id)
            if resumed and (known := await client.find(job.id, len(held),
                                                        job.created)) is not None:
                await asyncio.to_thread(self.store.submitted, job.id, known.id)
                return
            if not held:
                await self._close(job, skip=False, why="no line left")
                return
            # off the event loop: up to 50,000 requests to decode and encode
            content = await asyncio.to_thread(client.encode, [
                (_custom_id(job.id, h.line), _ROUTED.decode(h.routed).request) for h in held])
            batch = await client.submit(content, job.id)
        except ProviderError as exc:
            if exc.retryable:  # try again at the next poll
                log.warning("batch: submitting %s to %s failed (%s): retrying", job.id,
                            job.deployment, exc)
                await asyncio.to_thread(self.store.unclaim, job.id,
                                        retry_at=time.time() + self.config.native_poll_s)
                return
            await self._close(job, skip=False, why=f"the provider refused it: {exc}")
            return
        self.submissions += 1
        await asyncio.to_thread(self.store.submitted, job.id, batch.id)
        self._polled[job.id] = time.monotonic()
        log.info("batch: %d lines of %s went to %s as %s", len(held), job.batch_id,
                 job.deployment, batch.id)

    async def _poll(self, job: NativeJob) -> None:
        found = self._upstream(job)
        if found is None:
            await self._close(job, skip=job.batch_status == "cancelling",
                              why="its deployment is gone")
            return
        up, client = found
        assert job.provider_id is not None
        if job.batch_status == "cancelling" and not job.cancel_sent:
            try:
                await client.cancel(job.provider_id)
            except ProviderError as exc:
                if exc.retryable:
                    raise
                # (OpenAI's 409: it ended before the cancel came) its results still count
                log.info("batch: cancelling %s (%s) was refused: %s", job.id,
                         job.provider_id, exc)
            await asyncio.to_thread(self.store.cancel_sent, job.id)
        elif time.monotonic() - self._polled.get(job.id, 0.0) < self.config.native_poll_s:
            return
        self._polled[job.id] = time.monotonic()
        batch = await client.get(job.provider_id)
        if not batch.ended:
            return
        results = await client.results(batch)
        answered = 0
        for held in await asyncio.to_thread(self.store.lines, job.id):
            line = results.get(_custom_id(job.id, held.line))
            response = line.response if line is not None else None
            if response is None or response.status_code == 429 or \
                    response.status_code >= 500:
                continue  # not answered: it runs live (or is skipped when cancelling)
            answered += await self._settle(job, held, response, up, client)
        await self._close(job, skip=job.batch_status == "cancelling",
                          why=f"the provider batch {batch.id} is {batch.status}")
        self._polled.pop(job.id, None)
        log.info("batch: %s (%s) ended %s: %d lines answered", job.id, batch.id,
                 batch.status, answered)

    async def _close(self, job: NativeJob, *, skip: bool, why: str) -> None:
        n = await asyncio.to_thread(self.store.close, job, skip=skip)
        if n:
            log.info("batch: %d lines of %s %s (%s)", n, job.batch_id,
                     "skipped" if skip else "run live", why)
        if self.on_change is not None:
            self.on_change()

    async def _settle(self, job: NativeJob, held: HeldLine, response: ProviderResponse,
                      up: Upstream, client: BatchAPI) -> int:
        """Commit one answered line and account it; 1 when this call committed it."""
        gw = self.gateway
        routed = _ROUTED.decode(held.routed)
        principal = _PRINCIPAL.decode(held.principal)
        ex = Exchange("chat", routed.request, id=routed.id, principal=principal,
                      tenant=principal.tenant, route=routed.route,
                      input_tokens=routed.input_tokens, upstream=up,
                      price_factor=1 - discount_of(up.provider))
        if routed.model in gw.catalog:
            ex.model = gw.catalog.get(routed.model)
        status, tokens = response.status_code, (0, 0)
        try:
            if status >= 300:
                raise client.error(status, response.body)
            completion = msgspec.structs.replace(
                client.completion(routed.request, response.body), id=routed.id)
            ex.result, ex.usage = completion, completion.usage
            body: object = completion
            tokens = (completion.usage.prompt_tokens, completion.usage.completion_tokens)
        except ProviderError as exc:
            ex.fail(exc)
            err = to_api_error(exc)
            status, body = err.status, ErrorBody(err.detail())
        result = _ENCODE.encode(OutputLine(
            id=new_id("batch_req_"), custom_id=held.custom_id,
            response=LineResponse(status_code=status, request_id=routed.id, body=body),
            error=None))
        if not await asyncio.to_thread(self.store.finish, job.id, job.batch_id, held.line,
                                       200 <= status < 300, result, tokens):
            return 0
        await self._account(ex)
        return 1

    async def _account(self, ex: Exchange) -> None:
        """The line's row and metrics (``Account``), and its cost on the caller's budgets."""
        gw = self.gateway
        Account().leave(ex, gw)
        limits = gw.limits
        if limits is None or ex.cost_usd <= 0:
            return
        budgets = budgets_for(limits.config.budgets, ex.principal)
        if budgets:  # no reservation left to settle: the spend is recorded as such
            now = time.time()
            hold = Hold(ex.id, tuple(budgets), tuple(period_key(b.period, now)
                                                     for b in budgets), 0.0)
            await limits.settle(hold, ex.cost_usd, failed=False)


def _custom_id(nid: str, line: int) -> str:
    """A line's id in a provider batch: unique to this native batch, so results can only be
    matched to the lines sent in it (a batch found again after a crash that is not ours
    answers none of them)."""
    return f"{nid}:{line}"
