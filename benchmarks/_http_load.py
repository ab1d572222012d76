"""A minimal keep-alive HTTP/1.1 client for load tests: raw asyncio streams, no library.

A benchmark's client must cost far less than what it measures; httpx spends ~0.3 ms of CPU a
request, more than the gateway overhead being measured, on a 2-core machine where the client
shares the CPU with the server. This client parses only what the servers here send:
Content-Length bodies and chunked streams.
"""

from __future__ import annotations

import asyncio
import time


def post(path: str, body: bytes, host: str = "127.0.0.1",
         headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"{extra}content-length: {len(body)}\r\n\r\n").encode() + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    async def request(self, raw: bytes) -> tuple[int, bytes, float]:
        """Send one request; (status, body, seconds to the first body byte)."""
        t0 = time.perf_counter()
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = head.lower()
        if b"transfer-encoding: chunked" in headers:
            parts, first = [], None
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                if first is None:
                    first = time.perf_counter() - t0
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    return status, b"".join(parts), first
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
        start = headers.index(b"content-length:") + 15
        length = int(headers[start:headers.index(b"\r\n", start)])
        body = await self.reader.readexactly(length)
        return status, body, time.perf_counter() - t0


async def sequential(port: int, raws: list[bytes]) -> list[tuple[float, float]]:
    """(latency, time to first byte) per request, one connection, one at a time."""
    conn = await Connection.open(port)
    out = []
    try:
        for raw in raws:
            t0 = time.perf_counter()
            status, _, first = await conn.request(raw)
            if status != 200:
                raise RuntimeError(f"HTTP {status} from port {port}")
            out.append((time.perf_counter() - t0, first))
    finally:
        await conn.close()
    return out


async def closed_loop(port: int, raws: list[bytes], connections: int,
                      seconds: float) -> tuple[int, list[float], int]:
    """``connections`` clients each sending back to back for ``seconds``:
    (requests answered 200, their latencies, errors)."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors = 0

    async def client(k: int) -> None:
        nonlocal errors
        conn = await Connection.open(port)
        i = k
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                status, _, _ = await conn.request(raws[i % len(raws)])
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
                i += connections
        finally:
            await conn.close()

    await asyncio.gather(*(client(k) for k in range(connections)))
    return len(latencies), latencies, errors
