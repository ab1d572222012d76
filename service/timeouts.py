"""Slow and vanishing clients: bounded waits for headers and bodies, disconnects named as such.

- ``HeaderTimeoutProtocol`` (uvicorn's httptools protocol): a connection whose request headers
  are not complete within ``server.header_timeout_s`` of its first byte (or of the connection's
  opening) is closed. uvicorn's keep-alive timeout only covers idle time between requests, so
  a client trickling header bytes (slowloris) or connecting and sending nothing would otherwise
  hold a socket and its memory for as long as it likes.
- ``BodyTimeout`` (ASGI middleware): the whole body must arrive within ``server.body_timeout_s``
  (408 otherwise). A client that leaves while sending its body is ``ClientGone`` (499, one log
  line), not a 500 with a traceback. Once the body is read, ``receive`` is passed through
  untouched: streams wait on it to notice a client leaving.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import APIError


class RequestTimeout(APIError):
    status, type, code = 408, "invalid_request_error", "request_timeout"


class ClientGone(APIError):
    """The client disconnected before its request was complete (nginx's 499)."""

    status, type, code = 499, "invalid_request_error", "client_disconnected"


class BodyTimeout:
    """ASGI middleware bounding the time a request body may take to arrive."""

    def __init__(self, app: ASGIApp, timeout_s: float):
        self.app = app
        self.timeout_s = timeout_s

    @classmethod
    def middleware(cls, timeout_s: float) -> DefineMiddleware:
        return DefineMiddleware(cls, timeout_s=timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        complete = False

        async def timed_receive() -> Message:
            nonlocal deadline, complete
            if complete:
                return await receive()
            if deadline is None:
                deadline = time.monotonic() + self.timeout_s
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(f"The request body did not arrive within "
                                     f"{self.timeout_s:g} s (server.body_timeout_s)") from None
            if message["type"] == "http.disconnect":
                raise ClientGone("The client disconnected while sending its request")
            if not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)


def _loop_time(deadline: float) -> float:
    """A ``time.monotonic`` deadline on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers."""

    header_timeout_s = 10.0  # set per server by ``with_header_timeout``

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # Between requests, uvicorn's keep-alive timeout takes over until the next one begins.
        self._disarm()
        super().on_response_complete()


def with_header_timeout(timeout_s: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for a server whose header deadline is ``timeout_s``."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,),
                {"header_timeout_s": timeout_s})
