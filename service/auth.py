"""Who may call: safe until tenants and API keys arrive.

Listening on loopback only (the default) trusts every local caller. Listening on any other
address requires the master key (``server.master_key`` or env ``CONTEXTFORGE_MASTER_KEY``) as
``Authorization: Bearer <key>`` (or ``x-api-key: <key>``, as Anthropic's SDK sends it);
starting without one is a config error, not an open gateway.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.types import Guard

from router.config import ConfigError, ServerConfig
from service.errors import AuthenticationFailed

MASTER_KEY_ENV = "CONTEXTFORGE_MASTER_KEY"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def presented_key(connection: ASGIConnection) -> str:
    """The caller's key: ``Authorization: Bearer`` (OpenAI SDKs), else ``x-api-key`` (the
    Anthropic SDK before 2.x sends its key there)."""
    scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return connection.headers.get("x-api-key", "").strip()


def master_key_guard(server: ServerConfig) -> Guard | None:
    """A Litestar guard demanding the master key, or ``None`` on loopback."""
    if is_loopback(server.host):
        return None
    key = server.master_key or os.environ.get(MASTER_KEY_ENV, "")
    if not key:
        raise ConfigError(f"server.host {server.host!r} is not loopback: set server.master_key "
                          f"or {MASTER_KEY_ENV} so that callers must authenticate")
    expected = key.encode()

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        # compare_digest: the time taken must not reveal how much of the key matched.
        if not hmac.compare_digest(presented_key(connection).encode(), expected):
            raise AuthenticationFailed("Missing or incorrect API key: send the master key as "
                                       "'Authorization: Bearer <key>' (or 'x-api-key: <key>')")

    return guard
