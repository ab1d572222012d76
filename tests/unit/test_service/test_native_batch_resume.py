"""A submission cut short by a crash (the provider got the batch, the gateway never recorded
its id) is adopted at the restart, not submitted again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import msgspec

from router.batch.forwarding import ForwardStore
from router.batch.store import BatchStore
from router.config import BatchConfig
from router.providers import Deployment, ProviderContext, build_provider
from router.providers.openai_batches import OpenAIBatches
from router.wire.openai import ChatRequest
from service.batch_native import NativeBatches, Routed, _custom_id
from tests.unit.test_router.test_batch.test_batch_store import new_batch
from tests.upstreams import serve
from tests.upstreams.openai_batches import BatchSim
from tests.upstreams.openai_compat import SimState, create_app

LABEL = "openai-compatible:gpt-4o-mini@sim"


def test_an_orphaned_submission_is_found_by_its_tag_not_sent_again(governance_db):
    sim, batches = SimState(), BatchSim(delay_s=30)
    store, fwd = BatchStore(governance_db), ForwardStore(governance_db)
    batch = new_batch(store, 2)
    store.start()
    request = msgspec.convert({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "hi"}]}, ChatRequest)
    for c in store.claim("dead", 10, 600):
        routed = Routed(f"chatcmpl-{c.line}", "gpt-4o-mini", "none", LABEL, 3, request)
        assert fwd.forward("dead", c.batch_id, c.line, "gpt-4o-mini", LABEL,
                           msgspec.json.encode(routed))
    job = fwd.assemble(batch.id, "gpt-4o-mini", LABEL, "dead", 600)

    async def main(url: str) -> tuple[str, NativeBatches]:
        async with httpx.AsyncClient(timeout=10) as http:
            provider = build_provider(Deployment(
                provider="openai-compatible", endpoint=f"{url}/v1", api_key=sim.api_key,
                native_batch=True), ProviderContext(count_tokens=len, http=http))
            client = OpenAIBatches(provider, http)
            held = fwd.lines(job.id)
            lines = [(_custom_id(job.id, h.line), request) for h in held]
            sent = await client.submit(client.encode(lines), job.id)  # ... then the process died
            gateway = SimpleNamespace(
                dispatchers={"gpt-4o-mini": SimpleNamespace(upstreams=[SimpleNamespace(
                    label=LABEL, provider=provider)])},
                ctx=SimpleNamespace(client=lambda: http))
            native = NativeBatches(fwd, gateway, BatchConfig(native_poll_s=0.01),
                                   owner="restarted", exclusive=True)
            await native.tick()
            return sent.id, native

    with serve(create_app(sim, batches=batches)) as url:
        sent, native = asyncio.run(main(url))
    assert batches.submissions == 1 and native.submissions == 0
    assert [j.provider_id for j in fwd.active()] == [sent]


def test_a_cancel_that_comes_after_the_provider_batch_ended_does_not_stall_polling(
        governance_db):
    sim, batches = SimState(), BatchSim(delay_s=0.05)
    batches.fail = True  # it ends (failed) before the gateway hears of the cancel
    store, fwd = BatchStore(governance_db), ForwardStore(governance_db)
    batch = new_batch(store, 2)
    store.start()
    request = msgspec.convert({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "hi"}]}, ChatRequest)
    for c in store.claim("r1", 10, 600):
        routed = Routed(f"chatcmpl-{c.line}", "gpt-4o-mini", "none", LABEL, 3, request)
        assert fwd.forward("r1", c.batch_id, c.line, "gpt-4o-mini", LABEL,
                           msgspec.json.encode(routed))
    job = fwd.assemble(batch.id, "gpt-4o-mini", LABEL, "r1", 600)

    async def main(url: str) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            provider = build_provider(Deployment(
                provider="openai-compatible", endpoint=f"{url}/v1", api_key=sim.api_key,
                native_batch=True), ProviderContext(count_tokens=len, http=http))
            client = OpenAIBatches(provider, http)
            lines = [(_custom_id(job.id, h.line), request) for h in fwd.lines(job.id)]
            sent = await client.submit(client.encode(lines), job.id)
            fwd.submitted(job.id, sent.id)
            await asyncio.sleep(0.3)
            assert (await client.get(sent.id)).ended  # the provider's batch has ended
            store.cancel("alice", batch.id)
            gateway = SimpleNamespace(
                dispatchers={"gpt-4o-mini": SimpleNamespace(upstreams=[SimpleNamespace(
                    label=LABEL, provider=provider)])},
                ctx=SimpleNamespace(client=lambda: http))
            native = NativeBatches(fwd, gateway, BatchConfig(native_poll_s=0.01),
                                   owner="r1", exclusive=True)
            await native.tick()  # the provider refuses the cancel (409): it ended

    with serve(create_app(sim, batches=batches)) as url:
        asyncio.run(main(url))
    assert batches.cancels == 0  # refused, not counted by the provider
    assert fwd.active() == [] and fwd.lines(job.id) == []  # polled, closed, lines skipped
