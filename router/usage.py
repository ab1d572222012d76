"""Usage and spend from the traffic log, and what the log forgets: a user's erasure, and rows
older than the retention period.

``usage`` groups the log's rows by any of tenant, user, project, model, key and day (UTC) and
sums requests, tokens and cost — what a usage dashboard and ``GET /admin/usage`` read. Cache
hits count as requests at no cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from router.traffic import TrafficLog

Group = Literal["tenant", "user", "project", "model", "key", "day"]
GROUPS: tuple[Group, ...] = ("tenant", "user", "project", "model", "key", "day")
_COLUMN = {"tenant": "tenant", "user": "user_id", "project": "project", "model": "model",
           "key": "credential"}


def _day(kind: str) -> str:
    if kind == "sqlite":
        return "strftime('%Y-%m-%d', ts, 'unixepoch')"
    return "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def usage(log: TrafficLog, group_by: Sequence[Group], *, since: float | None = None,
          until: float | None = None, tenant: str | None = None) -> list[dict[str, object]]:
    """One row per group: the group's values, ``requests``, ``errors``, ``cache_hits``,
    ``input_tokens``, ``output_tokens`` and ``cost_usd``, biggest spend first."""
    bad = [g for g in group_by if g not in GROUPS]
    if bad:
        raise ValueError(f"group_by {bad}: use any of {', '.join(GROUPS)}")
    columns = [_day(log.kind) if g == "day" else _COLUMN[g] for g in group_by]
    where, params = ["1 = 1"], []
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if until is not None:
        where.append("ts < ?")
        params.append(until)
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    select = ", ".join([*(f"{c} AS g{i}" for i, c in enumerate(columns)),
                        "COUNT(*)", "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END)",
                        "SUM(CASE WHEN cache LIKE 'hit%' THEN 1 ELSE 0 END)",
                        "COALESCE(SUM(input_tokens), 0)", "COALESCE(SUM(output_tokens), 0)",
                        "COALESCE(SUM(cost_usd), 0)"])
    group = f" GROUP BY {', '.join(f'g{i}' for i in range(len(columns)))}" if columns else ""
    rows = log.read(f"SELECT {select} FROM requests WHERE {' AND '.join(where)}{group} "
                    f"ORDER BY {len(columns) + 6} DESC", params)  # the cost column
    out = []
    for row in rows:
        n = len(columns)
        out.append({**{g: row[i] for i, g in enumerate(group_by)},
                    "requests": int(row[n]), "errors": int(row[n + 1] or 0),
                    "cache_hits": int(row[n + 2] or 0), "input_tokens": int(row[n + 3]),
                    "output_tokens": int(row[n + 4]), "cost_usd": float(row[n + 5])})
    return out


def erase_user(log: TrafficLog, tenant: str, user: str) -> int:
    """Delete every row of ``tenant``'s ``user`` (and the feedback and scores on them): an
    erasure request. How many requests went."""
    match = "SELECT id FROM requests WHERE tenant = ? AND user_id = ?"
    log.delete(f"DELETE FROM feedback WHERE request_id IN ({match})", [tenant, user])
    log.delete(f"DELETE FROM scores WHERE request_id IN ({match})", [tenant, user])
    return log.delete("DELETE FROM requests WHERE tenant = ? AND user_id = ?", [tenant, user])


def expire(log: TrafficLog, before: float) -> int:
    """Delete rows (and their feedback and scores) older than ``before``; how many."""
    log.delete("DELETE FROM feedback WHERE request_id IN "
               "(SELECT id FROM requests WHERE ts < ?)", [before])
    log.delete("DELETE FROM scores WHERE request_id IN (SELECT id FROM requests WHERE ts < ?)",
               [before])
    return log.delete("DELETE FROM requests WHERE ts < ?", [before])
