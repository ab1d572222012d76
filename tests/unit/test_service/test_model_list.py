"""``GET /v1/models``: catalog models carry their prices, so clients can budget before calling."""

from __future__ import annotations

import msgspec
import pytest
from litestar.testing import TestClient

from router.config import load_config
from router.engine import RoutingEngine
from service.app import create_app


@pytest.fixture(scope="module")
def client():
    cfg = load_config()
    cfg = msgspec.structs.replace(cfg, traffic=msgspec.structs.replace(cfg.traffic,
                                                                       enabled=False))
    with TestClient(create_app(cfg, engine=RoutingEngine.from_config(cfg))) as c:
        yield c, cfg


def test_models_carry_their_prices_and_routes_none(client):
    c, cfg = client
    cards = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
    for entry in cfg.models:
        assert cards[entry.name]["pricing"] == {
            "input_per_million": entry.input_price, "output_per_million": entry.output_price,
            "expected_output_tokens": entry.expected_output_tokens}
    assert cards["gpt-5"]["pricing"]["expected_output_tokens"] == 600
    assert cards["auto"]["kind"] == "route" and cards["auto"]["pricing"] is None
    one = c.get("/v1/models/gpt-4o-2024-08-06").json()  # an alias answers with its model
    assert one["pricing"]["input_per_million"] == 2.5
