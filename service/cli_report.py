"""``contextforge report [--since T] [--tenant T] --out DIR``: a usage report of the traffic
log the config names (or ``--logs DSN``), written by ``eval.report``. ``service.cli`` adds the
verb; heavy imports (matplotlib) happen when it runs."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from router.secrets import mask_url
from service.cli_governance import duration_s

_SPAN = re.compile(r"^\s*\d+(?:\.\d+)?\s*[smhd]\s*$", re.IGNORECASE)


def parse_when(text: str | None, now: float, flag: str) -> float | None:
    """``--since``/``--until``: a span back from ``now`` (``7d``, ``12h``, ``30m``) or an ISO
    8601 date or time (UTC unless it says), as a Unix time."""
    from training.from_logs import parse_since

    if text is None:
        return None
    if _SPAN.match(text):
        return now - duration_s(text)
    try:
        return parse_since(text)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give an ISO 8601 date or time (2026-12-01, "
                         "2026-12-01T08:00:00+00:00) or a span back from now (7d, 12h, "
                         "30m)") from None


def _shown(dsn: str) -> str:
    """A DSN as the report prints it: credentials masked, connection options left out."""
    return mask_url(dsn).split("?", 1)[0]


def _open_log(dsn: str, base_dir: Path):
    """The traffic log and how the report names it (a file's full path; a database without
    its password), refusing a SQLite file that is not there (opening would create an empty
    one) and a PostgreSQL server that does not answer, with one clear line each."""
    from router.traffic import TrafficLog, sqlite_path

    if dsn.startswith("sqlite:"):
        path = sqlite_path(dsn, base_dir)
        if not path.is_file():
            raise FileNotFoundError(f"traffic log {path}: no such file")
        return TrafficLog(dsn, base_dir=base_dir), f"sqlite:///{path.resolve()}"
    try:
        return TrafficLog(dsn, base_dir=base_dir), _shown(dsn)
    except ValueError:
        raise
    except Exception as exc:  # psycopg's OperationalError and kin: the server did not answer
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise ValueError(f"traffic log {_shown(dsn)}: cannot open: {first}") from exc


def _budgets(config):
    """``tenant -> its monthly budget (USD)`` from ``limits.budgets``' org rules: the
    smallest of those naming it or ``*``, as the gateway enforces them (every rule that
    applies charges the same bucket, so the smallest refuses first)."""
    rules = [b for b in config.limits.budgets if b.scope == "org" and b.period == "month"]

    def budget(tenant: str | None) -> float | None:
        usd = [b.usd for b in rules if b.name in (tenant or "", "*")]
        return min(usd) if usd else None

    return budget


def cmd_report(args: argparse.Namespace) -> int:
    from eval.report import write_report
    from eval.report_data import Window

    now = time.time()
    until = parse_when(args.until, now, "--until")
    until = now if until is None else until
    since = parse_when(args.since, until, "--since")
    if since is not None and since >= until:
        raise ValueError("--since must be before --until (or now)")
    budget_for = None
    if args.logs and not args.config:
        dsn, base = args.logs, Path.cwd()
    else:
        from router.overlay import load_effective_config

        config = load_effective_config(args.config)
        budget_for = _budgets(config)
        dsn = args.logs or config.traffic.dsn
        base = Path.cwd() if args.logs else config.resolve(".")
    log, source = _open_log(dsn, base)
    try:
        written = write_report(log, Window(until=until, since=since, tenant=args.tenant),
                               Path(args.out), source=source, budget_for=budget_for)
    finally:
        log.close()
    print(f"{written['report.md']}: usage report with {len(written) - 1} plots", file=sys.stderr)
    for path in written.values():
        print(path)
    return 0


def add_report_verb(sub) -> None:
    """The ``report`` verb on ``contextforge``'s subcommands."""
    s = sub.add_parser("report", help="a usage report of the traffic log: Markdown and PNG "
                       "plots (spend, tokens, models, users, projects, quality, A/B arms, "
                       "each tenant's spend forecast for the month)")
    s.add_argument("--since", help="from this date or time (ISO 8601, UTC unless it says) or "
                   "span back (7d, 12h); default: the log's start")
    s.add_argument("--until", help="up to this date or time, or span back; also the "
                   "forecast's 'now' (default: now)")
    s.add_argument("--tenant", help="only this tenant's requests (every table and the forecast)")
    s.add_argument("--out", required=True, help="folder for report.md and its plots")
    s.add_argument("--config", help="the config whose traffic.dsn is read, and whose monthly "
                   "org budgets are shown beside the forecasts (default: contextforge.yaml)")
    s.add_argument("--logs", metavar="DSN", help="read this traffic log instead of the "
                   "config's (sqlite:///PATH or postgresql://...)")
    s.set_defaults(func=cmd_report)
