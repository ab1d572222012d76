"""Keys, scopes, rate limits and budgets through the gateway (in-process backend)."""

from __future__ import annotations

import msgspec
import pytest
from litestar.testing import TestClient

from router.config import GovernanceConfig, LimitsConfig, load_config
from router.governance.stores import Governance
from router.traffic import TrafficLog
from service.app import create_app

ASK = {"model": "auto", "messages": [{"role": "user", "content": "Name three prime numbers."}]}




def configured(tmp_path, *, limits: LimitsConfig | None = None, host: str = "127.0.0.1",
               key_cache_s: float = 1.0):
    cfg = load_config()
    return msgspec.structs.replace(
        cfg, traffic=msgspec.structs.replace(cfg.traffic,
                                             dsn=f"sqlite:///{tmp_path / 't.sqlite3'}"),
        governance=GovernanceConfig(dsn=f"sqlite:///{tmp_path / 'g.sqlite3'}",
                                    key_cache_s=key_cache_s),
        limits=limits or LimitsConfig(),
        server=msgspec.structs.replace(cfg.server, host=host, master_key="master-key"))


def new_key(cfg, org="acme", **kw) -> tuple[str, str]:
    gov = Governance.open(cfg)
    try:
        key, presented = gov.keys.create(org, **kw)
        return key.id, presented
    finally:
        gov.close()


def logged(tmp_path) -> list:
    log = TrafficLog(f"sqlite:///{tmp_path / 't.sqlite3'}")
    try:
        return log.records()
    finally:
        log.close()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_the_tenant_comes_from_the_key_never_from_the_request(tmp_path, engine, secret):
    cfg = configured(tmp_path, host="0.0.0.0")
    _, key = new_key(cfg, org="acme", user_id="ada")
    with TestClient(create_app(cfg, engine=engine)) as c:
        ok = c.post("/v1/chat/completions", json={**ASK, "user": "mallory"},
                    headers={**bearer(key), "x-tenant": "globex"})
        anonymous = c.post("/v1/chat/completions", json=ASK)
        wrong = c.post("/v1/chat/completions", json=ASK, headers=bearer(key[:-2] + "xx"))
        forged = c.post("/v1/chat/completions", json=ASK,
                        headers=bearer("cf_" + "a" * 12 + "_" + key.split("_", 2)[2]))
    assert ok.status_code == 200
    assert anonymous.status_code == 401 and wrong.status_code == 401 and forged.status_code == 401
    (row,) = logged(tmp_path)
    assert row.tenant == "acme"
    gov = Governance.open(cfg)
    try:  # failed attempts are audited (one a second per address)
        assert [r.action for r in gov.audit.records()] == ["auth.failed"]
    finally:
        gov.close()


def test_a_revoked_key_stops_working_within_the_key_cache_time(tmp_path, engine, secret):
    cfg = configured(tmp_path, key_cache_s=0.0)
    key_id, key = new_key(cfg)
    with TestClient(create_app(cfg, engine=engine)) as c:
        assert c.post("/v1/chat/completions", json=ASK, headers=bearer(key)).status_code == 200
        gov = Governance.open(cfg)  # another process (the CLI, another replica) revokes it
        gov.keys.revoke(key_id)
        gov.close()
        after = c.post("/v1/chat/completions", json=ASK, headers=bearer(key))
    assert after.status_code == 401 and after.json()["error"]["code"] == "invalid_api_key"


def test_scopes_limit_models_routes_and_endpoints(tmp_path, engine, secret):
    cfg = configured(tmp_path)
    _, mini = new_key(cfg, models=["gpt-4o-mini"], routes=["auto"])
    _, embed_only = new_key(cfg, endpoints=["/v1/embeddings"])
    with TestClient(create_app(cfg, engine=engine)) as c:
        pinned = c.post("/v1/chat/completions", json={**ASK, "model": "gpt-4o"},
                        headers=bearer(mini))
        other_route = c.post("/v1/chat/completions", json={**ASK, "model": "quality-first"},
                             headers=bearer(mini))
        routed = c.post("/v1/chat/completions", json=ASK, headers=bearer(mini))
        chat = c.post("/v1/chat/completions", json=ASK, headers=bearer(embed_only))
    assert pinned.status_code == 403 and pinned.json()["error"]["param"] == "model"
    assert other_route.status_code == 403
    assert routed.status_code == 200 and routed.headers["x-contextforge-model"] == "gpt-4o-mini"
    assert chat.status_code == 403


