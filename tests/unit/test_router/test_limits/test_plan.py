"""Which buckets a request is charged to, from the rules and its caller."""

from __future__ import annotations

from router.config import BudgetRule, RateRule
from router.governance.principal import MASTER, Principal
from router.limits.plan import budgets_for, request_charges, token_charges

ADA = Principal(tenant="acme", via="key", credential="k1", user="ada", project="web")
RULES = [RateRule(scope="key", requests_per_minute=100, burst_per_second=5, concurrent=3),
         RateRule(scope="org", name="acme", requests_per_minute=1000, tokens_per_minute=50_000),
         RateRule(scope="org", name="globex", requests_per_minute=1),
         RateRule(scope="user", name="ada", tokens_per_minute=10_000),
         RateRule(scope="model", name="gpt-4o", requests_per_minute=50, tokens_per_minute=90_000)]


def test_the_guard_charges_the_callers_scopes_and_routing_the_models():
    charges, caps = request_charges(RULES, ADA)
    assert [(c.bucket, c.window_s, c.limit) for c in charges] == [
        ("key:k1:req", 60, 100), ("key:k1:burst", 1, 5), ("org:acme:req", 60, 1000)]
    assert caps == [("key:k1:conc", 3)]
    charges, caps = request_charges(RULES, ADA, model="gpt-4o")
    assert [c.bucket for c in charges] == ["model:gpt-4o:req"] and caps == []
    assert request_charges(RULES, ADA, model="gpt-4o-mini") == ([], [])
    tokens = token_charges(RULES, ADA, "gpt-4o", 1200)
    assert [(c.bucket, c.units) for c in tokens] == [
        ("org:acme:tok", 1200), ("user:acme/ada:tok", 1200), ("model:gpt-4o:tok", 1200)]


def test_a_caller_without_a_key_or_user_has_no_such_bucket():
    charges, caps = request_charges(RULES, MASTER)  # tenant "default": no key, no user
    assert charges == [] and caps == []


def test_budgets_per_scope():
    rules = [BudgetRule(scope="org", usd=100), BudgetRule(scope="project", name="web", usd=5,
                                                          period="day"),
             BudgetRule(scope="user", name="bob", usd=1)]
    assert [(b.bucket, b.period, b.limit_usd) for b in budgets_for(rules, ADA)] == [
        ("org:acme", "month", 100), ("project:acme/web", "day", 5)]
