"""Which limits and budgets one request is charged to: the config's rules read for its caller.

A rule names a scope (key, user, project, organisation, model) and either one name or ``*``
(each of them separately). The caller's values come from its principal (the credential), the
model from the routing decision, so the buckets are:

- before routing (the guard): requests per minute, the per-second burst and the concurrency
  caps of the caller's key, user, project and organisation;
- after routing (once the model and the prompt's size are known): the same for the model,
  tokens per minute on every scope, and the budgets.
"""

from __future__ import annotations

from router.config import BudgetRule, RateRule
from router.governance.principal import Principal
from router.limits.budgets import Budget
from router.limits.concurrency import Cap
from router.limits.windows import Charge

MINUTE, SECOND = 60.0, 1.0


def scope_value(scope: str, principal: Principal, model: str | None) -> str | None:
    """The caller's (or the model's) name in ``scope``; None when it has none there (a
    master-key caller has no key id; a key without a user has no user)."""
    if scope == "key":
        return principal.credential if principal.via == "key" else None
    if scope == "user":
        return f"{principal.tenant}/{principal.user}" if principal.user else None
    if scope == "project":
        return f"{principal.tenant}/{principal.project}" if principal.project else None
    if scope == "org":
        return principal.tenant
    return model


def _matches(rule_name: str, scope: str, value: str) -> bool:
    if rule_name == "*":
        return True
    # user and project rules name them as the tenant sees them (without the tenant prefix)
    short = value.split("/", 1)[1] if scope in ("user", "project") else value
    return rule_name in (value, short)


def applicable(rules: list[RateRule], principal: Principal, model: str | None
               ) -> list[tuple[RateRule, str]]:
    """``(rule, bucket name)`` for every rule that applies to this caller (and ``model``: rules
    on the model apply once it is known)."""
    out = []
    for rule in rules:
        value = scope_value(rule.scope, principal, model)
        if value is not None and _matches(rule.name, rule.scope, value):
            out.append((rule, f"{rule.scope}:{value}"))
    return out


def request_charges(rules: list[RateRule], principal: Principal, model: str | None = None
                    ) -> tuple[list[Charge], list[Cap]]:
    """Request-count windows and concurrency caps: the caller's scopes without ``model``
    (the guard, before routing), the model's alone with it (after routing)."""
    charges, caps = [], []
    for rule, bucket in applicable(rules, principal, model):
        if (rule.scope == "model") != (model is not None):
            continue
        if rule.requests_per_minute is not None:
            charges.append(Charge(f"{bucket}:req", MINUTE, rule.requests_per_minute, 1))
        if rule.burst_per_second is not None:
            charges.append(Charge(f"{bucket}:burst", SECOND, rule.burst_per_second, 1))
        if rule.concurrent is not None:
            caps.append((f"{bucket}:conc", rule.concurrent))
    return charges, caps


def token_charges(rules: list[RateRule], principal: Principal, model: str,
                  tokens: float) -> list[Charge]:
    """Tokens-per-minute windows on every scope, charged ``tokens`` (input + most output)."""
    return [Charge(f"{bucket}:tok", MINUTE, rule.tokens_per_minute, tokens)
            for rule, bucket in applicable(rules, principal, model)
            if rule.tokens_per_minute is not None]


def budgets_for(rules: list[BudgetRule], principal: Principal) -> list[Budget]:
    """The budgets the caller spends from."""
    out = []
    for rule in rules:
        value = scope_value(rule.scope, principal, None)
        if value is not None and _matches(rule.name, rule.scope, value):
            out.append(Budget(f"{rule.scope}:{value}", rule.period, rule.usd))
    return out
