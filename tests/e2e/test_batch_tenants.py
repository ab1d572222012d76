"""Batches per tenant (an API key's organisation), cancellation, and the admin view."""

from __future__ import annotations

import io
import json
import time

import msgspec
import openai
import pytest
from litestar.testing import TestClient

from router.config import Deployment, GovernanceConfig, load_config
from router.governance.stores import Governance
from router.providers.simulated import SimulatedSettings
from service.app import create_app


@pytest.fixture()
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTEXTFORGE_KEY_SECRET", "test-secret-0123456789")
    cfg = load_config()
    return msgspec.structs.replace(
        cfg, traffic=msgspec.structs.replace(cfg.traffic,
                                             dsn=f"sqlite:///{tmp_path / 't.sqlite3'}"),
        governance=GovernanceConfig(dsn=f"sqlite:///{tmp_path / 'g.sqlite3'}"),
        server=msgspec.structs.replace(cfg.server, master_key="master-key"),
        batch=msgspec.structs.replace(cfg.batch, concurrency=2, poll_s=0.1),
        # Slow answers (0.3 s each), so a batch is still running when it is cancelled.
        default_deployment=Deployment(provider="simulated",
                                      simulated=SimulatedSettings(ttft_ms=300)))


def key(cfg, org: str, role: str = "member") -> str:
    gov = Governance.open(cfg)
    try:
        return gov.keys.create(org, role=role)[1]
    finally:
        gov.close()


def sdk(c: TestClient, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver.local/v1", api_key=api_key,
                         http_client=c, max_retries=0)


def submit(client: openai.OpenAI, n: int):
    text = "".join(json.dumps({"custom_id": f"c{i}", "method": "POST",
                               "url": "/v1/chat/completions",
                               "body": {"model": "gpt-4o-mini", "messages": [
                                   {"role": "user", "content": f"question {i}"}]}}) + "\n"
                   for i in range(n))
    f = client.files.create(file=("in.jsonl", io.BytesIO(text.encode())), purpose="batch")
    return f, client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                    completion_window="24h")


def until(client: openai.OpenAI, batch_id: str, *statuses: str, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while (b := client.batches.retrieve(batch_id)).status not in statuses:
        assert time.monotonic() < deadline, b.status
        time.sleep(0.05)
    return b


def test_a_tenant_sees_only_its_own_files_and_batches(cfg, engine):
    alice, bob = key(cfg, "alice"), key(cfg, "bob")
    alice_admin = key(cfg, "alice", role="admin")
    with TestClient(create_app(cfg, engine=engine)) as c:
        a, b = sdk(c, alice), sdk(c, bob)
        f, batch = submit(a, 2)
        for call in (lambda: b.batches.retrieve(batch.id), lambda: b.files.retrieve(f.id),
                     lambda: b.files.content(f.id), lambda: b.batches.cancel(batch.id),
                     lambda: b.batches.create(input_file_id=f.id, completion_window="24h",
                                              endpoint="/v1/chat/completions")):
            with pytest.raises(openai.NotFoundError):
                call()
        assert b.batches.list().data == [] and b.files.list().data == []
        done = until(a, batch.id, "completed")
        with pytest.raises(openai.NotFoundError):
            b.files.content(done.output_file_id)
        submit(b, 1)
        # The admin view: an organisation's admin sees its own, the platform every one.
        mine = c.get("/admin/batches", headers={"authorization": f"Bearer {alice_admin}"})
        assert mine.status_code == 200
        assert {r["tenant"] for r in mine.json()["data"]} == {"alice"}
        row = mine.json()["data"][0]
        assert row["progress"] == 1.0 and row["lines"] == {"done": 2}
        assert row["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
        every = c.get("/admin/batches", headers={"authorization": "Bearer master-key"}).json()
        assert {r["tenant"] for r in every["data"]} == {"alice", "bob"}
        assert every["runner"]["concurrency"] == 2
        one = c.get(f"/admin/batches/{batch.id}",
                    headers={"authorization": "Bearer master-key"}).json()
        assert one["id"] == batch.id and one["tenant"] == "alice"
        bob_admin = key(cfg, "bob", role="admin")
        assert c.get(f"/admin/batches/{batch.id}",
                     headers={"authorization": f"Bearer {bob_admin}"}).status_code == 403
        assert c.get("/admin/batches?tenant=alice",
                     headers={"authorization": f"Bearer {bob_admin}"}).status_code == 403


def test_cancel_finishes_lines_in_flight_and_runs_no_more(cfg, engine):
    with TestClient(create_app(cfg, engine=engine)) as c:
        client = sdk(c, key(cfg, "alice"))
        _, batch = submit(client, 40)
        until(client, batch.id, "in_progress")
        time.sleep(0.5)
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
        done = until(client, batch.id, "cancelled")
        assert done.cancelled_at and done.request_counts.total == 40
        n = done.request_counts.completed
        assert 0 < n < 40 and done.request_counts.failed == 0
        out = client.files.content(done.output_file_id).text.splitlines()
        assert len(out) == n and done.error_file_id is None  # the rest ran nowhere
        time.sleep(0.5)
        assert client.batches.retrieve(batch.id).request_counts.completed == n
        assert client.batches.cancel(batch.id).status == "cancelled"  # idempotent
        _, other = submit(client, 1)
        until(client, other.id, "completed")
        with pytest.raises(openai.ConflictError):  # a completed batch stays completed
            client.batches.cancel(other.id)


def test_lines_of_a_revoked_key_fail_and_are_reported(cfg, engine):
    gov = Governance.open(cfg)
    try:
        made, presented = gov.keys.create("alice")
    finally:
        gov.close()
    with TestClient(create_app(cfg, engine=engine)) as c:
        client = sdk(c, presented)
        _, batch = submit(client, 30)
        until(client, batch.id, "in_progress")
        time.sleep(0.4)
        assert c.delete(f"/admin/keys/{made.id}",
                        headers={"authorization": "Bearer master-key"}).status_code == 204
        deadline = time.monotonic() + 30
        while True:  # the key no longer reads its batch; the runner reports the rest as failed
            row = c.get(f"/admin/batches/{batch.id}",
                        headers={"authorization": "Bearer master-key"}).json()
            if row["status"] == "completed":
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        counts = row["request_counts"]
        assert counts["completed"] < 30 and counts["failed"] > 0
        assert counts["completed"] + counts["failed"] == 30


def test_a_file_over_max_file_bytes_is_a_413(cfg, engine):
    cfg = msgspec.structs.replace(cfg, batch=msgspec.structs.replace(cfg.batch,
                                                                     max_file_bytes=1024))
    with TestClient(create_app(cfg, engine=engine)) as c:
        client = sdk(c, key(cfg, "alice"))
        with pytest.raises(openai.APIStatusError) as err:
            submit(client, 40)
        assert err.value.status_code == 413 and "batch.max_file_bytes" in err.value.message
        assert submit(client, 2)[1].request_counts.total == 2
