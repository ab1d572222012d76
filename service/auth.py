"""Who may call, and who they are: the credential of each request becomes its principal.

A credential arrives as ``Authorization: Bearer <credential>`` (or ``x-api-key``, as
Anthropic's SDK sends it). It is, in order: the master key (``server.master_key`` or
``CONTEXTFORGE_MASTER_KEY``: tenant ``default``, role admin); an API key (``cf_...``,
``router.governance.keys``: its organisation, project, user, role and scopes); a JWT from the
configured identity provider (``router.governance.tokens``). An API key or a token is always
checked, and a wrong one is a 401 even on loopback. With none (or a placeholder that is none
of these, as SDKs insist on sending one): a gateway listening on loopback only (the default)
trusts the local caller (tenant ``default``) — not a caller a trusted proxy forwarded from
elsewhere; on any other address it is a 401, and starting there without a master key is a
config error (``router.config.check_server``), never an open gateway. The tenant of a request
comes only from here, never from a header or a field of the body.

Checked keys are kept ``governance.key_cache_s`` (0.5 s): revoking a key reaches every replica
within that time, and a key in steady use costs its replica two store reads a second. Failed
attempts go to the audit log, at most one a second per client address.

Networks: a key with ``ips`` works only from those networks, and every key and token of an
organisation named in ``governance.networks`` only from its networks (both, when both are
set; the master key is bound by neither). Elsewhere it is a 403, audited as
``auth.ip_denied``. The client address is the peer's, or the one a trusted proxy forwarded
(``service.proxies``).

The admin API always needs a credential, loopback or not: the master key, or a key or token
whose role is above member (``admin_access``); each of its handlers says which role it needs
(``needs``), and the catalog, providers and routers are the platform's alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
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
from router.governance.keys import ApiKey, KeyRejected, Role, split_key
from router.governance.networks import Network, lenient_networks, parse_network, within
from router.governance.principal import MASTER, OPEN, Principal
from router.governance.stores import Governance
from router.governance.tokens import JwtVerifier, TokenRejected, jwks_loader
from service.errors import APIError, AuthenticationFailed
from service.proxies import TrustedProxies

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


def admin_access(auth: Authenticator) -> Guard:
    """The admin API's guard: a credential is always needed (loopback or not) — the master key,
    or an API key or token whose role is above ``member`` — and becomes the request's
    principal; each handler's ``needs`` says which role it takes."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        presented = presented_key(connection)
        if not auth.has_master and not auth.could_be_ours(presented):
            raise AdminDisabled(f"The admin API needs the master key (set server.master_key or "
                                f"{MASTER_KEY_ENV}) or an API key with an admin, operator or "
                                "viewer role")
        if not presented:
            raise AuthenticationFailed("Missing credential: send the master key or an admin "
                                       "key as 'Authorization: Bearer <key>'")
        principal = await auth.principal(connection, anonymous=False)
        if principal.role == "member":
            raise Forbidden("a member key calls the API, not the admin API: use a key with an "
                            "admin, operator or viewer role")
        connection.state.principal = principal

    return guard


