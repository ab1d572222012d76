"""API keys: created once and shown once, stored only as a keyed hash, identified by a prefix.

A key reads ``cf_<id>_<secret>``: ``id`` (12 base32 characters) names the key in lists, logs
and the audit trail; ``secret`` (256 random bits) is never stored. The database keeps
HMAC-SHA256(server secret, key): a stolen database does not give working keys, nor can its
hashes be checked offline without the server secret (``CONTEXTFORGE_KEY_SECRET``). Checking a
presented key compares hashes in constant time, and computes the hash even for an unknown id,
so timing tells nothing about which ids exist.

Each key belongs to an organisation (the tenant), optionally a project and a user, has a role
(``admin``, ``operator``, ``member``, ``viewer``), optional scopes (the models, routes and
endpoints it may use; None is all), an optional expiry and IP allowlist. Rotation issues a new
key with the same attributes and keeps the old one valid for an overlap window; revocation ends
a key at once (on other replicas within a second: the service's key cache is invalidated).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Literal

import msgspec

from router.governance.db import Database
from router.governance.networks import parse_network

Role = Literal["admin", "operator", "member", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "operator", "member", "viewer")
PREFIX = "cf_"
ID_CHARS = 12
COMPONENT = "keys"
MIGRATIONS = [
    (1, ["CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL, "
         "name TEXT NOT NULL, org TEXT NOT NULL, project TEXT, user_id TEXT, role TEXT NOT NULL, "
         "models {json}, routes {json}, endpoints {json}, ips {json}, created {float} NOT NULL, "
         "expires {float}, revoked {float}, replaced_by TEXT, grace_until {float})",
         "CREATE INDEX IF NOT EXISTS api_keys_org ON api_keys (org)"]),
]
_FIELDS = ("id", "name", "org", "project", "user_id", "role", "models", "routes", "endpoints",
           "ips", "created", "expires", "revoked", "replaced_by", "grace_until")
_LISTS = ("models", "routes", "endpoints", "ips")


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """What is known of a key (never its secret)."""

    id: str
    name: str
    org: str
    project: str | None = None
    user_id: str | None = None
    role: Role = "member"
    models: list[str] | None = None  # allowed catalog models and routes; None: all
    routes: list[str] | None = None
    endpoints: list[str] | None = None  # e.g. ["/v1/chat/completions"]; None: all
    ips: list[str] | None = None  # CIDR allowlist; None: anywhere
    created: float
    expires: float | None = None
    revoked: float | None = None
    replaced_by: str | None = None  # rotated: the key that replaced it
    grace_until: float | None = None  # rotated: it keeps working until then

    def state(self, now: float) -> str:
        """``active``, or why the key no longer works: ``revoked``, ``expired``,
        ``rotated``."""
        if self.revoked is not None and self.revoked <= now:
            return "revoked"
        if self.expires is not None and self.expires <= now:
            return "expired"
        if self.grace_until is not None and self.grace_until <= now:
            return "rotated"
        return "active"


class KeyRejected(Exception):
    """A presented key that does not authenticate; ``reason`` is for the audit log, not the
    client (``malformed``, ``unknown``, ``wrong``, ``revoked``, ``expired``, ``rotated``)."""

    def __init__(self, reason: str, key_id: str | None = None):
        super().__init__(reason)
        self.reason, self.key_id = reason, key_id


def split_key(presented: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    if not presented.startswith(PREFIX) or len(presented) < len(PREFIX) + ID_CHARS + 2:
        return None
    key_id = presented[len(PREFIX):len(PREFIX) + ID_CHARS]
    if presented[len(PREFIX) + ID_CHARS] != "_":
        return None
    return key_id, presented[len(PREFIX) + ID_CHARS + 1:]


def _new_id() -> str:
    return base64.b32encode(os.urandom(10)).decode().lower()[:ID_CHARS]


class KeyStore:
    """Keys in ``db``; ``secret`` keys the stored hashes (the same on every replica)."""

    def __init__(self, db: Database, secret: bytes, clock=time.time):
        if len(secret) < 16:
            raise ValueError("the key-hash secret must be at least 16 bytes")
        self.db, self._secret, self._clock = db, secret, clock
        db.migrate(COMPONENT, MIGRATIONS)

    def _hash(self, presented: str) -> str:
        return hmac.new(self._secret, presented.encode(), hashlib.sha256).hexdigest()

    def create(self, org: str, *, name: str = "", project: str | None = None,
               user_id: str | None = None, role: Role = "member",
               models: list[str] | None = None, routes: list[str] | None = None,
               endpoints: list[str] | None = None, ips: list[str] | None = None,
               expires: float | None = None) -> tuple[ApiKey, str]:
        """A new key and its secret string (shown once: only its hash is kept)."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
        if not org:
            raise ValueError("a key belongs to an organisation: give org")
        for i, entry in enumerate(ips or ()):
            try:  # host bits allowed, as they always were for keys
                parse_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"ips[{i}]: {exc}") from None
        key = ApiKey(id=_new_id(), name=name, org=org, project=project, user_id=user_id,
                     role=role, models=models, routes=routes, endpoints=endpoints, ips=ips,
                     created=self._clock(), expires=expires)
        presented = f"{PREFIX}{key.id}_{base64.urlsafe_b64encode(os.urandom(32)).decode()}"
        with self.db.transaction() as cur:
            self._insert(cur, key, self._hash(presented))
        return key, presented

    def _insert(self, cur, key: ApiKey, digest: str) -> None:
        values = [getattr(key, f) for f in _FIELDS]
        values = [json.dumps(v) if f in _LISTS and v is not None else v
                  for f, v in zip(_FIELDS, values, strict=True)]
        cur.execute(f"INSERT INTO api_keys (hash, {', '.join(_FIELDS)}) VALUES "
                    f"(?, {', '.join('?' * len(_FIELDS))})", [digest, *values])

    @staticmethod
    def _row(row) -> ApiKey:
        fields = dict(zip(_FIELDS, row, strict=True))
        for f in _LISTS:
            if fields[f] is not None:
                fields[f] = json.loads(fields[f])
        return ApiKey(**fields)

    def get(self, key_id: str) -> ApiKey | None:
        rows = self.db.query(f"SELECT {', '.join(_FIELDS)} FROM api_keys WHERE id = ?",
                             [key_id])
        return self._row(rows[0]) if rows else None

    def list(self, org: str | None = None, *, include_inactive: bool = False) -> list[ApiKey]:
        """Keys (of ``org``), oldest first; revoked, expired and rotated-out ones only with
        ``include_inactive``."""
        where, params = ("WHERE org = ?", [org]) if org is not None else ("", [])
        rows = self.db.query(f"SELECT {', '.join(_FIELDS)} FROM api_keys {where} "
                             "ORDER BY created, id", params)
        keys, now = [self._row(r) for r in rows], self._clock()
        return keys if include_inactive else [k for k in keys if k.state(now) == "active"]

    def verify(self, presented: str) -> ApiKey:
        """The key ``presented`` is, if it works now; ``KeyRejected`` saying why not."""
        parts = split_key(presented)
        digest = self._hash(presented)  # computed for unknown ids too: same time either way
        if parts is None:
            raise KeyRejected("malformed")
        rows = self.db.query(f"SELECT hash, {', '.join(_FIELDS)} FROM api_keys WHERE id = ?",
                             [parts[0]])
        stored = rows[0][0] if rows else "0" * 64
        if not hmac.compare_digest(digest, stored) or not rows:
            raise KeyRejected("wrong" if rows else "unknown", parts[0])
        key = self._row(rows[0][1:])
        state = key.state(self._clock())
        if state != "active":
            raise KeyRejected(state, key.id)
        return key

    def rotate(self, key_id: str, overlap_s: float = 3600.0) -> tuple[ApiKey, str]:
        """A new key with ``key_id``'s attributes; the old one works ``overlap_s`` more
        (0: it stops at once)."""
        old = self.get(key_id)
        if old is None or old.state(self._clock()) != "active":
            raise KeyError(f"no active key {key_id!r}")
        now = self._clock()
        new = msgspec.structs.replace(old, id=_new_id(), created=now, replaced_by=None,
                                      grace_until=None)
        presented = f"{PREFIX}{new.id}_{base64.urlsafe_b64encode(os.urandom(32)).decode()}"
        with self.db.transaction() as cur:
            self._insert(cur, new, self._hash(presented))
            cur.execute("UPDATE api_keys SET replaced_by = ?, grace_until = ? WHERE id = ?",
                        [new.id, now + overlap_s, key_id])
        return new, presented

    def revoke(self, key_id: str) -> ApiKey:
        """End ``key_id`` now; ``KeyError`` when there is no such key."""
        with self.db.transaction() as cur:  # a second revocation keeps the first time
            cur.execute("UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                        [self._clock(), key_id])
        key = self.get(key_id)
        if key is None:
            raise KeyError(f"no key {key_id!r}")
        return key
