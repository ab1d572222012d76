"""Every failure leaves the gateway in OpenAI's error shape, mapped here at one boundary.

``{"error": {"message", "type", "param", "code"}}`` with the status below; SDKs raise their
specific exception from the status (``openai.NotFoundError`` for 404, ...)::

    APIError
    ├── BadRequest            400  malformed JSON, wrong type or value (``param`` names the field)
    ├── AuthenticationFailed  401  missing or wrong master key
    ├── ModelNotFound         404  not a catalog model, alias, route or ``auto`` (or an
    │                              unknown request id for feedback)
    ├── Conflict              409  the server's set-up refuses it (feedback with no log)
    ├── Unsatisfiable         422  no candidate has the capabilities / context the request needs
    ├── NotReady              503  the routing engine is not loaded (start-up, shutdown)
    └── UpstreamFailed        400 / 429 / 502 / 503 / 504, from a ``router.providers.ProviderError``
                              (400: the upstream refused the request itself; 429 and 503 carry
                              ``Retry-After`` when the upstream or the circuit breaker knows)

Litestar's own HTTP exceptions (413 body too large, 404 unknown path, 405) keep their status;
anything else is a 500 whose details go to the log, never to the client.
"""

from __future__ import annotations

import logging
import math
import re
from typing import ClassVar, TypeVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from router.engine import UnknownTarget
from router.errors import CacheUnavailable
from router.policy import NoEligibleModel
from router.providers import ProviderError, UpstreamRefused
from router.requirements import InvalidRequest, PromptTooLong

log = logging.getLogger("contextforge.service")
T = TypeVar("T")


class ErrorDetail(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


_encoder = msgspec.json.Encoder()


class APIError(Exception):
    """An error the client should see, with its HTTP status and OpenAI error fields."""

    status = 500
    type = "server_error"
    code: str | None = None
    retry_after: float | None = None  # seconds; sent as a Retry-After header

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def detail(self) -> ErrorDetail:
        return ErrorDetail(self.message, self.type, self.param, self.code)


class BadRequest(APIError):
    status, type = 400, "invalid_request_error"


class AuthenticationFailed(APIError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class ModelNotFound(APIError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


class Conflict(APIError):
    status, type, code = 409, "invalid_request_error", "conflict"


class Unsatisfiable(APIError):
    status, type, code = 422, "invalid_request_error", "no_eligible_model"


class NotReady(APIError):
    status, type, code = 503, "server_error", "not_ready"


class UpstreamFailed(APIError):
    type = "upstream_error"
    _CODES: ClassVar[dict[int, str]] = {
        400: "upstream_rejected", 429: "rate_limit_exceeded", 502: "bad_gateway",
        503: "upstream_unavailable", 504: "upstream_timeout"}

    def __init__(self, message: str, status: int, retry_after: float | None = None):
        super().__init__(message, code=self._CODES.get(status))
        self.status = status
        self.retry_after = retry_after
        if status in (400, 429):  # the client's to fix or to wait for, as OpenAI types them
            self.type = "invalid_request_error" if status == 400 else "rate_limit_error"


# msgspec: "Expected `float | null`, got `str` - at `$.temperature`"
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"missing required field `(?P<field>[^`]+)`")


def from_decode_error(exc: msgspec.DecodeError) -> BadRequest:
    """A 400 for a body msgspec rejected; ``param`` is the offending field's path."""
    if not isinstance(exc, msgspec.ValidationError):
        return BadRequest(f"We could not parse the JSON body of your request: {exc}",
                          code="invalid_json")
    m = _AT.match(str(exc))
    msg, path = (m["msg"], m["path"] or "") if m else (str(exc), "")
    missing = _MISSING.search(msg)
    if missing:  # msgspec points at the parent object; the client wants the field itself
        path = f"{path}.{missing['field']}" if path else missing["field"]
        return BadRequest(f"Missing required parameter: '{path}'.", param=path,
                          code="missing_required_parameter")
    where = f"'{path}'" if path else "the request body"
    return BadRequest(f"Invalid value for {where}: {msg}", param=path or None,
                      code="invalid_value")


def decode_body(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """The body as ``decoder``'s type; a ``BadRequest`` naming the field otherwise.

    Nesting deep enough to exhaust the decoder's recursion is a malformed body like any
    other: a 400, with no traceback in the log.
    """
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise from_decode_error(exc) from None
    except RecursionError:
        raise BadRequest("We could not parse the JSON body of your request: it is nested too "
                         "deeply", code="invalid_json") from None


def from_provider_error(exc: ProviderError) -> UpstreamFailed:
    err = UpstreamFailed(f"upstream provider error: {exc}", exc.status, exc.retry_after)
    if isinstance(exc, UpstreamRefused):  # what OpenAI's clients know a refusal by
        err.code = "content_policy_violation"
    return err


def retry_after_header(err: APIError) -> dict[str, str]:
    if err.retry_after is None:
        return {}
    return {"retry-after": str(max(1, math.ceil(err.retry_after)))}


def error_response(err: APIError, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(_encoder.encode(ErrorBody(err.detail())), status_code=err.status,
                    media_type="application/json",
                    headers={**retry_after_header(err), **(headers or {})})


def error_event(err: APIError) -> bytes:
    """An SSE ``data:`` line carrying an error, for failures after a stream has started."""
    return b"data: " + _encoder.encode(ErrorBody(err.detail())) + b"\n\n"


_HTTP_TYPES = {401: "invalid_request_error", 404: "invalid_request_error",
               405: "invalid_request_error", 413: "invalid_request_error"}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
_HTTP_MESSAGES = {413: "The request body is larger than this server accepts "
                       "(server.max_body_bytes in the config)."}


def to_api_error(exc: Exception) -> APIError:
    """The client-facing error for any exception reaching the app boundary."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ProviderError):
        return from_provider_error(exc)
    if isinstance(exc, InvalidRequest):
        return BadRequest(str(exc), param=exc.param, code="invalid_value")
    if isinstance(exc, PromptTooLong):
        return BadRequest(str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, UnknownTarget):
        return ModelNotFound(exc.args[0], param="model")
    if isinstance(exc, NoEligibleModel):
        return Unsatisfiable(str(exc), param="model")
    if isinstance(exc, CacheUnavailable):  # an invalidation or erasure that did not happen
        log.error("cache: %s", exc)  # the detail (hosts, ports) stays in the log
        err = APIError("The response cache's store did not answer; nothing was deleted. "
                       "Retry later.", code="cache_unavailable")
        err.status = 503
        return err
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
        err = APIError(message, code=_HTTP_CODES.get(exc.status_code))
        err.status = exc.status_code
        err.type = _HTTP_TYPES.get(exc.status_code, "invalid_request_error")
        return err
    log.error("unhandled error", exc_info=exc)
    return APIError("The server had an error while processing your request.")


def client_error(exc: Exception) -> APIError:
    """``to_api_error``, noting a client that left (499) in one log line."""
    err = to_api_error(exc)
    if err.status == 499:
        log.info("client disconnected before its request was complete")
    return err


def handle_exception(_request: Request, exc: Exception) -> Response[bytes]:
    """Litestar exception handler for every exception type (registered for ``Exception``)."""
    err = client_error(exc)
    headers = getattr(exc, "headers", None) if isinstance(exc, HTTPException) else None
    return error_response(err, headers=headers)
