"""The served OpenAPI document describes the real API, and fuzzing it finds no 5xx.

schemathesis generates requests from ``/openapi.json`` (built from the msgspec wire types) for
chat, messages, embeddings, feedback, models and the admin API, a bounded number per
operation, against the gateway over real HTTP on the default config (simulated providers).
"""

from __future__ import annotations

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

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
        server=msgspec.structs.replace(cfg.server, master_key=KEY))
    with gateway(cfg, RoutingEngine.from_config(cfg)) as url:
        yield url


def test_no_operation_answers_5xx(base_url):
    api = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /v1/chat/completions", "POST /v1/messages", "POST /v1/embeddings",
            "POST /v1/feedback", "PUT /admin/models/{name}"} <= labels
    for op in operations:
        fuzz(op, base_url)


def fuzz(op, base_url: str) -> None:
    """``EXAMPLES`` generated requests to one operation; none may answer 5xx."""

    @given(case=op.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def call(case):
        response = case.call(base_url=base_url, headers={"authorization": f"Bearer {KEY}"},
                             timeout=30)
        assert response.status_code < 500, (op.label, case.body, response.text[:300])

    call()
