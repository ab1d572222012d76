"""Tracing's pieces: the trace headers an attempt adds to upstream requests, provider names
(the spans themselves: tests/e2e/test_tracing.py)."""

from __future__ import annotations

import asyncio

import pytest

from router.providers import build_http_client, call_headers
from service.trace_attributes import provider_name


def test_call_headers_reach_requests_built_inside_the_block_only():
    async def go():
        http = build_http_client(timeout_s=5, backend="httpx")
        try:
            with call_headers({"traceparent": "00-ab-cd-01"}):
                inside = http.build_request("POST", "http://upstream/x",
                                            headers={"traceparent": "adapter's own"})
            outside = http.build_request("POST", "http://upstream/x")
        finally:
            await http.aclose()
        return inside, outside

    inside, outside = asyncio.run(go())
    assert inside.headers["traceparent"] == "00-ab-cd-01"  # the gateway's wins
    assert "traceparent" not in outside.headers


@pytest.mark.parametrize("adapter,name", [("openai", "openai"), ("azure", "azure.ai.openai"),
                                          ("bedrock", "aws.bedrock"), ("gemini", "gcp.gemini"),
                                          ("vllm", "vllm")])
def test_providers_take_the_conventions_names(adapter, name):
    assert provider_name(adapter) == name
