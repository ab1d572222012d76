"""The admin API's keys, usage, erasures and audit log.

``/admin/keys``: an organisation's admin lists, creates, rotates and revokes its own keys (the
platform's any organisation's); a created or rotated key is in the answer once, and only its
hash is kept. ``GET /admin/usage``: requests, tokens and spend grouped as asked (a viewer sees
its own organisation's). ``DELETE /admin/users/{tenant}/{user}``: an erasure request (log rows
and cache entries). ``GET /admin/audit``: the hash-chained audit log (the platform's admins),
with ``?verify=true`` the chain's check. Every change is audited.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, post

from router.governance.keys import ApiKey, Role
from router.usage import erase_user, usage
from service.auth import Authenticator, audited, needs, own_only, tenant_in_view
from service.errors import APIError, BadRequest, Conflict, decode_body
from service.gateway import Gateway

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class NotFound(APIError):
    status, type, code = 404, "invalid_request_error", "not_found"


class KeyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /admin/keys``: what the new key may do (``expires_in_s``: from now)."""

    org: Name
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    project: Name | None = None
    user: Name | None = None
    role: Role = "member"
    models: list[Name] | None = None
    routes: list[Name] | None = None
    endpoints: list[Name] | None = None
    ips: list[Name] | None = None
    expires_in_s: Annotated[float, msgspec.Meta(gt=0, le=10 * 365 * 86400)] | None = None


class RotateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    overlap_s: Annotated[float, msgspec.Meta(ge=0, le=30 * 86400)] = 3600.0


_KEY_REQUEST = msgspec.json.Decoder(KeyRequest)
_ROTATE = msgspec.json.Decoder(RotateRequest)
_ENCODE = msgspec.json.Encoder()


def _json(data: Any, status: int = 200) -> Response[bytes]:
    return Response(_ENCODE.encode(data), status_code=status, media_type="application/json")


def _auth(request: Request[Any, Any, Any]) -> Authenticator:
    return request.app.state.auth


async def _owned_key(request: Request[Any, Any, Any], key_id: str) -> ApiKey:
    gov = await _auth(request).governance()
    key = await asyncio.to_thread(gov.keys.get, key_id)
    if key is None:
        raise NotFound(f"no key {key_id!r}", param="id")
    own_only(request, key.org)
    return key


@get("/keys", guards=[needs("admin", platform=False)])
async def list_keys(request: Request[Any, Any, Any], org: str | None = None,
                    all: bool = False) -> Response[bytes]:
    """Keys of ``org`` (the caller's own by default), active ones unless ``all``."""
    org = org or request.state.principal.tenant
    own_only(request, org)
    gov = await _auth(request).governance()
    keys = await asyncio.to_thread(gov.keys.list, org, include_inactive=all)
    now = time.time()
    return _json({"data": [{**msgspec.structs.asdict(k), "state": k.state(now)}
                           for k in keys]})


@post("/keys", guards=[needs("admin", platform=False)])
async def create_key(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A new key; the answer's ``key`` is shown this once."""
    body = decode_body(_KEY_REQUEST, await request.body())
    own_only(request, body.org)
    gov = await _auth(request).governance()
    expires = time.time() + body.expires_in_s if body.expires_in_s else None
    try:
        key, presented = await asyncio.to_thread(
            gov.keys.create, body.org, name=body.name, project=body.project,
            user_id=body.user, role=body.role, models=body.models, routes=body.routes,
            endpoints=body.endpoints, ips=body.ips, expires=expires)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    await audited(request, "keys.create", key.id, {"org": key.org, "role": key.role})
    return _json({**msgspec.structs.asdict(key), "key": presented}, status=201)


@post("/keys/{key_id:str}/rotate", guards=[needs("admin", platform=False)])
async def rotate_key(key_id: str, request: Request[Any, Any, Any]) -> Response[bytes]:
    """A new key replacing ``key_id``, which keeps working ``overlap_s`` (default 1 h)."""
    body = decode_body(_ROTATE, await request.body() or b"{}")
    await _owned_key(request, key_id)
    gov = await _auth(request).governance()
    try:
        new, presented = await asyncio.to_thread(gov.keys.rotate, key_id, body.overlap_s)
    except KeyError as exc:
        raise NotFound(exc.args[0], param="id") from None
    await audited(request, "keys.rotate", key_id, {"new": new.id, "overlap_s": body.overlap_s})
    return _json({**msgspec.structs.asdict(new), "key": presented}, status=201)


@delete("/keys/{key_id:str}", status_code=204, guards=[needs("admin", platform=False)])
async def revoke_key(key_id: str, request: Request[Any, Any, Any]) -> None:
    """End ``key_id`` now (every replica refuses it within ``governance.key_cache_s``)."""
    await _owned_key(request, key_id)
    gov = await _auth(request).governance()
    await asyncio.to_thread(gov.keys.revoke, key_id)
    _auth(request).forget(key_id)
    await audited(request, "keys.revoke", key_id)


@get("/usage", guards=[needs("viewer", platform=False)])
async def usage_report(request: Request[Any, Any, Any], gateway: Gateway,
                       group_by: str = "tenant,model", since: float | None = None,
                       until: float | None = None, tenant: str | None = None
                       ) -> Response[bytes]:
    """Requests, tokens and spend grouped by any of tenant, user, project, model, key and day
    (``group_by=model,day``); an organisation sees only its own."""
    tenant = tenant_in_view(request, tenant)
    if gateway.traffic is None:
        raise Conflict("usage is read from the traffic log: traffic.enabled is false")
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    try:
        rows = await asyncio.to_thread(usage, gateway.traffic, groups, since=since,
                                       until=until, tenant=tenant)
    except ValueError as exc:
        raise BadRequest(str(exc), param="group_by") from None
    return _json({"group_by": groups, "data": rows})


@delete("/users/{tenant:str}/{user:str}", status_code=200,
        guards=[needs("admin", platform=False)])
async def erase_user_data(tenant: str, user: str, request: Request[Any, Any, Any],
                          gateway: Gateway) -> Response[bytes]:
    """An erasure request: every traffic-log row of ``tenant``'s ``user`` (with its feedback
    and scores) and every cache entry kept for that user."""
    own_only(request, tenant)
    rows = 0
    if gateway.traffic is not None:
        rows = await asyncio.to_thread(erase_user, gateway.traffic, tenant, user)
    entries = await gateway.cache.purge(tenant, user) if gateway.cache is not None else 0
    await audited(request, "users.erase", f"{tenant}/{user}",
                  {"log_rows": rows, "cache_entries": entries})
    return _json({"tenant": tenant, "user": user, "log_rows": rows, "cache_entries": entries})


@get("/audit", guards=[needs("admin")])
async def audit_log(request: Request[Any, Any, Any], since: float | None = None,
                    actor: str | None = None, action: str | None = None,
                    after: int = 0, limit: int = 200, verify: bool = False
                    ) -> Response[bytes]:
    """Audit records oldest first (``action`` a prefix such as ``keys.``; page with
    ``after``, the last ``seq`` seen); ``verify=true`` adds the chain's check."""
    gov = await _auth(request).governance()
    rows = await asyncio.to_thread(gov.audit.records, since=since, actor=actor, action=action,
                                   after_seq=after, limit=min(max(limit, 1), 1000))
    out: dict[str, Any] = {"data": rows}
    if verify:
        out["verification"] = await asyncio.to_thread(gov.audit.verify)
    return _json(out)


GOVERNANCE_ROUTES = [list_keys, create_key, rotate_key, revoke_key, usage_report,
                     erase_user_data, audit_log]
