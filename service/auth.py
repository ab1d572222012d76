"""Who may call, and who they are: the credential of each request becomes its principal.

A credential arrives as ``Authorization: Bearer <credential>`` (or ``x-api-key``, as
Anthropic's SDK sends it). It is, in order: the master key (``server.master_key`` or
``CONTEXTFORGE_MASTER_KEY``: tenant ``default``, role admin); an API key (``cf_...``,
``router.governance.keys``: its organisation, project, user, role and scopes); a JWT from the
configured identity provider (``router.governance.tokens``). An API key or a token is always
checked, and a wrong one is a 401 even on loopback. With none (or a placeholder that is none
of these, as SDKs insist on sending one): a gateway listening on loopback only (the default)
trusts the local caller (tenant ``default``); on any other address it is a 401, and starting
there without a master key is a config error (``router.config.check_server``), never an open
gateway. The tenant of a request comes only
from here, never from a header or a field of the body.

Checked keys are kept ``governance.key_cache_s`` (1 s): revoking a key reaches every replica
within that time, and a key in steady use costs its replica one store read a second. Failed
attempts go to the audit log, at most one a second per client address.

The admin API always needs the master key, loopback or not.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.types import Guard

from router.config import (
    MASTER_KEY_ENV,
    Config,
    ConfigError,
    ServerConfig,
    check_server,
    is_loopback,
)
from router.config import master_key as configured_key
from router.governance.keys import ApiKey, KeyRejected, split_key
from router.governance.principal import MASTER, OPEN, Principal
from router.governance.stores import Governance
from router.governance.tokens import JwtVerifier, TokenRejected, jwks_loader
from service.errors import APIError, AuthenticationFailed

log = logging.getLogger("contextforge.auth")


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


class Forbidden(APIError):
    status, type, code = 403, "permission_error", "permission_denied"


class Authenticator:
    """Turns a request's credential into its ``Principal`` (see the module docstring)."""

    def __init__(self, config: Config, *, jwt: JwtVerifier | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config, self._jwt, self._clock = config, jwt, clock
        self._master = configured_key(config.server).encode()
        self._open = is_loopback(config.server.host)
        self._governance: Governance | None = None
        self._opening = asyncio.Lock()
        self._seen: OrderedDict[bytes, tuple[float, ApiKey]] = OrderedDict()
        self._failures: dict[str, float] = {}  # client address -> last audited failure

    async def governance(self) -> Governance:
        """The key store and audit log, opened on first use (off the event loop)."""
        if self._governance is None:
            async with self._opening:
                if self._governance is None:
                    self._governance = await asyncio.to_thread(Governance.open, self.config)
        return self._governance

    async def close(self) -> None:
        if self._governance is not None:
            await asyncio.to_thread(self._governance.close)

    async def principal(self, connection: ASGIConnection) -> Principal:
        """Who is calling; ``AuthenticationFailed`` (401) for a wrong, expired, revoked or
        missing credential, ``Forbidden`` (403) for a key used from outside its networks."""
        presented = presented_key(connection)
        source = connection.client.host if connection.client else None
        if not presented:
            if self._open:
                return OPEN
            raise AuthenticationFailed("Missing API key: send it as 'Authorization: Bearer "
                                       "<key>' (or 'x-api-key: <key>')")
        if self._master and hmac.compare_digest(presented.encode(), self._master):
            return MASTER
        try:
            if split_key(presented) is not None:
                key = await self._key(presented)
                if key.ips is not None and not _allowed_from(source, key.ips):
                    await self._audit_failure(source, "auth.ip_denied", key.id)
                    raise Forbidden(f"key {key.id} may not be used from {source}")
                return Principal.of_key(key)
            if self._jwt is not None and presented.count(".") == 2:
                return await self._jwt.verify(presented)
            if self._open:  # an SDK's placeholder key on a local gateway: not one of ours
                return OPEN
            raise KeyRejected("malformed")
        except (KeyRejected, TokenRejected) as exc:
            reason = exc.reason if isinstance(exc, KeyRejected) else str(exc)
            await self._audit_failure(source, "auth.failed",
                                      getattr(exc, "key_id", None), reason)
            raise AuthenticationFailed("Incorrect, expired or revoked API key") from None

    async def _key(self, presented: str) -> ApiKey:
        digest = hashlib.sha256(presented.encode()).digest()  # the cache never holds keys
        now = self._clock()
        hit = self._seen.get(digest)
        if hit is not None and now - hit[0] < self.config.governance.key_cache_s:
            return hit[1]
        gov = await self.governance()
        key = await asyncio.to_thread(gov.keys.verify, presented)
        self._seen[digest] = (now, key)
        self._seen.move_to_end(digest)
        while len(self._seen) > KEY_CACHE_ENTRIES:
            self._seen.popitem(last=False)
        return key

    def forget(self, key_id: str) -> None:
        """Drop a key from this replica's cache at once (revoked here)."""
        for digest in [d for d, (_, k) in self._seen.items() if k.id == key_id]:
            del self._seen[digest]

    async def _audit_failure(self, source: str | None, action: str, key_id: str | None,
                             reason: str | None = None) -> None:
        now, where = self._clock(), source or "unknown"
        if now - self._failures.get(where, -1e18) < 1.0:
            return  # a flood of bad keys is one record a second per address, not a write each
        self._failures[where] = now
        if len(self._failures) > KEY_CACHE_ENTRIES:
            self._failures.clear()
        try:
            gov = await self.governance()
            await asyncio.to_thread(gov.audit.append, key_id or "anonymous", action,
                                    target=key_id, source=source, outcome="denied",
                                    detail={"reason": reason} if reason else None)
        except Exception:  # the refusal stands even when the audit store is down
            log.exception("audit: could not record a failed authentication")


KEY_CACHE_ENTRIES = 10_000


def _allowed_from(source: str | None, networks: list[str]) -> bool:
    if source is None:
        return False
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


def jwt_verifier(config: Config) -> JwtVerifier | None:
    """The JWT checker ``governance.jwt`` configures (its JWKS read on first use), or None."""
    jwt = config.governance.jwt
    if jwt is None:
        return None
    base = Path(config.base_dir) if config.base_dir else None
    return JwtVerifier(jwt, jwks_loader(jwt.jwks, base))


def api_guard(auth: Authenticator) -> Guard:
    """The Litestar guard of the API: the request's principal, kept on its state for the
    handlers (``principal_of``); 403 when the credential does not allow this endpoint."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        principal = await auth.principal(connection)
        if not principal.may_call(connection.url.path):
            raise Forbidden(f"this credential may not call {connection.url.path}")
        connection.state.principal = principal

    return guard


def principal_of(connection: ASGIConnection) -> Principal:
    """The principal ``api_guard`` found for this request."""
    return connection.state.principal
