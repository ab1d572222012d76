"""JWT bearer tokens (OIDC/SSO users) checked against a JWKS with PyJWT.

What is refused, whatever the token says of itself: an algorithm outside the configured list
(so ``alg: none`` and an HS256 token "signed" with the RSA public key never verify: only
asymmetric algorithms are allowed, and each JWKS key is used only with its own algorithm
family), a ``kid`` the JWKS does not hold (after one refresh, at most every
``min_refresh_s``), a bad signature, a token past ``exp`` or before ``nbf`` (with
``leeway_s``), and an issuer or audience other than the configured ones. ``exp`` is required.

Claims map to the principal: ``tenant_claim`` (the organisation), ``user_claim``, and
``roles_claim`` (a list; the highest known role counts, ``member`` by default), and optionally
``models_claim`` for the models and routes the token may use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt

from router.config import JwtConfig
from router.governance.principal import RANK, Principal


class TokenRejected(Exception):
    """A token that does not authenticate; the message is for the audit log."""


def jwks_loader(source: str, base_dir: Path | None = None
                ) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A coroutine function that reads the JWKS at ``source`` (a file or an http(s) URL)."""
    if source.startswith(("https://", "http://")):
        async def fetch() -> dict[str, Any]:
            import httpx

            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.get(source)
                r.raise_for_status()
                return r.json()
        return fetch
    path = Path(source)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path

    async def read() -> dict[str, Any]:
        import asyncio

        return json.loads(await asyncio.to_thread(path.read_text))
    return read


class JwtVerifier:
    """Checks bearer tokens against the JWKS ``fetch`` returns (refreshed as configured)."""

    def __init__(self, config: JwtConfig, fetch: Callable[[], Awaitable[dict[str, Any]]],
                 clock: Callable[[], float] = time.time):
        self.config, self._fetch, self._clock = config, fetch, clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at = -1e18

    async def refresh(self) -> int:
        """Load the JWKS now; how many usable keys it holds (keys of algorithms not allowed
        are left out)."""
        data = await self._fetch()
        keys: dict[str, jwt.PyJWK] = {}
        for entry in data.get("keys", []):
            kid, alg = entry.get("kid"), entry.get("alg")
            if not kid or (alg is not None and alg not in self.config.algorithms):
                continue
            try:
                keys[kid] = jwt.PyJWK(entry)
            except jwt.exceptions.PyJWKError:
                continue
        self._keys, self._loaded_at = keys, self._clock()
        return len(keys)

    async def verify(self, token: str) -> Principal:
        """The principal ``token`` authenticates as; ``TokenRejected`` saying why not."""
        cfg = self.config
        try:
            header = jwt.get_unverified_header(token)
        except jwt.exceptions.DecodeError:
            raise TokenRejected("malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in cfg.algorithms:
            raise TokenRejected(f"algorithm {alg!r} is not allowed")
        now = self._clock()
        stale = now - self._loaded_at > cfg.refresh_s
        if stale or (kid not in self._keys and now - self._loaded_at > cfg.min_refresh_s):
            await self.refresh()
        key = self._keys.get(kid)
        if key is None:
            raise TokenRejected(f"unknown key id {kid!r}")
        if key.algorithm_name != alg:
            raise TokenRejected(f"key {kid!r} is for {key.algorithm_name}, the token says "
                                f"{alg}")
        try:
            claims = jwt.decode(token, key=key.key, algorithms=[alg], audience=cfg.audience,
                                issuer=cfg.issuer, leeway=cfg.leeway_s,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.exceptions.PyJWTError as exc:
            raise TokenRejected(f"{type(exc).__name__}: {exc}") from None
        tenant = claims.get(cfg.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise TokenRejected(f"no {cfg.tenant_claim!r} claim naming the organisation")
        roles = claims.get(cfg.roles_claim) or []
        roles = [roles] if isinstance(roles, str) else roles
        known = [r for r in roles if r in RANK]
        role = max(known, key=RANK.__getitem__) if known else "member"
        models = None
        if cfg.models_claim is not None and isinstance(claims.get(cfg.models_claim), list):
            models = frozenset(str(m) for m in claims[cfg.models_claim])
        user = claims.get(cfg.user_claim)
        return Principal(tenant=tenant, via="jwt", role=role,
                         user=str(user) if user is not None else None,
                         credential=str(claims.get("sub", "")) or None,
                         models=models, routes=models)
