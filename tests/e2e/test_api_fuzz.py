"""The served OpenAPI document describes the real API, and fuzzing it finds no 5xx.

schemathesis generates requests from ``/openapi.json`` (built from the msgspec wire types) for
chat, messages, embeddings, feedback, models and the admin API, a bounded number per
operation, against the gateway over real HTTP on the default config (simulated providers).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from router.config import load_config
from router.engine import RoutingEngine
from tests.e2e.gateway_server import gateway

KEY = "sk-fuzz-master"
EXAMPLES = 12


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    cfg = load_config()
    cfg = msgspec.structs.replace(
        cfg, traffic=msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{tmp / 't.sqlite3'}"),
        admin=msgspec.structs.replace(cfg.admin, state_path=str(tmp / "admin.json")),
        # An empty registry: a fuzzed promotion can never write into the repository's one.
        router=msgspec.structs.replace(cfg.router, registry=str(tmp / "routers")),
        server=msgspec.structs.replace(cfg.server, master_key=KEY))
    with gateway(cfg, RoutingEngine.from_config(cfg)) as url:
        yield url


def test_no_operation_answers_5xx(base_url):
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("api_fuzzer.py")),
                          base_url, KEY, str(EXAMPLES)], capture_output=True, text=True,
                         timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    sent = summary["sent"]
    assert {"POST /v1/chat/completions", "POST /v1/messages", "POST /v1/embeddings",
            "POST /v1/feedback", "PUT /admin/models/{name}"} <= set(sent)
    # The fuzzer really sent requests: at least one to each operation (a GET with nothing to
    # vary is one example), several to each that takes a body.
    assert all(n >= 1 for n in sent.values()), sent
    assert all(sent[op] >= 5 for op in sent if op.startswith(("POST", "PUT"))), sent
    assert summary["failures"] == []
