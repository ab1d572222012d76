"""HTTP plumbing every HTTP adapter shares: send JSON, read SSE, map failures to our errors.

Adapters translate bodies; this module owns what an upstream's status code or a broken
connection means for the gateway, so every provider fails the same way:

- 400, 404, 409, 413, 422 -> ``UpstreamRejected`` (400): the request itself is at fault
  (a bad image, too many tokens); another deployment would refuse it too. A 400 refusing it
  on content policy (OpenAI's ``content_policy_violation``, Azure's ``content_filter``,
  Anthropic's "blocked by content filtering policy") is ``UpstreamRefused``.
- 401, 403 -> ``UpstreamError`` (502): *our* credentials are wrong; the client cannot fix it.
- 429 -> ``UpstreamRateLimited`` with the upstream's ``Retry-After`` when it sent one (or,
  from Google APIs, the ``google.rpc.RetryInfo`` ``retryDelay`` in the error body).
- Google answers an invalid API key with 400 ``API_KEY_INVALID``: treated as 401 (our key).
- AWS (Bedrock) names its error in ``x-amzn-ErrorType``: ``ModelNotReadyException`` (a 429)
  -> ``UpstreamUnavailable``, ``ModelTimeoutException`` (a 408) -> ``UpstreamTimeout``.
- 500, 502, 503, 504, 529 (Anthropic's "overloaded") and connection errors ->
  ``UpstreamUnavailable`` (503); read timeouts -> ``UpstreamTimeout`` (504).

The upstream's own error message is kept (clients need it to fix a rejected request) but cut
to a few hundred characters; headers, URLs with keys and request bodies never enter a message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

import httpx
import msgspec
from httpx_sse import EventSource, ServerSentEvent, SSEError

from router.providers._base import (
    ProviderError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRefused,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

_MAX_DETAIL = 300
_REJECTED = frozenset({400, 404, 409, 413, 422})
_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})
_POLICY_PHRASES = ("content filtering policy", "content management policy")


def upstream_message(body: bytes) -> str:
    """The human part of an upstream error body, whatever the provider's error shape."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:_MAX_DETAIL]
    if isinstance(data, list) and data:  # Gemini sometimes wraps the error in a list
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("msg") or err.get("detail")
            if msg:
                return str(msg)[:_MAX_DETAIL]
        elif isinstance(err, str):
            return err[:_MAX_DETAIL]
        for key in ("message", "Message", "detail"):  # Cohere, Bedrock, Replicate
            if data.get(key):
                return str(data[key])[:_MAX_DETAIL]
    return str(data)[:_MAX_DETAIL]


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``, in seconds."""
    if ms := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1e3)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _google_details(body: bytes) -> list[dict[str, Any]]:
    """The ``details`` of a google.rpc error body (Gemini, Vertex AI); [] for other bodies."""
    try:
        data = json.loads(body)
    except ValueError:
        return []
    if isinstance(data, list) and data:
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _google_retry_delay(details: list[dict[str, Any]]) -> float | None:
    """``RetryInfo.retryDelay`` (a protobuf Duration such as ``"37s"``) in seconds."""
    for d in details:
        delay = d.get("retryDelay")
        if str(d.get("@type", "")).endswith("google.rpc.RetryInfo") and isinstance(delay, str):
            try:
                return max(0.0, float(delay.removesuffix("s")))
            except ValueError:
                return None
    return None


def error_for_status(provider: str, status: int, body: bytes,
                     headers: Mapping[str, str]) -> ProviderError:
    """The gateway error for an upstream's non-2xx answer (see the module docstring)."""
    detail = upstream_message(body)
    details = _google_details(body)
    where = f"{provider} upstream answered {status}"
    if status == 400 and any(d.get("reason") == "API_KEY_INVALID" for d in details):
        status = 401  # our key is wrong, not the client's request
    aws_type = headers.get("x-amzn-errortype", "").split(":", 1)[0]  # AWS: "Type:namespace"
    if aws_type:
        detail = f"{aws_type}: {detail}"
    if aws_type == "ModelNotReadyException":  # 429 on the wire, but the model is loading
        return UpstreamUnavailable(f"{where}: {detail}")
    if aws_type == "ModelTimeoutException" or status == 408:  # the upstream gave up waiting
        return UpstreamTimeout(f"{where}: {detail}")
    if status in _REJECTED:
        refused = status == 400 and _content_policy(body, detail)
        return (UpstreamRefused if refused else UpstreamRejected)(f"{where}: {detail}")
    if status in (401, 403):
        return UpstreamError(f"{where}: the deployment's credentials were refused; "
                             "check its API key")
    if status == 429:
        retry_after = retry_after_seconds(headers)
        if retry_after is None:
            retry_after = _google_retry_delay(details)
        return UpstreamRateLimited(f"{where}: rate limited: {detail}", retry_after)
    if status >= 500:  # 529 too: Anthropic's "overloaded"
        return UpstreamUnavailable(f"{where}: {detail}")
    return UpstreamError(f"{where}: {detail}")


