"""The batch runner with a stand-in pipeline: its concurrency bound, yielding to live
traffic, rate-limited lines put back, and a run cut short (cancelled mid-line) resumed by the
next runner without repeating a committed line."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from types import SimpleNamespace

import msgspec
import pytest

from router.batch.lines import parse
from router.batch.store import BatchStore
from router.config import BatchConfig
from router.governance.principal import Principal
from service.batch_runner import BatchRunner, LiveRequests
from service.limits import RateLimited

ALICE = Principal(tenant="alice", via="key", credential="k1")
pytestmark = pytest.mark.anyio


class Pipeline:
    """Answers each line after ``delay_s``; counts calls and the most in flight at once."""

    def __init__(self, delay_s: float = 0.01, refuse: int = 0):
        self.delay_s, self.refuse = delay_s, refuse
        self.calls: Counter[str] = Counter()
        self.now = self.most = 0

    async def run(self, ex, gw):
        text = ex.request.messages[-1].content
        self.calls[text] += 1
        if self.refuse:
            self.refuse -= 1
            err = RateLimited("slow down")
            err.retry_after = 0.05
            raise err
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.now -= 1
        ex.result = {"answer": text}
        return ex


@pytest.fixture()
def anyio_backend():
    return "asyncio"


@pytest.fixture()
def store(governance_db):
    return BatchStore(governance_db)


def submit(store: BatchStore, n: int) -> str:
    text = "".join(json.dumps({"custom_id": f"c{i}", "method": "POST",
                               "url": "/v1/chat/completions",
                               "body": {"model": "auto", "messages": [
                                   {"role": "user", "content": f"p{i}"}]}}) + "\n"
                   for i in range(n))
    f = store.add_file("alice", "in.jsonl", "batch", text.encode())
    return store.create_batch("alice", msgspec.json.encode(ALICE), "/v1/chat/completions",
                              f.id, parse(text.encode(), max_lines=1000)[1]).id


def runner(store, pipeline, live=None, **config) -> BatchRunner:
    gateway = SimpleNamespace(pipeline=pipeline, dispatchers={})
    return BatchRunner(store, gateway, BatchConfig(poll_s=0.05, **config),  # type: ignore[arg-type]
                       live or LiveRequests(), exclusive=True)


async def until_ended(store: BatchStore, batch_id: str, timeout_s: float = 10):
    async with asyncio.timeout(timeout_s):
        while (b := store.get_batch("alice", batch_id)).status not in ("completed", "cancelled"):
            await asyncio.sleep(0.02)
    return b


def output_ids(store: BatchStore, batch) -> Counter[str]:
    text = store.file_content("alice", batch.output_file_id).decode()
    return Counter(json.loads(x)["custom_id"] for x in text.splitlines())


async def test_at_most_concurrency_lines_run_at_once(store):
    batch_id, pipeline = submit(store, 30), Pipeline()
    r = runner(store, pipeline, concurrency=3)
    task = asyncio.create_task(r.run())
    r.wake()
    done = await until_ended(store, batch_id)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert done.request_counts.completed == 30 and pipeline.most == 3
    assert output_ids(store, done) == Counter(f"c{i}" for i in range(30))


async def test_no_line_starts_while_live_traffic_is_high(store):
    batch_id, pipeline, live = submit(store, 5), Pipeline(), LiveRequests()
    live.in_flight = 16
    r = runner(store, pipeline, live, yield_above=16)
    task = asyncio.create_task(r.run())
    r.wake()
    await asyncio.sleep(0.3)
    assert not pipeline.calls and r.yielded > 0
    live.in_flight = 15
    done = await until_ended(store, batch_id)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert done.request_counts.completed == 5


async def test_a_rate_limited_line_is_put_back_not_failed(store):
    batch_id, pipeline = submit(store, 3), Pipeline(refuse=2)
    r = runner(store, pipeline, concurrency=1)
    task = asyncio.create_task(r.run())
    r.wake()
    done = await until_ended(store, batch_id)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 0)
    assert pipeline.calls["p0"] == 3  # refused twice, then answered


async def test_a_runner_stopped_mid_line_is_resumed_without_repeats(store):
    batch_id, slow = submit(store, 12), Pipeline(delay_s=0.05)
    first = runner(store, slow, concurrency=4)
    task = asyncio.create_task(first.run())
    first.wake()
    async with asyncio.timeout(10):
        while store.get_batch("alice", batch_id).request_counts.completed < 4:
            await asyncio.sleep(0.005)
    task.cancel()  # as a crash: the lines in flight are never committed
    await asyncio.gather(task, return_exceptions=True)
    committed = {json.loads(x)["custom_id"] for x in _done(store, batch_id)}
    fast = Pipeline()
    second = runner(store, fast, concurrency=4)
    task = asyncio.create_task(second.run())
    second.wake()
    done = await until_ended(store, batch_id)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert output_ids(store, done) == Counter(f"c{i}" for i in range(12))
    assert not {f"p{c[1:]}" for c in committed} & set(fast.calls)  # none asked again
    assert done.request_counts.completed == 12


def _done(store: BatchStore, batch_id: str) -> list[str]:
    return [r for (r,) in store.db.query("SELECT result FROM batch_lines WHERE batch_id = ? "
                                         "AND state = 'done'", (batch_id,))]


async def test_stop_lets_lines_in_flight_commit_and_starts_no_more(store):
    batch_id, slow = submit(store, 8), Pipeline(delay_s=0.2)
    r = runner(store, slow, concurrency=2)
    task = asyncio.create_task(r.run())
    r.wake()
    async with asyncio.timeout(5):
        while slow.now < 2:
            await asyncio.sleep(0.005)
    await r.stop(task, grace_s=5)
    assert store.line_states(batch_id) == {"done": 2, "pending": 6}
    assert sum(slow.calls.values()) == 2
