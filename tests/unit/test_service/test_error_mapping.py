"""Every failure maps to OpenAI's error shape with the right status."""

import msgspec
import pytest
from litestar.exceptions import NotFoundException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from router.providers import (
    REQUEST_DECODER,
    ProviderError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from service.errors import (
    APIError,
    BadRequest,
    ModelNotFound,
    error_event,
    error_response,
    from_decode_error,
    to_api_error,
)


def decode_error(body: bytes) -> msgspec.DecodeError:
    with pytest.raises(msgspec.DecodeError) as exc:
        REQUEST_DECODER.decode(body)
    return exc.value


def test_malformed_json_is_400_without_param():
    err = from_decode_error(decode_error(b'{"model": '))
    assert isinstance(err, BadRequest) and err.status == 400
    assert err.param is None and err.code == "invalid_json"


@pytest.mark.parametrize(("body", "param"), [
    (b'{"model": "a", "messages": [{"role": "user"}], "top_p": 3}', "top_p"),
    (b'{"model": "a", "messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
    (b'{"model": "a", "messages": [{"role": "user", "content": [{"type": "video"}]}]}',
     "messages[0].content[0].type"),
    (b'{"model": "a", "messages": [{"role": "user"}], "tools": [{"function": {}}]}',
     "tools[0].function.name"),
    (b'{"model": "a"}', "messages"),
    (b'[]', None),
])
def test_validation_errors_name_the_field(body, param):
    err = from_decode_error(decode_error(body))
    assert err.status == 400 and err.param == param
    if param:
        assert param in err.message


@pytest.mark.parametrize(("exc", "status", "code"), [
    (UpstreamError("boom"), 502, "bad_gateway"),
    (UpstreamUnavailable("down"), 503, "upstream_unavailable"),
    (UpstreamTimeout("slow"), 504, "upstream_timeout"),
    (ProviderError("?"), 502, "bad_gateway"),
])
def test_provider_errors_map_to_5xx(exc, status, code):
    err = to_api_error(exc)
    assert (err.status, err.code, err.type) == (status, code, "upstream_error")


def test_litestar_http_errors_keep_their_status():
    assert to_api_error(RequestEntityTooLarge()).status == 413
    assert to_api_error(NotFoundException()).code == "not_found"


def test_unexpected_errors_are_500_without_details(caplog):
    err = to_api_error(RuntimeError("secret internals at /srv/app.py line 3"))
    assert err.status == 500 and err.type == "server_error"
    assert "secret" not in err.message
    assert "secret internals" in caplog.text  # the operator still sees it


def test_wire_shape():
    resp = error_response(ModelNotFound("no such model", param="model"))
    assert resp.status_code == 404
    assert msgspec.json.decode(resp.content) == {"error": {
        "message": "no such model", "type": "invalid_request_error", "param": "model",
        "code": "model_not_found"}}
    event = error_event(APIError("x"))
    assert event.startswith(b"data: {") and event.endswith(b"\n\n")
