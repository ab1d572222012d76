"""A batch survives its server being killed (SIGKILL, mid-batch): restarted on the same
database, the job completes with every ``custom_id`` answered exactly once, and no line
whose answer was committed before the kill is sent upstream again — on SQLite and on
PostgreSQL (there after the dead server's leases end)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest
from litestar import Litestar, Request, post

from router.governance.db import Database
from tests.upstreams import serve

ROOT = Path(__file__).resolve().parents[2]
LATENCY_S = 0.25
CONCURRENCY = 4
N = 60
LEASE_S = 10  # PostgreSQL: how long the dead server's lines stay its own


def counting_upstream(calls: Counter) -> Litestar:
    """An OpenAI-compatible upstream that answers after ``LATENCY_S`` and counts the calls
    of each prompt."""

    @post("/v1/chat/completions", status_code=200)
    async def chat(request: Request) -> dict:
        body = await request.json()
        text = body["messages"][-1]["content"]
        calls[text] += 1
        await asyncio.sleep(LATENCY_S)
        return {"id": "chatcmpl-x", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"echo: {text}"}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}

    return Litestar([chat])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path, upstream: str, dsn: str = "", *, native: str = ""
          ) -> tuple[subprocess.Popen, str]:
    """``tests.e2e.batch_server`` on a free port (``native``: the upstream's key, to send
    lines through its Batch API)."""
    port = free_port()
    store = ["--dsn", dsn, "--lease-s", str(LEASE_S)] if dsn else []
    store += ["--native", native] if native else []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(folder / "err.log", "ab") as err:  # the child keeps its own copy
        proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.batch_server", "--port",
                                 str(port), "--dir", str(folder), "--upstream", upstream,
                                 "--concurrency", str(CONCURRENCY), *store], cwd=ROOT,
                                env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (folder / "err.log").read_text()
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.1)


def lines_in(folder: Path, state: str, dsn: str = "") -> set[str]:
    db = Database(dsn or f"sqlite:///{folder / 'gov.sqlite3'}")
    try:
        return {c for (c,) in db.query("SELECT custom_id FROM batch_lines WHERE state = ?",
                                       (state,))}
    finally:
        db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request) -> str:
    """Where the batch store lives: the governance SQLite file, or PostgreSQL (where the
    restarted server takes the dead one's lines over when their lease ends)."""
    return "" if request.param == "sqlite" else request.getfixturevalue("pg_dsn")


def test_a_killed_server_resumes_the_batch_without_losing_or_repeating_a_line(tmp_path, dsn):
    calls: Counter[str] = Counter()
    with serve(counting_upstream(calls)) as upstream:
        proc, url = start(tmp_path, upstream, dsn)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        try:
            lines = [{"custom_id": f"id-{i}", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "gpt-4o-mini",
                               "messages": [{"role": "user", "content": f"nonce-{i}"}]}}
                     for i in range(N)]
            f = client.files.create(file=("in.jsonl", io.BytesIO(
                "".join(json.dumps(x) + "\n" for x in lines).encode())), purpose="batch")
            batch = client.batches.create(input_file_id=f.id, completion_window="24h",
                                          endpoint="/v1/chat/completions")
            while len(lines_in(tmp_path, "done", dsn)) < N // 3:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            client.close()
            if proc.poll() is None:
                proc.kill()
        committed = lines_in(tmp_path, "done", dsn)
        in_flight = lines_in(tmp_path, "running", dsn)
        assert N // 3 <= len(committed) < N and len(in_flight) <= CONCURRENCY
        before = Counter(calls)

        proc, url = start(tmp_path, upstream, dsn)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        try:
            deadline = time.monotonic() + 60 + LEASE_S
            while (done := client.batches.retrieve(batch.id)).status != "completed":
                assert time.monotonic() < deadline, done.status
                time.sleep(0.1)
            out = [json.loads(x) for x in
                   client.files.content(done.output_file_id).text.splitlines()]
        finally:
            client.close()
            proc.terminate()
            proc.wait(30)

    assert done.request_counts.completed == done.request_counts.total == N
    assert done.error_file_id is None
    ids = Counter(o["custom_id"] for o in out)
    assert ids == Counter(f"id-{i}" for i in range(N))  # every line, each once
    for o in out:
        n = o["custom_id"].removeprefix("id-")
        assert o["response"]["body"]["choices"][0]["message"]["content"] == f"echo: nonce-{n}"
    # Upstream: every prompt answered; none whose answer was committed asked again; only
    # the lines in flight at the kill (never committed) were sent a second time.
    assert set(calls) == {f"nonce-{i}" for i in range(N)}
    again = {p for p, c in calls.items() if c > 1}
    assert all(calls[f"nonce-{c.removeprefix('id-')}"] == before[f"nonce-{c.removeprefix('id-')}"]
               for c in committed)
    assert again <= {f"nonce-{c.removeprefix('id-')}" for c in in_flight}
    assert max(calls.values()) <= 2
    print(f"\ncommitted before the kill: {len(committed)}, in flight: {len(in_flight)}, "
          f"sent upstream twice: {len(again)}")
