"""The one map from upstream answers to gateway errors (router/providers/_http.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from router.providers import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from router.providers.http_io import error_for_status, open_stream, send_json, sse_events


@pytest.mark.parametrize("status, kind", [
    (400, UpstreamRejected), (404, UpstreamRejected), (422, UpstreamRejected),
    (401, UpstreamError), (403, UpstreamError), (408, UpstreamTimeout),
    (429, UpstreamRateLimited), (500, UpstreamUnavailable), (503, UpstreamUnavailable),
    (529, UpstreamUnavailable), (418, UpstreamError),
])
def test_status_map(status, kind):
    err = error_for_status("p", status, b'{"error": {"message": "nope"}}', {})
    assert type(err) is kind and err.status == kind.status


def test_messages_keep_the_upstream_reason_but_not_credentials():
    err = error_for_status("openai", 401, b'{"error": {"message": "Incorrect key sk-abc"}}', {})
    assert "sk-abc" not in str(err) and "credentials" in str(err)
    err = error_for_status("openai", 400, b'{"error": {"message": "image too large"}}', {})
    assert "image too large" in str(err)


def test_retry_after_seconds_and_milliseconds():
    assert error_for_status("p", 429, b"{}", {"retry-after": "12"}).retry_after == 12
    assert error_for_status("p", 429, b"{}", {"retry-after-ms": "1500"}).retry_after == 1.5
    assert error_for_status("p", 429, b"{}", {}).retry_after is None


def client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def test_transport_failures_and_non_json_bodies():
    def refused(request):
        raise httpx.ConnectError("refused")

    def html(request):
        return httpx.Response(200, text="<html>proxy login</html>")

    async def run():
        async with client(refused) as c:
            with pytest.raises(UpstreamUnavailable, match="unreachable"):
                await send_json(c, "p", "http://x/v1", body={})
        async with client(html) as c:
            with pytest.raises(UpstreamError, match="not JSON"):
                await send_json(c, "p", "http://x/v1", body={})

    asyncio.run(run())


def test_a_200_that_is_not_an_event_stream_is_an_upstream_error():
    def plain(request):
        return httpx.Response(200, json={"choices": []})

    async def run():
        async with client(plain) as c, open_stream(c, "p", "http://x/v1", body={}) as r:
            with pytest.raises(UpstreamError, match="without an event stream"):
                async for _ in sse_events("p", r):
                    pass

    asyncio.run(run())


def test_json_bodies_go_compact_utf8_with_their_content_type():
    seen: list[httpx.Request] = []

    def echo(request):
        seen.append(request)
        # An upstream that answers in another charset still decodes.
        return httpx.Response(200, content='{"t": "é"}'.encode("utf-16"),
                              headers={"content-type": "application/json; charset=utf-16"})

    async def run():
        import numpy as np

        async with client(echo) as c:
            await send_json(c, "p", "http://x/v1", body={"t": "é", "n": [1, 2.5, None]},
                            headers={"x-key": "k"})
            await send_json(c, "p", "http://x/v1", body={"f": np.float64(0.5)},
                            headers={"Content-Type": "application/json; charset=utf-8"})
            return await send_json(c, "p", "http://x/v1", body={})

    assert asyncio.run(run()) == {"t": "é"}
    assert seen[0].content == '{"t":"é","n":[1,2.5,null]}'.encode()
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].headers["x-key"] == "k"
    assert seen[1].content == b'{"f":0.5}'  # numpy scalars go the stdlib way
    assert seen[1].headers.get_list("content-type") == ["application/json; charset=utf-8"]
