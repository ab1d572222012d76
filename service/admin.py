"""The admin API: change the catalog and the named providers at run time, without a restart.

``/admin/models[/{name}]`` and ``/admin/providers[/{name}]``: GET lists or shows, PUT adds or
replaces (the body is the entry as the config file writes it, in JSON), DELETE removes.
``GET /admin/deployments`` shows every deployment's health: its state (healthy, degraded, open
circuit), breaker, recent error rate, latency averages, load and last minute's usage.
``GET /admin/routers`` lists the router registry's versions; ``POST
/admin/routers/{version}/promote`` makes one live, here at once and in the registry that every
replica follows (``service.promotion``).

A change is validated by building everything it needs (routing engine, adapters) before the
gateway switches to it, then persisted to the overlay file (``router.overlay``) so a restart
keeps it; a change that would break the config is refused with the reason and changes nothing.
Always behind a credential, loopback or not (``service.auth.admin_access``): reading takes
the viewer role, changing the catalog, providers, routers or cache the operator role, both of
the platform (the master key or ``governance.platform_org``); an organisation's admin may purge
its own cache entries and manage its own keys (``service.admin_governance``). Every change is
in the audit log. Secrets in answers (keys, header values, a URL's user-info) are shown as
``***``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, delete, get, post, put

from router.artifact import ArtifactError
from router.cache.store import ResponseCache
from router.config import Config, ConfigError, ModelEntry, ProviderEntry
from router.overlay import overlay_path, read_overlay, write_overlay
from router.registry import RegistryError, UnknownVersion
from router.secrets import mask_url
from service.admin_batches import BATCH_ADMIN_ROUTES
from service.admin_governance import GOVERNANCE_ROUTES
from service.admin_stats import dashboard_stats
from service.auth import Authenticator, admin_access, audited, needs, own_only
from service.errors import APIError, BadRequest, Conflict, ModelNotFound, decode_body
from service.gateway import Gateway
from service.health import deployment_health
from service.promotion import RouterRegistryWatch


class Invalid(APIError):
    status, type, code = 422, "invalid_request_error", "invalid_config"


class NotFound(ModelNotFound):
    code = "not_found"


def _mask(connection: dict[str, Any]) -> dict[str, Any]:
    """A deployment or provider with its secrets masked: the literal key, every header value
    (auth headers are how custom gateways authenticate) and the endpoint's user-info."""
    if connection.get("api_key"):
        connection["api_key"] = "***"
    if connection.get("headers"):
        connection["headers"] = {k: "***" for k in connection["headers"]}
    if connection.get("endpoint"):
        connection["endpoint"] = mask_url(connection["endpoint"])
    return connection


def _redact(entry: Any) -> dict[str, Any]:
    """An entry as JSON-ready builtins, with its secrets masked."""
    data = _mask(msgspec.to_builtins(entry))
    data["deployments"] = [_mask(d) for d in data.get("deployments", [])]
    if not data["deployments"]:
        del data["deployments"]
    return data


def _json(data: Any, status: int = 200) -> Response[bytes]:
    return Response(msgspec.json.encode(data), status_code=status,
                    media_type="application/json")


_DECODERS = {ModelEntry: msgspec.json.Decoder(ModelEntry),
             ProviderEntry: msgspec.json.Decoder(ProviderEntry)}


def _decode(body: bytes, kind: type, name: str) -> Any:
    entry = decode_body(_DECODERS[kind], body)
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
    try:  # the validation pipeline every entry point runs (router.validate)
        await gateway.reconfigure(new)
    except (ConfigError, ValueError) as exc:
        raise Invalid(str(exc)) from None
    path = overlay_path(old)
    try:
        overlay = read_overlay(path)
        getattr(overlay, section)[name] = entry
        await asyncio.to_thread(write_overlay, path, overlay)
    except (OSError, ValueError):
        await gateway.reconfigure(old)  # not persisted: not applied either
        raise


def _routes_using(config: Config, model: str) -> list[str]:
    return [r.name for r in config.routes if model in r.candidates]


@get("/models", guards=[needs("viewer")])
async def list_models(gateway: Gateway) -> Response[bytes]:
    """Every catalog model with its deployments."""
    return _json({"data": [_redact(m) for m in gateway.config.models]})


@get("/models/{name:str}", guards=[needs("viewer")])
async def show_model(name: str, gateway: Gateway) -> Response[bytes]:
    for m in gateway.config.models:
        if m.name == name:
            return _json(_redact(m))
    raise NotFound(f"no catalog model is named {name!r}", param="name")


@put("/models/{name:str}", guards=[needs("operator")])
async def put_model(name: str, request: Request[Any, Any, Any],
                    gateway: Gateway) -> Response[bytes]:
    """Add or replace a catalog model (201 when added)."""
    entry = _decode(await request.body(), ModelEntry, name)
    async with gateway.changes:
        existed = any(m.name == name for m in gateway.config.models)
        await _apply(gateway, "models", name, entry)
    await audited(request, "models.put", name)
    return _json(_redact(entry), 200 if existed else 201)


@delete("/models/{name:str}", status_code=204, guards=[needs("operator")])
async def delete_model(name: str, request: Request[Any, Any, Any], gateway: Gateway) -> None:
    """Remove a catalog model; refused while a route lists it by name."""
    async with gateway.changes:
        config = gateway.config
        if all(m.name != name for m in config.models):
            raise NotFound(f"no catalog model is named {name!r}", param="name")
        users = _routes_using(config, name)
        if users:
            raise Conflict(f"routes {users} list {name!r} as a candidate: change them first")
        await _apply(gateway, "models", name, None)
    await audited(request, "models.delete", name)


