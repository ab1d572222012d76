"""The aiohttp-backed httpx transport the gateway's upstream client uses (``build_http_client``):
the wire it writes, how failures map to our errors, streaming, early close and cancellation.

A raw asyncio server plays the upstream, so each test controls exactly what goes on the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from router.providers import (
    UpstreamTimeout,
    UpstreamUnavailable,
    build_http_client,
)
from router.providers.aiohttp_transport import proxy_for
from router.providers.http_io import open_stream, send_json, sse_events

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request with a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def run(handler: Handler, test: Callable[[httpx.AsyncClient, str], Awaitable[object]],
        **client_kw: Any) -> object:
    async def main() -> object:
        handlers: set[asyncio.Task[None]] = set()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handlers.add(asyncio.current_task())  # type: ignore[arg-type]
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        http = build_http_client(**{"timeout_s": 5.0, **client_kw})
        try:
            return await test(http, f"http://127.0.0.1:{port}")
        finally:
            await http.aclose()
            server.close()
            for task in handlers:  # connections still held open by a handler
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await server.wait_closed()

    return asyncio.run(main())


def test_the_wire_carries_httpx_headers_and_the_encoded_path_as_is() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        seen.append(head + body)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    async def test(http: httpx.AsyncClient, url: str) -> object:
        # A Bedrock model ARN is one path segment: its %3A and %2F must stay encoded, or
        # the path no longer matches what SigV4 signed.
        return await send_json(http, "p", f"{url}/model/arn%3Aaws%2Fm/converse",
                               body={"a": "é"}, headers={"x-key": "k"})

    assert run(handler, test) == {}
    wire = seen[0]
    assert wire.startswith(b"POST /model/arn%3Aaws%2Fm/converse HTTP/1.1\r\n")
    lower = wire.lower()
    assert b"x-key: k\r\n" in lower
    assert b"user-agent: python-httpx/" in lower  # httpx's headers, not aiohttp's defaults
    assert lower.count(b"user-agent:") == 1 and lower.count(b"content-type:") == 1
    assert wire.endswith('{"a":"é"}'.encode())


def test_a_silent_upstream_is_a_timeout_and_a_refused_one_unavailable() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def call(http: httpx.AsyncClient, url: str) -> object:
        return await send_json(http, "p", f"{url}/x", body={})

    with pytest.raises(UpstreamTimeout):
        run(silent, call, timeout_s=0.2)

    async def refused(http: httpx.AsyncClient, url: str) -> object:
        return await send_json(http, "p", "http://127.0.0.1:9/x", body={})

    with pytest.raises(UpstreamUnavailable):
        run(silent, refused)


def test_a_connection_cut_mid_answer_is_unavailable() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial")
        await writer.drain()
        writer.close()

    async def call(http: httpx.AsyncClient, url: str) -> object:
        return await send_json(http, "p", f"{url}/x", body={})

    with pytest.raises(UpstreamUnavailable):
        run(cut, call)


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
def test_cookies_are_neither_kept_nor_sent(backend: str) -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            try:
                head, _ = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            heads.append(head.lower())
            writer.write(b"HTTP/1.1 200 OK\r\nset-cookie: session=tenant-a\r\n"
                         b"content-length: 2\r\n\r\n{}")
            await writer.drain()

    async def test(http: httpx.AsyncClient, url: str) -> object:
        await http.post(f"{url}/x", json={})
        await http.post(f"{url}/x", json={})
        with pytest.raises(TypeError):
            http.cookies.set("session", "x")
        return len(http.cookies)

    assert run(handler, test, backend=backend) == 0
    assert len(heads) == 2 and not any(b"cookie:" in h for h in heads)


def sse_handler(hold: asyncio.Event | None = None) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            event = b"data: one\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            if hold is not None:
                await hold.wait()
            event = b"data: two\n\n"
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))
            await writer.drain()
    return handler


def test_events_arrive_as_sent_not_when_the_stream_ends() -> None:
    hold = asyncio.Event()

    async def test(http: httpx.AsyncClient, url: str) -> object:
        got = []
        async with open_stream(http, "p", f"{url}/s", body={}) as response:
            async for event in sse_events("p", response):
                got.append(event.data)
                hold.set()  # the server sends the second event only after we saw the first
        return got

    assert run(sse_handler(hold), test) == ["one", "two"]


def test_streams_closed_early_or_cancelled_give_their_connection_back() -> None:
    """With one connection allowed, every call below would wait forever (then time out) if
    an abandoned stream kept its connection."""
    never = asyncio.Event()

    async def test(http: httpx.AsyncClient, url: str) -> object:
        for _ in range(3):  # closed after the first event
            async with open_stream(http, "p", f"{url}/s", body={}) as response:
                async for _event in sse_events("p", response):
                    break

        async def read_all() -> None:
            async with open_stream(http, "p", f"{url}/s", body={}) as response:
                async for _event in sse_events("p", response):
                    pass

        for _ in range(2):  # cancelled while waiting for the second event
            task = asyncio.ensure_future(read_all())
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        async with open_stream(http, "p", f"{url}/s", body={}) as response:
            return response.status_code

    with_one_connection = {"max_connections": 1, "timeout_s": 2.0}
    assert run(sse_handler(never), test, **with_one_connection) == 200


@pytest.mark.parametrize(("host", "expected"), [
    ("api.openai.com", "http://proxy:3128"),
    ("internal.example", None),
    ("x.internal.example", None),
])
def test_environment_proxies_honour_no_proxy(host: str, expected: str | None) -> None:
    proxies = (("https", "http://proxy:3128"), ("no", "internal.example"))
    assert proxy_for(proxies, "https", host) == expected