def _content_policy(body: bytes, detail: str) -> bool:
    """Whether a 400 refuses the request on the upstream's content policy."""
    try:
        err = json.loads(body).get("error")
    except (ValueError, AttributeError):
        err = None
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, str) and code in _POLICY_CODES:
        return True
    return any(phrase in detail.lower() for phrase in _POLICY_PHRASES)


def error_for_exception(provider: str, exc: httpx.HTTPError) -> ProviderError:
    """The gateway error for a transport failure (no usable HTTP answer)."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return UpstreamTimeout(f"{provider} upstream did not answer in time")
    if isinstance(exc, httpx.TransportError):
        return UpstreamUnavailable(f"{provider} upstream unreachable: {type(exc).__name__}")
    return UpstreamError(f"{provider} upstream call failed: {type(exc).__name__}")


@lru_cache(maxsize=1024)
def _parsed(url: str) -> httpx.URL:
    # httpx parses a URL string on every call (~45 µs); adapters send to a handful of fixed
    # URLs, so each is parsed once. (An ``httpx.URL`` is immutable.)
    return httpx.URL(url)


def _json_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """``headers`` with ``content-type: application/json`` unless they name a type."""
    if headers is None:
        return {"content-type": "application/json"}
    if any(k.lower() == "content-type" for k in headers):
        return dict(headers)
    return {"content-type": "application/json", **headers}


def _encode(body: Any) -> bytes:
    # msgspec encodes ~3x faster than httpx's ``json=`` (stdlib json), to the same bytes
    # (compact, UTF-8, not ASCII-escaped); a type msgspec does not know (a numpy scalar) goes
    # the stdlib way, as before.
    try:
        return msgspec.json.encode(body)
    except TypeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode()


def _decode(response: httpx.Response) -> Any:
    # msgspec decodes UTF-8 JSON ~4x faster than ``response.json()``; anything else (another
    # charset, a body that is not JSON) goes the standard way, which raises ValueError.
    try:
        return msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return response.json()


async def send_json(client: httpx.AsyncClient, provider: str, url: str, *,
                    body: Any = None, headers: Mapping[str, str] | None = None,
                    method: str = "POST", timeout: float | None = None,
                    params: Mapping[str, str] | None = None,
                    content: bytes | None = None) -> Any:
    """One JSON call; the decoded JSON answer, or the mapped ``ProviderError``.
    ``content`` sends pre-encoded bytes instead of ``body`` (a signed body must go as is)."""
    if content is None and body is not None:
        content, headers = _encode(body), _json_headers(headers)
    try:
        response = await client.request(
            method, _parsed(url), content=content, headers=headers, params=params,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
    except httpx.HTTPError as exc:
        raise error_for_exception(provider, exc) from None
    if response.status_code >= 400:
        raise error_for_status(provider, response.status_code, response.content,
                               response.headers)
    try:
        return _decode(response)
    except ValueError:
        raise UpstreamError(f"{provider} upstream answered {response.status_code} with a "
                            "body that is not JSON") from None


@asynccontextmanager
async def open_stream(client: httpx.AsyncClient, provider: str, url: str, *,
                      body: Any = None, headers: Mapping[str, str] | None = None,
                      timeout: float | None = None,
                      params: Mapping[str, str] | None = None,
                      method: str = "POST",
                      content: bytes | None = None,
                      ) -> AsyncIterator[httpx.Response]:
    """A streaming call whose status has been checked: error statuses raise the mapped
    ``ProviderError`` (after reading the small error body) before the caller reads events.
    ``method`` is GET for upstreams that stream from a URL of their own (Replicate)."""
    if content is None and body is not None:
        content, headers = _encode(body), _json_headers(headers)
    request = client.build_request(
        method, _parsed(url), content=content, headers=headers, params=params,
        timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise error_for_exception(provider, exc) from None
    try:
        if response.status_code >= 400:
            try:
                content = await response.aread()
            except httpx.HTTPError:
                content = b""
            raise error_for_status(provider, response.status_code, content, response.headers)
        yield response
    finally:
        await response.aclose()


async def sse_events(provider: str, response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    """The response's server-sent events; transport failures mid-stream become our errors."""
    try:
        async for event in EventSource(response).aiter_sse():
            yield event
    except SSEError:  # a 200 that is not an event stream: the upstream ignored ``stream``
        raise UpstreamError(f"{provider} upstream answered without an event stream") from None
    except httpx.HTTPError as exc:
        raise error_for_exception(provider, exc) from None
