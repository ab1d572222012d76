"""The guard stage: what the caller may use, and how often — before anything else is spent.

The caller (``Exchange.principal``, from its credential: ``service.auth``) speaks for its own
user when the credential names one (the body's ``user`` is replaced), may name only the
routes and models its credential allows, and its key, user, project and organisation's
request limits, per-second bursts and concurrency caps (``limits.rules``) must have room.
A refusal is a 403 or a 429 with ``Retry-After``; an admitted request carries the
``x-ratelimit-*`` headers of its tightest request limit. The concurrency slots are given back
when the request ends (a stream: when it ends). The model's own limits, tokens and the budget
come after routing (``service.stages.reserve``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from router.engine import UnknownTarget
from router.limits.plan import request_charges
from router.wire.openai import ChatRequest
from service.auth import Forbidden
from service.pipeline import Exchange
from service.stages.headers import rate_headers

if TYPE_CHECKING:
    from service.gateway import Gateway


class Guard:
    name = "guard"
    kinds = frozenset({"chat", "embeddings"})

    async def enter(self, ex: Exchange, gw: Gateway) -> None:
        principal = ex.principal
        if principal.user is not None and getattr(ex.request, "user", None) != principal.user:
            # A credential bound to a user speaks for that user only: the body cannot claim
            # another (the cache's per-user scope, the log and the limits read this field).
            ex.request = msgspec.structs.replace(ex.request, user=principal.user)
        if isinstance(ex.request, ChatRequest):
            try:
                target = gw.engine.target(ex.request.model)
            except UnknownTarget:
                target = None  # the route stage says what is wrong with it
            if target is not None:
                routed = target in gw.engine.routes
                if not principal.may_name(target, routed):
                    raise Forbidden(f"this credential may not use {'route' if routed else 'model'}"
                                    f" {target!r}", param="model")
        limits = gw.limits
        if limits is None:
            return
        charges, caps = request_charges(limits.config.rules, principal)
        if caps:
            lease = gw.config.server.upstream_timeout_s * 3 + 60  # a dead replica's slots lapse
            await limits.acquire(ex.id, caps, lease)
            ex.slots = caps
        if charges:
            try:
                admission = await limits.admit(ex.id, charges)
            except BaseException:
                if caps:
                    await limits.release(ex.id, caps)
                    ex.slots = []
                raise
            ex.headers.update(rate_headers(charges, admission, "requests"))

    def leave(self, ex: Exchange, gw: Gateway) -> None:
        if ex.slots and gw.limits is not None:
            gw.spawn(gw.limits.release(ex.id, ex.slots))
            ex.slots = []
