"""Fixtures the end-to-end tests share."""

from __future__ import annotations

import pytest

from router.config import load_config
from router.engine import RoutingEngine


@pytest.fixture(scope="module")
def engine() -> RoutingEngine:
    """The shipped config's routing engine, loaded once per test module (the encoder and the
    router take about a second)."""
    return RoutingEngine.from_config(load_config())


@pytest.fixture()
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed key-hashing secret, so keys made in a test verify in the gateway it starts."""
    monkeypatch.setenv("CONTEXTFORGE_KEY_SECRET", "test-secret-0123456789")