def test_a_cached_answer_never_reaches_a_key_that_may_not_use_its_model(tmp_path, engine,
                                                                          secret):
    from router.config import CacheConfig

    cfg = msgspec.structs.replace(configured(tmp_path), cache=CacheConfig(enabled=True))
    _, wide = new_key(cfg)
    _, narrow = new_key(cfg, models=["gpt-4o-mini"])
    pinned = {**ASK, "model": "gpt-4o", "temperature": 0}
    routed = {**ASK, "temperature": 0}
    with TestClient(create_app(cfg, engine=engine)) as c:
        made = c.post("/v1/chat/completions", json=routed, headers=bearer(wide))
        c.post("/v1/chat/completions", json=pinned, headers=bearer(wide))
        again = c.post("/v1/chat/completions", json=routed, headers=bearer(narrow))
    assert made.headers["x-contextforge-model"] != "gpt-4o-mini"  # the route chose another
    assert again.headers["x-contextforge-cache"] == "miss"
    assert again.headers["x-contextforge-model"] == "gpt-4o-mini"


def test_request_limits_answer_429_with_retry_after_and_headers(tmp_path, engine, secret):
    from router.config import RateRule

    limits = LimitsConfig(rules=[RateRule(scope="key", requests_per_minute=3)])
    cfg = configured(tmp_path, limits=limits)
    _, key = new_key(cfg)
    _, other = new_key(cfg)
    with TestClient(create_app(cfg, engine=engine)) as c:
        answers = [c.post("/v1/chat/completions", json=ASK, headers=bearer(key))
                   for _ in range(4)]
        elsewhere = c.post("/v1/chat/completions", json=ASK, headers=bearer(other))
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[2].headers["x-ratelimit-remaining-requests"] == "0"
    refused = answers[3]
    assert 0 < float(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert elsewhere.status_code == 200  # per key


def test_tokens_are_charged_up_front_and_a_request_too_large_is_told_so(tmp_path, engine,
                                                                        secret):
    from router.config import RateRule

    limits = LimitsConfig(rules=[RateRule(scope="org", tokens_per_minute=400)])
    cfg = configured(tmp_path, limits=limits)
    _, key = new_key(cfg)
    with TestClient(create_app(cfg, engine=engine)) as c:
        small = c.post("/v1/chat/completions", json={**ASK, "max_tokens": 100},
                       headers=bearer(key))
        huge = c.post("/v1/chat/completions", json={**ASK, "max_tokens": 5000},
                      headers=bearer(key))
    assert small.status_code == 200 and "x-ratelimit-remaining-tokens" in small.headers
    assert huge.status_code == 429 and huge.json()["error"]["code"] == "request_too_large"


def test_a_budget_is_never_overspent_and_names_itself_when_exhausted(tmp_path, engine, secret):
    from router.config import BudgetRule

    limits = LimitsConfig(budgets=[BudgetRule(scope="org", usd=0.002, period="day")])
    cfg = configured(tmp_path, limits=limits)
    _, key = new_key(cfg)
    body = {**ASK, "model": "gpt-4o", "max_tokens": 60}
    with TestClient(create_app(cfg, engine=engine)) as c:
        answers = [c.post("/v1/chat/completions", json=body, headers=bearer(key))
                   for _ in range(12)]
        with c.portal() as portal:
            portal.call(c.app.state.gateway.drain)
            gw = c.app.state.gateway
            budget = __import__("router.limits.budgets", fromlist=["Budget"]).Budget(
                "org:acme", "day", 0.002)
            spent, reserved = portal.call(gw.limits.budgets.standing, budget)
    codes = [r.status_code for r in answers]
    assert 200 in codes and codes[-1] == 429
    refused = answers[-1].json()["error"]
    assert refused["code"] == "budget_exceeded" and "org:acme" in refused["message"]
    assert spent <= 0.002 + 1e-12 and reserved == pytest.approx(0.0)


def test_roles_and_organisations_bound_the_admin_api(tmp_path, engine, secret):
    cfg = configured(tmp_path)
    _, member = new_key(cfg, org="acme")
    _, viewer = new_key(cfg, org="default", role="viewer")
    _, operator = new_key(cfg, org="default", role="operator")
    _, acme_admin = new_key(cfg, org="acme", role="admin")
    globex_key, _ = new_key(cfg, org="globex")
    master = bearer("master-key")
    with TestClient(create_app(cfg, engine=engine)) as c:
        assert c.get("/admin/models", headers=bearer(member)).status_code == 403
        assert c.get("/admin/models", headers=bearer(viewer)).status_code == 200
        assert c.delete("/admin/models/gpt-4o", headers=bearer(viewer)).status_code == 403
        assert c.get("/admin/deployments", headers=bearer(operator)).status_code == 200
        # An organisation's admin: its own keys and cache entries, nothing of the platform's.
        assert c.get("/admin/models", headers=bearer(acme_admin)).status_code == 403
        made = c.post("/admin/keys", json={"org": "acme", "user": "bob"},
                      headers=bearer(acme_admin))
        assert made.status_code == 201 and made.json()["key"].startswith("cf_")
        assert c.post("/admin/keys", json={"org": "globex"},
                      headers=bearer(acme_admin)).status_code == 403
        listed = c.get("/admin/keys", headers=bearer(acme_admin)).json()["data"]
        assert {k["org"] for k in listed} == {"acme"}
        assert c.get("/admin/keys?org=globex", headers=bearer(acme_admin)).status_code == 403
        assert c.delete(f"/admin/keys/{globex_key}",
                        headers=bearer(acme_admin)).status_code == 403
        assert c.post("/admin/cache/purge", json={"tenant": "globex"},
                      headers=bearer(acme_admin)).status_code == 403
        assert c.get("/admin/audit", headers=bearer(acme_admin)).status_code == 403
        # The new key works at once; revoked through the API, at once on this replica.
        new = made.json()
        assert c.post("/v1/chat/completions", json=ASK,
                      headers=bearer(new["key"])).status_code == 200
        assert c.delete(f"/admin/keys/{new['id']}",
                        headers=bearer(acme_admin)).status_code == 204
        assert c.post("/v1/chat/completions", json=ASK,
                      headers=bearer(new["key"])).status_code == 401
        audit = c.get("/admin/audit?verify=true", headers=master).json()
    actions = [r["action"] for r in audit["data"]]
    assert "keys.create" in actions and "keys.revoke" in actions
    assert audit["verification"]["ok"]


def test_usage_erasure_and_retention(tmp_path, engine, secret):
    import time

    from router.usage import expire, usage

    cfg = configured(tmp_path)
    _, ada = new_key(cfg, org="acme", user_id="ada", project="web")
    _, bob = new_key(cfg, org="acme", user_id="bob")
    _, other = new_key(cfg, org="globex")
    _, acme_admin = new_key(cfg, org="acme", role="admin")
    with TestClient(create_app(cfg, engine=engine)) as c:
        for key in (ada, ada, bob, other):
            assert c.post("/v1/chat/completions", json=ASK, headers=bearer(key)).status_code \
                == 200
        mine = c.get("/admin/usage?group_by=user,project", headers=bearer(acme_admin)).json()
        everyone = c.get("/admin/usage?group_by=tenant,day",
                         headers=bearer("master-key")).json()
        bad = c.get("/admin/usage?group_by=colour", headers=bearer("master-key"))
        erased = c.delete("/admin/users/acme/ada", headers=bearer(acme_admin))
        foreign = c.delete("/admin/users/globex/x", headers=bearer(acme_admin))
        after = c.get("/admin/usage?group_by=user", headers=bearer(acme_admin)).json()
        log = c.app.state.gateway.traffic
        left = [(r.tenant, r.user_id) for r in log.records()]
        gone = expire(log, time.time() + 1)  # every row is past this retention
        assert usage(log, ["tenant"]) == []
    by_user = {r["user"]: r for r in mine["data"]}
    assert set(by_user) == {"ada", "bob"} and by_user["ada"]["requests"] == 2
    assert by_user["ada"]["project"] == "web" and by_user["ada"]["cost_usd"] > 0
    assert {r["tenant"] for r in everyone["data"]} == {"acme", "globex"}
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
    assert erased.json()["log_rows"] == 2 and foreign.status_code == 403
    assert sorted(left) == [("acme", "bob"), ("globex", None)] and gone == 2
    assert [r["user"] for r in after["data"]] == ["bob"]


def test_a_restart_keeps_this_periods_spend(tmp_path, engine, secret):
    from router.config import BudgetRule

    limits = LimitsConfig(budgets=[BudgetRule(scope="org", usd=0.0012, period="month")])
    cfg = configured(tmp_path, limits=limits)
    _, key = new_key(cfg)
    body = {**ASK, "model": "gpt-4o", "max_tokens": 60}
    with TestClient(create_app(cfg, engine=engine)) as c:
        first = [c.post("/v1/chat/completions", json=body, headers=bearer(key)).status_code
                 for _ in range(3)]
    with TestClient(create_app(cfg, engine=engine)) as c:  # restarted
        after = c.post("/v1/chat/completions", json=body, headers=bearer(key))
    assert 200 in first and first[-1] == 429
    assert after.status_code == 429 and after.json()["error"]["code"] == "budget_exceeded"


def test_jwt_callers_and_ip_allowlists(tmp_path, engine, secret):
    import json
    import time

    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from router.config import JwtConfig

    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(signer.public_key())),
           "kid": "k1", "alg": "RS256"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    cfg = configured(tmp_path, host="0.0.0.0")
    cfg = msgspec.structs.replace(cfg, governance=msgspec.structs.replace(
        cfg.governance, jwt=JwtConfig(jwks=str(tmp_path / "jwks.json"),
                                      issuer="https://idp.example", audience="contextforge")))
    claims = {"iss": "https://idp.example", "aud": "contextforge", "sub": "ada@globex",
              "org": "globex", "exp": time.time() + 300}
    token = pyjwt.encode(claims, signer, algorithm="RS256", headers={"kid": "k1"})
    expired = pyjwt.encode({**claims, "exp": time.time() - 600}, signer, algorithm="RS256",
                           headers={"kid": "k1"})
    _, fenced = new_key(cfg, ips=["10.0.0.0/8"])
    with TestClient(create_app(cfg, engine=engine)) as c:
        ok = c.post("/v1/chat/completions", json=ASK, headers=bearer(token))
        stale = c.post("/v1/chat/completions", json=ASK, headers=bearer(expired))
        outside = c.post("/v1/chat/completions", json=ASK, headers=bearer(fenced))
    assert ok.status_code == 200 and stale.status_code == 401
    assert outside.status_code == 403  # the test client is not in 10.0.0.0/8
    (row,) = logged(tmp_path)
    assert (row.tenant, row.user_id, row.credential) == ("globex", "ada@globex", "ada@globex")


