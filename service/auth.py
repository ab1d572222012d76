"""Who may call: safe until tenants and API keys arrive.

Listening on loopback only (the default) trusts every local caller. Listening on any other
address requires the master key (``server.master_key`` or env ``CONTEXTFORGE_MASTER_KEY``) as
``Authorization: Bearer <key>`` (or ``x-api-key: <key>``, as Anthropic's SDK sends it);
starting without one is a config error (``router.config.check_server``), not an open gateway.
The admin API always needs the master key, loopback or not.
"""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.types import Guard

from router.config import MASTER_KEY_ENV, ConfigError, ServerConfig, check_server, is_loopback
from router.config import master_key as configured_key
from service.errors import APIError, AuthenticationFailed


class AdminDisabled(APIError):
    status, type, code = 403, "invalid_request_error", "admin_disabled"


def presented_key(connection: ASGIConnection) -> str:
    """The caller's key: ``Authorization: Bearer`` (OpenAI SDKs), else ``x-api-key`` (the
    Anthropic SDK before 2.x sends its key there)."""
    scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return connection.headers.get("x-api-key", "").strip()


def _matches(connection: ASGIConnection, expected: bytes) -> bool:
    # compare_digest: the time taken must not reveal how much of the key matched.
    return hmac.compare_digest(presented_key(connection).encode(), expected)


def master_key_guard(server: ServerConfig) -> Guard | None:
    """A Litestar guard demanding the master key, or ``None`` on loopback."""
    errors = check_server(server)
    if errors:
        raise ConfigError("\n".join(errors))
    if is_loopback(server.host):
        return None
    expected = configured_key(server).encode()

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if not _matches(connection, expected):
            raise AuthenticationFailed("Missing or incorrect API key: send the master key as "
                                       "'Authorization: Bearer <key>' (or 'x-api-key: <key>')")

    return guard


def admin_guard(server: ServerConfig) -> Guard:
    """The master key, always: the admin API changes what every caller gets."""
    expected = configured_key(server).encode()

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if not expected:
            raise AdminDisabled(f"The admin API needs a master key: set server.master_key or "
                                f"{MASTER_KEY_ENV}")
        if not _matches(connection, expected):
            raise AuthenticationFailed("Missing or incorrect master key: send it as "
                                       "'Authorization: Bearer <key>'")

    return guard