def needs(role: Role, *, platform: bool = True) -> Guard:
    """A handler's guard: the caller's role must include ``role``; with ``platform``, the
    caller must also run the platform (the master key, or a key of
    ``governance.platform_org``): the catalog, providers and routers are everyone's."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        principal: Principal = connection.state.principal
        if not principal.at_least(role):
            raise Forbidden(f"this needs the {role} role (the credential has {principal.role})")
        org = connection.app.state.auth.config.governance.platform_org
        if platform and principal.via != "master" and principal.tenant != org:
            raise Forbidden("only the platform's own operators may do this (the master key, "
                            f"or a key of the {org!r} organisation)")

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
        self._states: dict[str, tuple[float, str]] = {}  # key id -> (checked, state)
        # The client address of a request, for everything here and the audit log's source.
        self.proxies = TrustedProxies.of(config.server)
        self._networks: dict[str, tuple[Network, ...]] = {
            org: tuple(parse_network(n) for n in entries)
            for org, entries in config.governance.networks.items()}

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

    @property
    def has_master(self) -> bool:
        return bool(self._master)

    def could_be_ours(self, presented: str) -> bool:
        """Whether ``presented`` has the shape of an API key or (with JWTs on) a token."""
        return split_key(presented) is not None or (
            self._jwt is not None and presented.count(".") == 2)

    async def principal(self, connection: ASGIConnection, *, anonymous: bool = True
                        ) -> Principal:
        """Who is calling; ``AuthenticationFailed`` (401) for a wrong, expired, revoked or
        missing credential, ``Forbidden`` (403) for a key or token used from outside its
        networks (the key's ``ips``, its organisation's ``governance.networks``).
        ``anonymous``: a loopback gateway may take a caller without one (not the admin API)."""
        presented = presented_key(connection)
        source = self.proxies.client_address(connection)
        peer = connection.client.host if connection.client else None
        # A loopback gateway trusts local callers; a request a local proxy forwarded for
        # someone elsewhere is not local, whatever its peer.
        is_open = self._open and anonymous and (source == peer or is_loopback(source or ""))
        if not presented:
            if is_open:
                return OPEN
            raise AuthenticationFailed("Missing API key: send it as 'Authorization: Bearer "
                                       "<key>' (or 'x-api-key: <key>')")
        if self._master and hmac.compare_digest(presented.encode(), self._master):
            return MASTER
        try:
            if split_key(presented) is not None:
                key = await self._key(presented)
                if key.ips is not None and not within(source, lenient_networks(key.ips)):
                    await self._audit_failure(source, "auth.ip_denied", key.id,
                                              "outside the key's ips")
                    raise Forbidden(f"key {key.id} may not be used from {source}")
                return await self._in_tenant_networks(Principal.of_key(key), source)
            if self._jwt is not None and presented.count(".") == 2:
                return await self._in_tenant_networks(await self._jwt.verify(presented),
                                                      source)
            if is_open:  # an SDK's placeholder key on a local gateway: not one of ours
                return OPEN
            raise KeyRejected("malformed")
        except (KeyRejected, TokenRejected) as exc:
            reason = exc.reason if isinstance(exc, KeyRejected) else str(exc)
            await self._audit_failure(source, "auth.failed",
                                      getattr(exc, "key_id", None), reason)
            raise AuthenticationFailed("Incorrect, expired or revoked API key") from None

    async def _in_tenant_networks(self, principal: Principal, source: str | None
                                  ) -> Principal:
        """``principal``, unless its organisation's networks exclude ``source`` (403)."""
        networks = self._networks.get(principal.tenant)
        if networks is None or within(source, networks):
            return principal
        await self._audit_failure(source, "auth.ip_denied", principal.credential,
                                  f"outside the networks of organisation {principal.tenant!r}")
        raise Forbidden(f"organisation {principal.tenant!r} may not call from {source} "
                        "(governance.networks)")

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

    async def still_valid(self, principal: Principal) -> None:
        """``AuthenticationFailed`` when the API key ``principal`` came from no longer works
        (revoked, expired, rotated out): work it left running (a batch) stops with it. Read
        at most once per ``governance.key_cache_s`` per key."""
        if principal.via != "key" or principal.credential is None:
            return
        now, key_id = self._clock(), principal.credential
        hit = self._states.get(key_id)
        if hit is None or now - hit[0] >= self.config.governance.key_cache_s:
            gov = await self.governance()
            key = await asyncio.to_thread(gov.keys.get, key_id)
            state = key.state(time.time()) if key is not None else "revoked"
            hit = self._states[key_id] = (now, state)
            if len(self._states) > KEY_CACHE_ENTRIES:
                self._states.clear()
        if hit[1] != "active":
            raise AuthenticationFailed(f"the API key {key_id} that created this batch is "
                                       f"{hit[1]}")

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


def own_only(connection: ASGIConnection, tenant: str) -> None:
    """403 unless the caller may act on ``tenant``: its own organisation, or any for the
    platform's operators (the master key, ``governance.platform_org``)."""
    principal: Principal = connection.state.principal
    org = connection.app.state.auth.config.governance.platform_org
    if principal.via != "master" and principal.tenant not in (tenant, org):
        raise Forbidden(f"this credential acts for {principal.tenant!r}, not {tenant!r}")


def tenant_in_view(connection: ASGIConnection, tenant: str | None) -> str | None:
    """The tenant a listing may show: the one asked for if the caller may act on it (else
    403), else the caller's own organisation — or every tenant (None) for the platform."""
    principal: Principal = connection.state.principal
    org = connection.app.state.auth.config.governance.platform_org
    if principal.via != "master" and principal.tenant != org:
        tenant = tenant or principal.tenant
    if tenant is not None:
        own_only(connection, tenant)
    return tenant


async def audited(connection: ASGIConnection, action: str, target: str | None = None,
                  detail: dict | None = None) -> None:
    """Append an admin action to the audit log: who (the credential), what, from where."""
    principal: Principal = connection.state.principal
    auth: Authenticator = connection.app.state.auth
    source = auth.proxies.client_address(connection)
    actor = principal.credential or principal.via
    try:
        gov = await auth.governance()
        await asyncio.to_thread(gov.audit.append, actor, action, target=target, source=source,
                                detail={"tenant": principal.tenant, **(detail or {})})
    except Exception:  # the change is made; its record failing is logged loudly
        log.exception("audit: could not record %s on %s by %s", action, target, actor)
