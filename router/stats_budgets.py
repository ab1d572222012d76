"""Budgets' burn-down for the dashboard: each budget of ``limits.budgets``, what its period has
spent so far (from the traffic log), what remains over time, and a linear projection to the
period's end.

A rule named ``*`` is a budget per key, user, project or organisation: each one that spent in
the period is shown (the biggest ``PER_RULE``). Spend is the settled cost the traffic log
records, which is what budgets count; reservations of requests still in flight are not in it.
A user's budget is matched on the log's ``user_id`` (the request's ``user`` field), a
project's on the key's project. Blocking: call it in a worker thread. A month's chart would
scan the month at every refresh; with a ``memo`` the buckets that are over are read once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from router.config import BudgetRule
from router.traffic import TrafficLog

PER_RULE = 10
_COLUMN = {"org": "tenant", "project": "project", "user": "user_id", "key": "credential"}
TOTAL_LOOKBACK_S = 30 * 86400  # a "total" budget's chart shows its last 30 days
# A bucket this long over is settled: rows other replicas commit late have arrived.
SETTLE_S = 120.0


def period_bounds(period: str, now: float) -> tuple[float | None, float | None]:
    """The UTC calendar period ``now`` falls in as (start, end); (None, None) for ``total``."""
    if period == "total":
        return None, None
    day = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = day.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.timestamp(), start.timestamp() + 86400
    start = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start.replace(year=start.year + 1, month=1) if start.month == 12
           else start.replace(month=start.month + 1))
    return start.timestamp(), end.timestamp()


def _bucket(kind: str) -> str:
    if kind == "sqlite":
        return "CAST((ts - ?) / ? AS INTEGER)"
    return "FLOOR((ts - ?) / ?)::bigint"


def _match(rule: BudgetRule, tenant: str | None) -> tuple[list[str], list[Any]]:
    """The WHERE terms (and parameters) of the rows this rule's budgets count."""
    column = _COLUMN[rule.scope]
    where, params = [f"{column} IS NOT NULL"], []
    if rule.name != "*":
        owner, _sep, short = rule.name.rpartition("/")
        if owner and rule.scope in ("project", "user"):  # "acme/web": acme's project web
            where.append("tenant = ?")
            params.append(owner)
        where.append(f"{column} = ?")
        params.append(short if rule.scope in ("project", "user") else rule.name)
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    return where, params


def _rule_rows(log: TrafficLog, rule: BudgetRule, start: float, step: int, now: float,
               tenant: str | None, since: float) -> list[tuple]:
    """(bucket index from ``start``, tenant, name, USD) of the rule's rows in [since, now)."""
    column = _COLUMN[rule.scope]
    where, params = _match(rule, tenant)
    return log.read(f"SELECT {_bucket(log.kind)} AS b, tenant, {column}, "
                    f"COALESCE(SUM(cost_usd), 0) FROM requests WHERE ts >= ? AND ts < ? AND "
                    f"{' AND '.join(where)} GROUP BY b, tenant, {column}",
                    [start, step, since, now, *params], flush=False)


def _before(log: TrafficLog, rule: BudgetRule, start: float, tenant: str | None
            ) -> dict[str, float]:
    """A total budget's spend before its chart starts, per bucket name."""
    column = _COLUMN[rule.scope]
    where, params = _match(rule, tenant)
    rows = log.read(f"SELECT tenant, {column}, COALESCE(SUM(cost_usd), 0) FROM requests "
                    f"WHERE ts < ? AND {' AND '.join(where)} GROUP BY tenant, {column}",
                    [start, *params], flush=False)
    return {_name(rule, t, v): float(usd) for t, v, usd in rows}


def _name(rule: BudgetRule, tenant: str | None, value: str) -> str:
    """The budget's bucket as ``router.limits.plan`` names it (``project:acme/web``)."""
    if rule.scope in ("project", "user"):
        return f"{rule.scope}:{tenant}/{value}"
    return f"{rule.scope}:{value}"


@dataclass(frozen=True, slots=True)
class _Settled:
    """A chart's buckets that are over: ``done`` of them, per budget, and a total budget's
    spend before the chart."""

    done: int
    per_bucket: dict[str, list[float]]
    base: dict[str, float]


Memo = dict[Any, _Settled]