def test_embeddings_count_against_token_limits_and_budgets(tmp_path, engine, secret):
    from router.config import BudgetRule, RateRule
    from router.limits.budgets import Budget

    # ~100 tokens: $0.13 per million at text-embedding-3-large's price, so 5 fit in the budget
    text = " ".join(["governance"] * 100)
    budget = Budget("org:acme", "day", 0.00008)
    limits = LimitsConfig(budgets=[BudgetRule(scope="org", usd=budget.limit_usd, period="day")],
                          rules=[RateRule(scope="user", tokens_per_minute=50)])
    cfg = configured(tmp_path, limits=limits)
    _, key = new_key(cfg)
    _, capped = new_key(cfg, user_id="ada")
    remote = {"model": "text-embedding-3-large", "input": text}
    local = {"model": engine.text_encoder.id, "input": text}
    with TestClient(create_app(cfg, engine=engine)) as c:
        answers = [c.post("/v1/embeddings", json=remote, headers=bearer(key)) for _ in range(8)]
        free = c.post("/v1/embeddings", json=local, headers=bearer(key))
        too_many_tokens = c.post("/v1/embeddings", json=remote, headers=bearer(capped))
        with c.portal() as portal:
            gw = c.app.state.gateway
            portal.call(gw.drain)
            spent, reserved = portal.call(gw.limits.budgets.standing, budget)
    codes = [r.status_code for r in answers]
    assert codes[0] == 200 and codes[-1] == 429
    assert answers[-1].json()["error"]["code"] == "budget_exceeded"
    assert 0 < spent <= budget.limit_usd + 1e-12 and reserved == pytest.approx(0.0)
    assert free.status_code == 200  # the gateway's own encoder costs nothing
    assert too_many_tokens.status_code == 429
    assert too_many_tokens.json()["error"]["code"] == "request_too_large"
