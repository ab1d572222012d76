"""OpenAI's Batch API: the simulator's shapes as the official SDK reads them, and the
gateway's client (``router.providers.openai_batches``) against it; ``native_batch`` settings
checked like the others."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator

import openai
import pytest

from router.errors import ConfigError
from router.providers import Deployment, UpstreamRejected
from router.providers.openai_batches import OpenAIBatches
from tests.unit.test_router.test_providers import harness
from tests.upstreams import serve
from tests.upstreams.openai_batches import BatchSim
from tests.upstreams.openai_compat import SimState, create_app

SIM, BATCHES = SimState(), BatchSim(delay_s=0.2)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(create_app(SIM, batches=BATCHES)) as base:
        yield base


def line(cid: str, text: str) -> dict:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}}


async def sdk_round(url: str, texts: list[str]) -> tuple:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=SIM.api_key, max_retries=0)
    async with client:
        content = "".join(json.dumps(line(f"c{i}", t)) + "\n" for i, t in enumerate(texts))
        f = await client.files.create(file=("in.jsonl", io.BytesIO(content.encode())),
                                      purpose="batch")
        batch = await client.batches.create(input_file_id=f.id,
                                            endpoint="/v1/chat/completions",
                                            completion_window="24h", metadata={"k": "v"})
        first = batch.status
        deadline = time.monotonic() + 10
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
            batch = await client.batches.retrieve(batch.id)
        out = (await client.files.content(batch.output_file_id)).text \
            if batch.output_file_id else ""
        err = (await client.files.content(batch.error_file_id)).text \
            if batch.error_file_id else ""
        listed = [b.id async for b in client.batches.list(limit=5)]
        return first, batch, out, err, listed


def test_the_sdk_reads_the_simulators_files_and_batches(url):
    first, batch, out, err, listed = asyncio.run(sdk_round(url, ["hello", "FAIL 400"]))
    assert first == "validating" and batch.status == "completed"
    assert batch.request_counts.total == 2 and batch.request_counts.completed == 1
    assert batch.request_counts.failed == 1 and batch.metadata == {"k": "v"}
    assert batch.id in listed
    answer = json.loads(out)
    assert answer["custom_id"] == "c0" and answer["response"]["status_code"] == 200
    assert answer["response"]["body"]["choices"][0]["message"]["content"] == "echo: hello"
    assert json.loads(err)["response"]["status_code"] == 400


def test_the_sdk_cancels_a_batch(url):
    async def main():
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=SIM.api_key,
                                      max_retries=0) as client:
            f = await client.files.create(file=("in.jsonl", io.BytesIO(
                (json.dumps(line("a", "x")) + "\n").encode())), purpose="batch")
            BATCHES.delay_s = 60.0  # still in progress when the cancel comes, however slow
            try:
                b = await client.batches.create(input_file_id=f.id, completion_window="24h",
                                                endpoint="/v1/chat/completions")
            finally:
                BATCHES.delay_s = 0.2
            cancelling = await client.batches.cancel(b.id)
            return cancelling.status, (await client.batches.retrieve(b.id)).status
    assert asyncio.run(main()) == ("cancelling", "cancelled")


def native(url: str, **kw) -> Deployment:
    return Deployment(provider="openai", endpoint=f"{url}/v1", api_key=SIM.api_key,
                      native_batch=True, **kw)


def test_the_client_submits_polls_and_reads_results(url):
    async def work(provider):
        client = OpenAIBatches(provider, provider._ctx.client())
        req = harness.chat_request("gpt-4o-mini", [{"role": "user", "content": "hi there"}])
        batch = await client.submit(client.encode([("7", req)]), "nb_1")
        assert (await client.find("nb_1")).id == batch.id
        assert await client.find("nb_unknown") is None
        while not (batch := await client.get(batch.id)).ended:
            await asyncio.sleep(0.05)
        results = await client.results(batch)
        return provider.completion(req, results["7"].response.body)
    completion = harness.run(native(url), work)
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.usage.completion_tokens == 3


def test_an_unknown_batch_is_an_upstream_rejection(url):
    async def work(provider):
        client = OpenAIBatches(provider, provider._ctx.client())
        return await client.get("batch_missing")
    with pytest.raises(UpstreamRejected):
        harness.run(native(url), work)


def test_native_batch_is_refused_where_there_is_no_openai_batch_api(url):
    with pytest.raises(ConfigError, match="native_batch"):
        harness.run(Deployment(provider="groq", api_key="k", native_batch=True),
                    lambda p: asyncio.sleep(0))