def _spend(log: TrafficLog, rule: BudgetRule, chart_start: float, step: int, n: int,
           now: float, tenant: str | None, memo: Memo | None
           ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per budget, its spend per bucket of the chart; and before it (a total budget). Buckets
    over for ``SETTLE_S`` are kept in ``memo`` and not read again: a month's chart reads
    today's rows, not the month's, at every refresh."""
    key = (rule, tenant, chart_start, step)
    kept = memo.get(key) if memo is not None else None
    done = kept.done if kept is not None else 0
    per_bucket = ({k: [*v, *[0.0] * (n - done)] for k, v in kept.per_bucket.items()}
                  if kept is not None else {})
    for b, t, value, usd in _rule_rows(log, rule, chart_start, step, now, tenant,
                                       since=chart_start + done * step):
        per_bucket.setdefault(_name(rule, t, value), [0.0] * n)[min(int(b), n - 1)] += usd
    base: dict[str, float] = {}
    if rule.period == "total":
        base = kept.base if kept is not None else _before(log, rule, chart_start, tenant)
    if memo is not None:
        settled = max(0, min(n, int((now - SETTLE_S - chart_start) // step)))
        if len(memo) > 256:  # charts of periods gone by
            memo.clear()
        memo[key] = _Settled(settled, {k: v[:settled] for k, v in per_bucket.items()}, base)
    return per_bucket, base


def burndown(log: TrafficLog, rules: Sequence[BudgetRule], *, now: float,
             tenant: str | None = None, memo: Memo | None = None) -> list[dict[str, Any]]:
    """One entry per budget (bucket): ``bucket``, ``scope``, ``period``, ``limit_usd``,
    ``spent_usd``, ``remaining_usd``, ``used_share``, ``projected_usd`` (the period's spend if
    it goes on at its pace so far; null for a total budget) and ``series`` (``t``,
    ``remaining_usd``) over the period. The log should be flushed first. ``memo``: a dict
    kept between calls, so past buckets are read once."""
    out: list[dict[str, Any]] = []
    for rule in rules:
        start, end = period_bounds(rule.period, now)
        chart_start = start if start is not None else now - TOTAL_LOOKBACK_S
        if start is None:  # whole days, so a total budget's chart (and its memo) holds still
            chart_start -= chart_start % 86400
        step = 3600 if rule.period == "day" else 86400
        n = max(1, math.ceil((now - chart_start) / step))
        per_bucket, base = _spend(log, rule, chart_start, step, n, now, tenant, memo)
        for name in base:  # a total budget that spent only before the chart starts
            per_bucket.setdefault(name, [0.0] * n)
        if not per_bucket and rule.name != "*" and _may_see(rule, tenant):
            per_bucket[f"{rule.scope}:{rule.name}"] = [0.0] * n  # named, nothing spent yet
        biggest = sorted(per_bucket, key=lambda k: -(sum(per_bucket[k]) + base.get(k, 0)))
        for bucket in biggest[:PER_RULE]:
            spent, remaining = base.get(bucket, 0.0), []
            for usd in per_bucket[bucket]:
                spent += usd
                remaining.append(round(rule.usd - spent, 8))
            projected = None
            if start is not None and end is not None and now > start:
                projected = round(spent * (end - start) / (now - start), 8)
            out.append({"bucket": bucket, "scope": rule.scope, "period": rule.period,
                        "limit_usd": rule.usd, "spent_usd": round(spent, 8),
                        "remaining_usd": round(rule.usd - spent, 8),
                        "used_share": round(spent / rule.usd, 4), "projected_usd": projected,
                        "series": {"t": [chart_start + i * step for i in range(n)],
                                   "remaining_usd": remaining}})
    return out


def _may_see(rule: BudgetRule, tenant: str | None) -> bool:
    """Whether a view of ``tenant`` (None: every tenant) may show this named budget: another
    organisation's budget, or its projects', users' or keys', is not this tenant's business.
    A project or user rule without a tenant prefix applies to every tenant."""
    if tenant is None:
        return True
    if rule.scope == "org":
        return rule.name == tenant
    if rule.scope in ("project", "user"):
        owner, slash, _ = rule.name.partition("/")
        return not slash or owner == tenant
    return False  # a key's or another scope's name says nothing of whose it is
