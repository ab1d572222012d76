"""The governance verbs: ``keys create|list|rotate|revoke`` and ``audit verify``.

They work on the stores the config names (``governance.dsn``), so they need no running gateway
and reach every replica that shares the store. Each change is written to the audit log with the
operating-system user as its actor.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time

from router.governance.keys import ROLES
from service.cli_loop import print_json

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h`` or ``30d`` in seconds; ``ValueError`` otherwise."""
    m = _DURATION.match(text.strip().lower())
    if m is None:
        raise ValueError(f"{text!r} is not a duration: give e.g. 90s, 15m, 12h or 30d")
    return float(m.group(1)) * _SECONDS[m.group(2)]


def _items(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _open(args: argparse.Namespace):
    from router.config import load_config
    from router.governance.stores import Governance
    from router.overlay import load_effective_config

    config = load_effective_config(args.config) if args.config else load_config()
    return Governance.open(config)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def cmd_keys_create(args: argparse.Namespace) -> int:
    import msgspec

    gov = _open(args)
    try:
        expires = time.time() + duration_s(args.expires_in) if args.expires_in else None
        key, presented = gov.keys.create(
            args.org, name=args.name or "", project=args.project, user_id=args.user,
            role=args.role, models=_items(args.models), routes=_items(args.routes),
            endpoints=_items(args.endpoints), ips=_items(args.ips), expires=expires)
        gov.audit.append(_actor(), "keys.create", target=key.id,
                         detail={"org": key.org, "role": key.role})
    finally:
        gov.close()
    if args.json:
        print_json({**msgspec.structs.asdict(key), "key": presented})
    else:
        print(presented)
        print(f"key {key.id} for {key.org} ({key.role}): shown once, store it now; only its "
              "hash is kept", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    gov = _open(args)
    try:
        keys = gov.keys.list(args.org, include_inactive=args.all)
    finally:
        gov.close()
    if args.json:
        print_json(keys)
        return 0
    now = time.time()
    print(f"{'id':<14}{'org':<16}{'role':<10}{'state':<9}{'name'}")
    for k in keys:
        print(f"{k.id:<14}{k.org:<16}{k.role:<10}{k.state(now):<9}{k.name}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    gov = _open(args)
    try:
        new, presented = gov.keys.rotate(args.id, overlap_s=duration_s(args.overlap))
        gov.audit.append(_actor(), "keys.rotate", target=args.id,
                         detail={"new": new.id, "overlap": args.overlap})
    finally:
        gov.close()
    print(presented)
    print(f"key {new.id} replaces {args.id}, which works {args.overlap} more: shown once",
          file=sys.stderr)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    gov = _open(args)
    try:
        key = gov.keys.revoke(args.id)
        gov.audit.append(_actor(), "keys.revoke", target=key.id)
    finally:
        gov.close()
    print(f"key {key.id} revoked")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    gov = _open(args)
    try:
        check = gov.audit.verify()
    finally:
        gov.close()
    if args.json:
        print_json(check)
    elif check.ok:
        print(f"audit log intact: {check.checked} records, head {check.head}")
    else:
        print(f"audit log BROKEN at record {check.first_bad}: {check.reason} "
              f"({check.checked} records intact before it)")
    return 0 if check.ok else 1


def add_governance_verbs(sub) -> None:
    """Register ``keys ...`` and ``audit verify`` on the CLI's subparsers."""
    keys = sub.add_parser("keys", help="API keys: create, list, rotate, revoke")
    kv = keys.add_subparsers(dest="what", required=True)
    s = kv.add_parser("create", help="a new key for an organisation (printed once)")
    s.add_argument("--org", required=True, help="the organisation (tenant) it belongs to")
    s.add_argument("--name", help="what it is for")
    s.add_argument("--project")
    s.add_argument("--user")
    s.add_argument("--role", default="member", choices=ROLES)
    s.add_argument("--models", help="comma-separated models it may use (default: all)")
    s.add_argument("--routes", help="comma-separated routes it may use (default: all)")
    s.add_argument("--endpoints", help="comma-separated paths, e.g. /v1/chat/completions")
    s.add_argument("--ips", help="comma-separated CIDRs it may call from (default: any)")
    s.add_argument("--expires-in", help="e.g. 30d, 12h (default: never)")
    s.set_defaults(func=cmd_keys_create)
    s = kv.add_parser("list", help="keys with their state")
    s.add_argument("--org")
    s.add_argument("--all", action="store_true", help="also revoked, expired, rotated out")
    s.set_defaults(func=cmd_keys_list)
    s = kv.add_parser("rotate", help="a new key replacing ID; ID works for --overlap more")
    s.add_argument("id")
    s.add_argument("--overlap", default="1h", help="e.g. 0, 10m, 1h (default 1h)")
    s.set_defaults(func=cmd_keys_rotate)
    s = kv.add_parser("revoke", help="end key ID now")
    s.add_argument("id")
    s.set_defaults(func=cmd_keys_revoke)
    for parser in kv.choices.values():
        parser.add_argument("--config")
        if "--json" not in parser._option_string_actions:
            parser.add_argument("--json", action="store_true")
    audit = sub.add_parser("audit", help="the audit log")
    av = audit.add_subparsers(dest="what", required=True)
    s = av.add_parser("verify", help="recompute the hash chain; exit 1 when it is broken")
    s.add_argument("--config")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_audit_verify)
