"""The admin API: change the catalog and the named providers at run time, without a restart.

``/admin/models[/{name}]`` and ``/admin/providers[/{name}]``: GET lists or shows, PUT adds or
replaces (the body is the entry as the config file writes it, in JSON), DELETE removes.
``GET /admin/deployments`` shows every deployment's health (circuit breaker, calls).

A change is validated by building everything it needs (routing engine, adapters) before the
gateway switches to it, then persisted to the overlay file (``router.overlay``) so a restart
keeps it; a change that would break the config is refused with the reason and changes nothing.
Always behind the master key, loopback or not; keys in answers are shown as ``***``.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from typing import Any

import msgspec
from litestar import Request, Response, Router, delete, get, put
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers import BaseRouteHandler

from router.config import (
    Config,
    ConfigError,
    ModelEntry,
    ProviderEntry,
    ServerConfig,
    check_config,
)
from router.overlay import overlay_path, read_overlay, write_overlay
from service.auth import MASTER_KEY_ENV, presented_key
from service.errors import (
    APIError,
    AuthenticationFailed,
    BadRequest,
    Conflict,
    ModelNotFound,
    NotReady,
    from_decode_error,
)
from service.gateway import Gateway


class AdminDisabled(APIError):
    status, type, code = 403, "invalid_request_error", "admin_disabled"


class Invalid(APIError):
    status, type, code = 422, "invalid_request_error", "invalid_config"


class NotFound(ModelNotFound):
    code = "not_found"


def admin_guard(server: ServerConfig):
    """The master key, always: the admin API changes what every caller gets."""
    key = server.master_key or os.environ.get(MASTER_KEY_ENV, "")
    expected = key.encode()

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if not expected:
            raise AdminDisabled(f"The admin API needs a master key: set server.master_key or "
                                f"{MASTER_KEY_ENV}")
        if not hmac.compare_digest(presented_key(connection).encode(), expected):
            raise AuthenticationFailed("Missing or incorrect master key: send it as "
                                       "'Authorization: Bearer <key>'")

    return guard


def _gateway(state: State) -> Gateway:
    gateway = state.get("gateway")
    if gateway is None:
        raise NotReady("The gateway is not ready.")
    return gateway


def _lock(state: State) -> asyncio.Lock:
    """One change at a time: each builds on the config the one before left."""
    lock = state.get("admin_lock")
    if lock is None:
        lock = state.admin_lock = asyncio.Lock()
    return lock


def _redact(entry: Any) -> dict[str, Any]:
    """An entry as JSON-ready builtins, with literal keys masked."""
    data = msgspec.to_builtins(entry)
    if data.get("api_key"):
        data["api_key"] = "***"
    for d in data.get("deployments", []):
        if d.get("api_key"):
            d["api_key"] = "***"
    return data


def _json(data: Any, status: int = 200) -> Response[bytes]:
    return Response(msgspec.json.encode(data), status_code=status,
                    media_type="application/json")


def _decode(body: bytes, kind: type, name: str) -> Any:
    try:
        entry = msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:
        raise from_decode_error(exc) from None
    if entry.name != name:
        raise BadRequest(f"the body's name {entry.name!r} differs from the path's {name!r}",
                         param="name")
    return entry


async def _apply(gateway: Gateway, section: str, name: str, entry: Any | None) -> None:
    """Switch the gateway to the config with this one change, then persist it."""
    old = gateway.config
    items = list(getattr(old, section))
    names = [e.name for e in items]
    if entry is None:
        items.pop(names.index(name))
    elif name in names:
        items[names.index(name)] = entry
    else:
        items.append(entry)
    new = msgspec.structs.replace(old, **{section: items})
    errors = check_config(new)
    if errors:
        raise Invalid("; ".join(errors))
    try:
        gateway.reconfigure(new)
    except (ConfigError, ValueError) as exc:
        raise Invalid(str(exc)) from None
    path = overlay_path(old)
    try:
        overlay = read_overlay(path)
        getattr(overlay, section)[name] = entry
        await asyncio.to_thread(write_overlay, path, overlay)
    except (OSError, ValueError):
        gateway.reconfigure(old)  # not persisted: not applied either
        raise


def _routes_using(config: Config, model: str) -> list[str]:
    return [r.name for r in config.routes if model in r.candidates]


@get("/models")
async def list_models(state: State) -> Response[bytes]:
    """Every catalog model with its deployments."""
    return _json({"data": [_redact(m) for m in _gateway(state).config.models]})


@get("/models/{name:str}")
async def show_model(name: str, state: State) -> Response[bytes]:
    for m in _gateway(state).config.models:
        if m.name == name:
            return _json(_redact(m))
    raise NotFound(f"no catalog model is named {name!r}", param="name")


@put("/models/{name:str}")
async def put_model(name: str, request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Add or replace a catalog model (201 when added)."""
    entry = _decode(await request.body(), ModelEntry, name)
    gateway = _gateway(state)
    async with _lock(state):
        existed = any(m.name == name for m in gateway.config.models)
        await _apply(gateway, "models", name, entry)
    return _json(_redact(entry), 200 if existed else 201)


@delete("/models/{name:str}", status_code=204)
async def delete_model(name: str, state: State) -> None:
    """Remove a catalog model; refused while a route lists it by name."""
    gateway = _gateway(state)
    async with _lock(state):
        config = gateway.config
        if all(m.name != name for m in config.models):
            raise NotFound(f"no catalog model is named {name!r}", param="name")
        users = _routes_using(config, name)
        if users:
            raise Conflict(f"routes {users} list {name!r} as a candidate: change them first")
        await _apply(gateway, "models", name, None)


@get("/providers")
async def list_providers(state: State) -> Response[bytes]:
    """The named providers (connections that deployments reference)."""
    return _json({"data": [_redact(p) for p in _gateway(state).config.providers]})


@put("/providers/{name:str}")
async def put_provider(name: str, request: Request[Any, Any, Any],
                       state: State) -> Response[bytes]:
    """Add or replace a named provider; models deployed on it switch to it at once."""
    entry = _decode(await request.body(), ProviderEntry, name)
    gateway = _gateway(state)
    async with _lock(state):
        existed = any(p.name == name for p in gateway.config.providers)
        await _apply(gateway, "providers", name, entry)
    return _json(_redact(entry), 200 if existed else 201)


@delete("/providers/{name:str}", status_code=204)
async def delete_provider(name: str, state: State) -> None:
    """Remove a named provider; refused while a deployment uses it."""
    gateway = _gateway(state)
    async with _lock(state):
        config = gateway.config
        if all(p.name != name for p in config.providers):
            raise NotFound(f"no provider is named {name!r}", param="name")
        users = [m.name for m in config.models if any(d.provider == name for d in m.deployments)]
        if config.default_deployment.provider == name:
            users.append("default_deployment")
        if users:
            raise Conflict(f"{users} deploy on provider {name!r}: change them first")
        await _apply(gateway, "providers", name, None)


@get("/deployments")
async def deployments(state: State) -> Response[bytes]:
    """Each model's deployments and their health."""
    out = []
    for model, d in _gateway(state).dispatchers.items():
        for u in d.upstreams:
            out.append({"model": model, "deployment": u.label, "weight": u.deployment.weight,
                        "breaker": u.breaker.state, "consecutive_failures": u.breaker.failures,
                        "calls": u.calls})
    return _json({"data": out})


def admin_router(server: ServerConfig) -> Router:
    return Router(path="/admin", guards=[admin_guard(server)], route_handlers=[
        list_models, show_model, put_model, delete_model,
        list_providers, put_provider, delete_provider, deployments,
    ])
