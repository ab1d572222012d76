"""Anthropic's Message Batches API: the simulator's shapes as the official SDK reads them,
and the gateway's client (``router.providers.anthropic_batches``) against it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import anthropic
import pytest

from router.providers import Deployment
from router.providers.native_batch import batch_api_for, discount_of
from tests.unit.test_router.test_providers import harness
from tests.upstreams import serve
from tests.upstreams.anthropic import API_KEY, AnthropicSimulator
from tests.upstreams.anthropic_batches import BatchSim

BATCHES = BatchSim(delay_s=0.2)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(AnthropicSimulator(batches=BATCHES).app) as base:
        yield base


def params(text: str) -> dict:
    return {"model": "claude-3-haiku", "max_tokens": 50,
            "messages": [{"role": "user", "content": text}]}


def test_the_sdk_reads_the_simulators_message_batches(url):
    async def main():
        async with anthropic.AsyncAnthropic(base_url=url, api_key=API_KEY,
                                            max_retries=0) as client:
            batch = await client.messages.batches.create(requests=[
                {"custom_id": "a", "params": params("hello")},
                {"custom_id": "b", "params": params("FAIL 400")}])
            first = batch.processing_status
            deadline = time.monotonic() + 10
            while batch.processing_status != "ended":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
                batch = await client.messages.batches.retrieve(batch.id)
            results = {r.custom_id: r async for r in
                       await client.messages.batches.results(batch.id)}
            listed = [b.id async for b in client.messages.batches.list(limit=5)]
            BATCHES.delay_s = 60.0  # still in progress when the cancel comes, however slow
            try:
                other = await client.messages.batches.create(requests=[
                    {"custom_id": "c", "params": params("x")}])
            finally:
                BATCHES.delay_s = 0.2
            cancelling = await client.messages.batches.cancel(other.id)
            after = await client.messages.batches.retrieve(other.id)
            return first, batch, results, listed, cancelling, after
    first, batch, results, listed, cancelling, after = asyncio.run(main())
    assert first == "in_progress" and batch.id in listed
    assert batch.request_counts.succeeded == 1 and batch.request_counts.errored == 1
    assert results["a"].result.type == "succeeded"
    assert results["a"].result.message.content[0].text.startswith("Echo: hello")
    assert results["b"].result.type == "errored"
    assert results["b"].result.error.error.type == "invalid_request_error"
    assert cancelling.processing_status == "canceling"
    assert after.processing_status == "ended" and after.request_counts.canceled == 1


def test_the_client_submits_finds_and_reads_results(url):
    dep = Deployment(provider="anthropic", endpoint=url, api_key=API_KEY, native_batch=True,
                     batch_discount=0.5)

    async def work(provider):
        api = batch_api_for(provider, provider._http)
        req = harness.chat_request("claude-3-haiku", [{"role": "user", "content": "hi"}])
        bad = harness.chat_request("claude-3-haiku", [{"role": "user", "content": "FAIL 400"}])
        since = time.time()
        batch = await api.submit(api.encode([("1", req), ("2", bad)]), "unused")
        assert (await api.find("unused", 2, since)).id == batch.id
        assert await api.find("unused", 3, since) is None
        while not (batch := await api.get(batch.id)).ended:
            await asyncio.sleep(0.05)
        results = await api.results(batch)
        error = api.error(results["2"].response.status_code, results["2"].response.body)
        return api.completion(req, results["1"].response.body), results, error

    completion, results, error = harness.run(dep, work)
    assert completion.choices[0].message.content.startswith("Echo: hi")
    assert completion.model == "claude-3-haiku" and completion.usage.completion_tokens > 0
    assert results["2"].response.status_code == 400 and error.status == 400
    assert discount_of(harness.run(dep, lambda p: asyncio.sleep(0, p))) == 0.5


def test_without_native_batch_there_is_no_batch_api(url):
    dep = Deployment(provider="anthropic", endpoint=url, api_key=API_KEY)
    assert harness.run(dep, lambda p: asyncio.sleep(0, batch_api_for(p, p._http))) is None
