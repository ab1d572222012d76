"""Who a request comes from, as its credential says — never as its body or headers claim.

A ``Principal`` is what authentication yields (an API key, a JWT, the master key, or nothing
on an open loopback gateway): the tenant (organisation), project and user, the role, and the
scopes the credential carries. Everything downstream — limits, budgets, the cache's scope, the
traffic log — reads the tenant from here.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from router.governance.keys import ApiKey, Role

Via = Literal["key", "jwt", "master", "open"]
# What each role may do, cumulatively: a viewer reads usage and metrics; a member also calls
# the API; an operator also changes providers, routes and models; an admin everything.
RANK: dict[str, int] = {"viewer": 0, "member": 1, "operator": 2, "admin": 3}


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller of one request."""

    tenant: str
    via: Via
    role: Role = "member"
    project: str | None = None
    user: str | None = None
    credential: str | None = None  # the key id or the token's subject, for logs and audit
    models: frozenset[str] | None = None  # None: every model and route
    routes: frozenset[str] | None = None
    endpoints: frozenset[str] | None = None

    @classmethod
    def of_key(cls, key: ApiKey) -> Principal:
        """What an API key authenticates as."""
        return cls(tenant=key.org, via="key", role=key.role, project=key.project,
                   user=key.user_id, credential=key.id,
                   models=frozenset(key.models) if key.models is not None else None,
                   routes=frozenset(key.routes) if key.routes is not None else None,
                   endpoints=frozenset(key.endpoints) if key.endpoints is not None else None)

    def at_least(self, role: Role) -> bool:
        """Whether this caller's role includes ``role``'s rights."""
        return RANK[self.role] >= RANK[role]

    def may_call(self, endpoint: str) -> bool:
        """Whether the credential allows this endpoint (a path such as
        ``/v1/chat/completions``)."""
        return self.endpoints is None or endpoint in self.endpoints

    def may_name(self, target: str, routed: bool) -> bool:
        """Whether the credential allows naming ``target`` as a request's ``model``: a route
        (``routes``), or a catalog model pinned (``models``)."""
        if routed:
            return self.routes is None or target in self.routes
        return self.may_answer_with(target)

    def may_answer_with(self, model: str) -> bool:
        """Whether an answer of ``model`` may reach this caller (a route's choice, a cached
        answer, a fallback)."""
        return self.models is None or model in self.models


OPEN = Principal(tenant="default", via="open", role="admin")
MASTER = Principal(tenant="default", via="master", role="admin", credential="master")