@get("/providers", guards=[needs("viewer")])
async def list_providers(gateway: Gateway) -> Response[bytes]:
    """The named providers (connections that deployments reference)."""
    return _json({"data": [_redact(p) for p in gateway.config.providers]})


@put("/providers/{name:str}", guards=[needs("operator")])
async def put_provider(name: str, request: Request[Any, Any, Any],
                       gateway: Gateway) -> Response[bytes]:
    """Add or replace a named provider; models deployed on it switch to it at once."""
    entry = _decode(await request.body(), ProviderEntry, name)
    async with gateway.changes:
        existed = any(p.name == name for p in gateway.config.providers)
        await _apply(gateway, "providers", name, entry)
    await audited(request, "providers.put", name)
    return _json(_redact(entry), 200 if existed else 201)


@delete("/providers/{name:str}", status_code=204, guards=[needs("operator")])
async def delete_provider(name: str, request: Request[Any, Any, Any], gateway: Gateway) -> None:
    """Remove a named provider; refused while a deployment uses it."""
    async with gateway.changes:
        config = gateway.config
        if all(p.name != name for p in config.providers):
            raise NotFound(f"no provider is named {name!r}", param="name")
        users = [m.name for m in config.models if any(d.provider == name for d in m.deployments)]
        if config.default_deployment.provider == name:
            users.append("default_deployment")
        if users:
            raise Conflict(f"{users} deploy on provider {name!r}: change them first")
        await _apply(gateway, "providers", name, None)
    await audited(request, "providers.delete", name)


@get("/deployments", guards=[needs("viewer")])
async def deployments(gateway: Gateway) -> Response[bytes]:
    """Each model's deployments and their health."""
    return _json({"data": deployment_health(gateway)})


@get("/routers", guards=[needs("viewer")])
async def list_routers(routers: RouterRegistryWatch) -> Response[bytes]:
    """The registry's router versions with their state and card figures, and which one this
    process serves."""
    registry = routers.registry
    listed = await asyncio.to_thread(registry.list)
    live = await asyncio.to_thread(registry.live)
    return _json({"live": live, "serving": routers.serving, "registry": str(registry.folder),
                  "data": listed})


@post("/routers/{version:str}/promote", guards=[needs("operator")])
async def promote_router(version: str, request: Request[Any, Any, Any],
                         routers: RouterRegistryWatch) -> Response[bytes]:
    """Make ``version`` live: this process serves it from the next request on, and the
    registry records it for every replica that follows it. 404 for an unknown version, 422
    (with the reason) for one that does not load or cannot serve this config."""
    try:
        await routers.promote(version)
    except UnknownVersion as exc:
        raise NotFound(exc.args[0], param="version") from None
    except (ArtifactError, ConfigError) as exc:
        raise Invalid(f"router version {version!r} cannot serve: {exc}") from None
    except RegistryError as exc:
        raise Conflict(str(exc)) from None
    await audited(request, "routers.promote", version)
    listed = await asyncio.to_thread(routers.registry.list)
    return _json(next(v for v in listed if v.version == version))


class PurgeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /admin/cache/purge``: every entry of a tenant, or of one of its users (an
    erasure request)."""

    tenant: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    user: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


_PURGE = msgspec.json.Decoder(PurgeRequest)


def _cache_of(gateway: Gateway) -> ResponseCache:
    if gateway.cache is None:
        raise Conflict("the response cache is off (cache.enabled: false)")
    return gateway.cache


@get("/cache", guards=[needs("viewer")])
async def cache_stats(gateway: Gateway) -> Response[bytes]:
    """Each tier's size, bounds, hits served and evictions (off: ``enabled`` false)."""
    if gateway.cache is None:
        return _json({"enabled": False})
    return _json({"enabled": True, **await gateway.cache.stats()})


@delete("/cache/entries/{entry:str}", status_code=204,
        guards=[needs("operator")])
async def cache_invalidate(entry: str, request: Request[Any, Any, Any], gateway: Gateway) -> None:
    """Drop one entry (its id is in the log row of every hit it served); 404 if unknown."""
    if not await _cache_of(gateway).delete(entry):
        raise NotFound(f"no cache entry {entry!r} (expired, evicted or never kept)",
                       param="entry")
    await audited(request, "cache.delete", entry)


@post("/cache/purge", guards=[needs("admin", platform=False)])
async def cache_purge(request: Request[Any, Any, Any], gateway: Gateway) -> Response[bytes]:
    """Drop every entry of a tenant, or of one of its users."""
    body = decode_body(_PURGE, await request.body())
    own_only(request, body.tenant)
    purged = await _cache_of(gateway).purge(body.tenant, body.user)
    await audited(request, "cache.purge", body.tenant, {"user": body.user, "purged": purged})
    return _json({"tenant": body.tenant, "user": body.user, "purged": purged})


def admin_router(auth: Authenticator) -> Router:
    return Router(path="/admin", guards=[admin_access(auth)], route_handlers=[
        list_models, show_model, put_model, delete_model,
        list_providers, put_provider, delete_provider, deployments,
        list_routers, promote_router, cache_stats, cache_invalidate, cache_purge,
        *GOVERNANCE_ROUTES, *BATCH_ADMIN_ROUTES, dashboard_stats,
    ])
