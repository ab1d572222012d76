"""Adapter tests run on the HTTP transport the gateway ships (``build_http_client``: aiohttp
under httpx), not only on httpx's default one, so streaming, timeouts, cancellation and error
mapping are checked where they run in production. ``CONTEXTFORGE_TEST_TRANSPORT=httpx`` runs
them on httpx's own transport instead.

The tests build their clients as ``httpx.AsyncClient(...)``; this swaps that name for a
subclass whose default transport is ours. A test that passes its own ``transport`` (a
``MockTransport``) keeps it.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from router.providers.aiohttp_transport import AiohttpTransport

_AsyncClient = httpx.AsyncClient
_LIMITS = httpx.Limits()  # httpx's defaults


class _ShippedTransportClient(_AsyncClient):
    def __init__(self, *args: Any, transport: httpx.AsyncBaseTransport | None = None,
                 limits: httpx.Limits = _LIMITS, **kwargs: Any) -> None:
        super().__init__(*args, transport=transport or AiohttpTransport(limits=limits),
                         limits=limits, **kwargs)


@pytest.fixture(autouse=True)
def shipped_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("CONTEXTFORGE_TEST_TRANSPORT", "aiohttp") == "aiohttp":
        monkeypatch.setattr(httpx, "AsyncClient", _ShippedTransportClient)
