"""Keeping a deployment's credentials out of everything the gateway relays or logs.

Upstreams' error text goes to clients and into the traffic log (clients need it to fix a
rejected request). An upstream, or a proxy in front of it, that echoes the request back would
hand the caller the deployment's own key. Two layers stop that:

- ``ScrubbingTransport`` wraps the shared HTTP client's transport: an error answer's body has
  every credential the request carried (header values other than plain protocol headers, the
  URL's user-info and key-like query values) replaced by ``***`` before any adapter reads it,
  whatever the adapter or its auth scheme.
- ``Scrubber`` holds what a deployment's config says is secret (literal key, the key
  variable's value, header values, the endpoint's user-info); the dispatcher runs every
  provider error's message through it, which also covers in-process adapters.

``mask_url`` is how endpoints are shown in admin answers, deployment labels and logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

MASK = "***"
MIN_SECRET = 6  # shorter values ("1", "true") would mask ordinary words
# Headers that carry protocol, not credentials: their values stay readable.
_PLAIN_HEADERS = frozenset({
    "accept", "accept-encoding", "connection", "content-length", "content-type", "host",
    "user-agent", "anthropic-version", "anthropic-beta", "x-amz-date",
    "x-amz-content-sha256", "x-stainless-lang", "transfer-encoding", "prefer",
})
_KEYLIKE_PARAM = re.compile(r"key|token|secret|sig|password|auth", re.I)
_SPLIT = re.compile(r"[\s,=/]+")


class Scrubber:
    """Replaces known secret strings (longest first) in text."""

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str]):
        found = {s for s in secrets if s and len(s) >= MIN_SECRET}
        # A header like "Bearer sk-..." or a SigV4 "Credential=AKID/..., Signature=..." is
        # masked whole and piece by piece, so a partial echo is caught too.
        found |= {p for s in list(found) for p in _SPLIT.split(s) if len(p) >= MIN_SECRET
                  and p.lower() not in ("bearer", "aws4-hmac-sha256", "credential",
                                        "signedheaders", "signature")}
        ordered = sorted(found, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None else text


def url_secrets(url: str) -> list[str]:
    """The user-info and key-like query values of a URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    out = [v for v in (parts.username, parts.password) if v]
    out += [v for k, v in parse_qsl(parts.query) if _KEYLIKE_PARAM.search(k)]
    return out


def mask_url(url: str) -> str:
    """``url`` with its user-info and key-like query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(f"{k}={MASK if _KEYLIKE_PARAM.search(k) else v}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def deployment_secrets(api_key: str, api_key_env: str, headers: dict[str, str],
                       endpoint: str) -> list[str]:
    """What a deployment's settings hold that must never be shown."""
    out = [api_key, *headers.values(), *url_secrets(endpoint)]
    if api_key_env:
        out.append(os.environ.get(api_key_env, ""))
    return [s for s in out if s]


def request_secrets(request: httpx.Request) -> list[str]:
    """Every credential a request carries: non-protocol header values, user-info, key-like
    query values."""
    out = [v for k, v in request.headers.items() if k.lower() not in _PLAIN_HEADERS]
    return out + url_secrets(str(request.url))


class ScrubbingTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose error answers (status >= 400) never contain the request's
    credentials (see the module docstring). Success bodies pass through untouched and
    unbuffered."""

    def __init__(self, inner: httpx.AsyncBaseTransport):
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if response.status_code < 400:
            return response
        scrub = Scrubber(request_secrets(request))
        try:
            body = await response.aread()  # decoded: the new answer carries no encoding
        finally:
            await response.aclose()
        if scrub:
            text = body.decode("utf-8", "replace")
            cleaned = scrub(text)
            body = cleaned.encode() if cleaned != text else body
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in ("content-length", "content-encoding",
                                        "transfer-encoding")]
        return httpx.Response(response.status_code, headers=headers, content=body,
                              request=request, extensions=response.extensions)

    async def aclose(self) -> None:
        await self.inner.aclose()
