"""An httpx transport on aiohttp: httpx's API for the adapters, aiohttp's pool and C parser below.

Modelled on the ``httpx-aiohttp`` package's transport, which we measured first (as fast as
this one) and could not use as it is (httpx-aiohttp 0.2.0): it hands aiohttp the URL as a
string, which yarl re-quotes (``%3A`` in a path becomes ``:``), so a Bedrock model ARN no
longer matches the path the SigV4 signature covers and Bedrock answers 403. Here the URL goes
as httpx encoded it, upstream cookies are dropped (the gateway's client with httpx's own
transport kept them in its jar and sent them on every later request, whoever's it was), and
aiohttp's errors map at this one boundary to httpx's, most specific first, chained with
``raise ... from``::

    aiohttp.ConnectionTimeoutError ........... httpx.ConnectTimeout   (connect / pool wait)
    aiohttp.ServerTimeoutError (socket read) . httpx.ReadTimeout
    aiohttp.ClientConnectorError ............. httpx.ConnectError     (refused, DNS, TLS)
    aiohttp.ServerDisconnectedError,
    ClientPayloadError, ClientResponseError .. httpx.RemoteProtocolError (cut or bad answer)
    aiohttp.InvalidURL, NonHttpUrlClientError  httpx.UnsupportedProtocol
    other aiohttp.ClientConnectionError ...... httpx.ReadError
    other aiohttp.ClientError ................ httpx.TransportError

What else differs from aiohttp's defaults, and why:
- no cookies in either direction: one client serves every tenant, so an upstream's
  ``Set-Cookie`` must never ride along on another tenant's request (dropped from responses);
- no auto headers: the wire carries exactly httpx's headers (signed requests stay valid);
- no decompression (httpx decodes), no redirects, no total timeout (long streams are bounded
  per read by ``sock_read``), proxies from the environment as httpx reads them, never
  ``.netrc`` (aiohttp's ``trust_env`` would read it).
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from functools import lru_cache

import aiohttp
import httpx
import yarl

_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (aiohttp.ClientError, httpx.TransportError),
)
_SKIP_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})


@contextmanager
def _mapped(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(str(exc) or type(exc).__name__, request=request) from exc
        raise  # unreachable: ClientError is the last row


@lru_cache(maxsize=64)
def _timeout(pool: float | None, connect: float | None, read: float | None,
             ) -> aiohttp.ClientTimeout:
    # httpx's ``pool`` (waiting for a free connection) is closest to aiohttp's ``connect``
    # (pool wait + connecting); httpx's ``write`` has no aiohttp counterpart.
    return aiohttp.ClientTimeout(total=None, connect=pool, sock_connect=connect, sock_read=read)


class _ResponseStream(httpx.AsyncByteStream):
    """The body as aiohttp receives it; closing returns the connection to the pool (or closes
    it when the body was not read to the end)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request):
        self._response, self._request = response, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests over one ``aiohttp.ClientSession`` (made on first use, in the running
    event loop). ``limits.max_connections`` caps open connections; ``keepalive_expiry`` is
    how long an idle one is kept."""

    def __init__(self, *, limits: httpx.Limits, verify: ssl.SSLContext | bool = True,
                 trust_env: bool = True):
        self._limits = limits
        self._ssl = httpx.create_ssl_context(verify=verify, trust_env=trust_env)
        self._proxies = urllib.request.getproxies_environment() if trust_env else {}
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        keepalive = self._limits.keepalive_expiry
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0, ssl=self._ssl,
            keepalive_timeout=15.0 if keepalive is None else keepalive)
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS, timeout=_timeout(None, None, None),
            trust_env=False)

    def _proxy(self, url: httpx.URL) -> str | None:
        if not self._proxies:
            return None
        return proxy_for(tuple(sorted(self._proxies.items())), url.scheme, url.host)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._open()
        t = request.extensions.get("timeout", {})
        try:
            data: bytes | AsyncIterator[bytes] | None = request.content or None
        except httpx.RequestNotRead:  # a streamed upload: aiohttp sends it chunked
            data = _chunks(request.stream)  # type: ignore[arg-type]
            request.headers.pop("transfer-encoding", None)
        with _mapped(request):
            response = await self._session.request(
                request.method, yarl.URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(), data=data, allow_redirects=False,
                timeout=_timeout(t.get("pool"), t.get("connect"), t.get("read")),
                proxy=self._proxy(request.url), server_hostname=request.extensions.get(
                    "sni_hostname"))
        headers = [(k, v) for k, v in response.raw_headers if k.lower() != b"set-cookie"]
        stream: httpx.AsyncByteStream
        if response.content.is_eof() and response.content.exception() is None:
            # The whole body came with the headers (small JSON answers usually do): hand it
            # over as bytes and free the connection now, sparing httpx's async read loop.
            stream = httpx.ByteStream(response.content.read_nowait())
            response.release()
        else:
            stream = _ResponseStream(response, request)
        return httpx.Response(
            response.status, headers=headers, stream=stream, request=request,
            extensions={"http_version": b"HTTP/1.1",
                        "reason_phrase": (response.reason or "").encode()})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _chunks(stream: httpx.AsyncByteStream) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk


@lru_cache(maxsize=256)
def proxy_for(proxies: tuple[tuple[str, str], ...], scheme: str, host: str) -> str | None:
    """The environment's proxy for this scheme and host (``NO_PROXY`` honoured), or None."""
    table = dict(proxies)
    if urllib.request.proxy_bypass_environment(host, table):
        return None
    return table.get(scheme) or table.get("all")
