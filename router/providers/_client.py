"""The one HTTP client every adapter shares: httpx's API on aiohttp's connection pool and parser.

``build_http_client`` is the only place the gateway's upstream client is made; the service
calls it once in its lifespan and lends the client to every adapter (``ProviderContext.http``).

Why aiohttp under httpx: with httpx's default transport (httpcore + h11, pure Python) the
gateway lost throughput as connections grew. Under 32 concurrent clients against an immediate
upstream, httpx/httpcore took ~70% of the event loop's CPU, most of it in the pool scanning
every connection on every request (``_assign_requests_to_connections`` -> ``has_expired`` ->
``is_socket_readable``) and h11's parsing. ``AiohttpTransport`` (``aiohttp_transport.py``) keeps the
httpx API that the adapters and their tests use (requests, responses, streaming, exceptions)
while aiohttp's connector pools connections in O(1) and parses with its C parser (figures in
benchmarks/README.md, "Gateway overhead").

Error answers pass through ``router.secrets.ScrubbingTransport``: an upstream that echoes the
request cannot hand a client the deployment's credentials.

Headers a caller of dispatch wants on every upstream request of one attempt (the trace
context of the attempt's span, ``service.tracing``) are added by ``call_headers``: adapters
build their own headers and need not know about them, and ``router`` imports no tracing library.

The client keeps no cookies (``_NoCookies``): one client serves every tenant and deployment,
so a cookie one upstream sets must not go out with anyone else's request, and httpx's jar
costs ~40 µs a response even when there is no cookie (it builds urllib request and response
stand-ins to look for one). The transport drops ``Set-Cookie`` too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

import httpx

from router.secrets import ScrubbingTransport

Backend = Literal["aiohttp", "httpx"]


class _NoCookies(httpx.Cookies):
    """A jar that stays empty: nothing is extracted from responses, so nothing is sent."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        raise TypeError("the gateway's upstream client keeps no cookies")


# The timeouts of the deployment being called, for the calls made inside ``call_timeouts``:
# adapters share one client and pass no timeouts, so dispatch sets them around each attempt.
_TIMEOUTS: ContextVar[dict[str, float] | None] = ContextVar("contextforge_timeouts",
                                                            default=None)


@contextmanager
def call_timeouts(connect: float | None = None, read: float | None = None) -> Iterator[None]:
    """Calls made on the shared client inside this block open connections within
    ``connect`` seconds and wait at most ``read`` seconds for bytes (``None``: the client's
    default). Dispatch wraps each attempt in it with the deployment's own timeouts."""
    given = {k: v for k, v in (("connect", connect), ("read", read)) if v is not None}
    token = _TIMEOUTS.set(given or None)
    try:
        yield
    finally:
        _TIMEOUTS.reset(token)


# Headers for the calls made inside ``call_headers`` (None: none, the usual case).
_HEADERS: ContextVar[Mapping[str, str] | None] = ContextVar("contextforge_call_headers",
                                                            default=None)


@contextmanager
def call_headers(headers: Mapping[str, str]) -> Iterator[None]:
    """Calls made on the shared client inside this block carry ``headers`` too (over an
    adapter's own of the same name: a W3C ``traceparent`` is the gateway's to set)."""
    token = _HEADERS.set(headers)
    try:
        yield
    finally:
        _HEADERS.reset(token)


class _GatewayClient(httpx.AsyncClient):
    """httpx's client with no cookie jar (see the module docstring), the timeouts of the
    deployment being called (``call_timeouts``) and the headers of ``call_headers``."""

    _no_cookies = _NoCookies()

    def build_request(self, *args: Any, **kwargs: Any) -> httpx.Request:
        request = super().build_request(*args, **kwargs)
        given = _TIMEOUTS.get()
        if given is not None:
            request.extensions["timeout"] = {**request.extensions["timeout"], **given}
        extra = _HEADERS.get()
        if extra is not None:
            request.headers.update(extra)
        return request

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, value: object) -> None:
        raise TypeError("the gateway's upstream client keeps no cookies")


def build_http_client(*, timeout_s: float, connect_timeout_s: float = 10.0,
                      max_connections: int = 1000, keepalive_s: float = 5.0,
                      backend: Backend = "aiohttp") -> httpx.AsyncClient:
    """The gateway's shared upstream client.

    ``timeout_s`` bounds each wait for upstream bytes (a deployment may pass its own per
    call); ``max_connections`` caps open upstream connections across all deployments;
    ``keepalive_s`` is how long an idle connection is kept for reuse. ``backend="httpx"``
    gives httpx's own transport (for comparisons; the gateway uses the default).
    """
    timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
    limits = httpx.Limits(max_connections=max_connections,
                          max_keepalive_connections=min(100, max_connections),
                          keepalive_expiry=keepalive_s)
    if backend == "httpx":
        inner: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport(limits=limits)
    else:
        # Imported here, not at module level: aiohttp costs ~0.2 s to import, which only a
        # process that serves should pay (the CLI's other verbs import router.providers too).
        from router.providers.aiohttp_transport import AiohttpTransport

        inner = AiohttpTransport(limits=limits)
    # Error answers lose every credential their request carried before an adapter reads them.
    return _GatewayClient(timeout=timeout, limits=limits, transport=ScrubbingTransport(inner))
