"""The response cache through the gateway: exact hits answer at once (also as a replayed
stream), scoped and refused where an entry must not answer."""

from __future__ import annotations

import msgspec
import pytest
from litestar.testing import TestClient

from router.config import CacheConfig, load_config
from router.traffic import TrafficLog
from service.app import create_app

ASK = {"model": "auto", "temperature": 0,
       "messages": [{"role": "user", "content": "Name three prime numbers."}]}



def configured(tmp_path, **cache):
    cfg = load_config()
    traffic = msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{tmp_path / 't.sqlite3'}")
    return msgspec.structs.replace(cfg, traffic=traffic,
                                   cache=CacheConfig(enabled=True, **cache))


def logged(tmp_path):
    log = TrafficLog(f"sqlite:///{tmp_path / 't.sqlite3'}")
    try:
        return log.records()
    finally:
        log.close()


def sse_text(r) -> str:
    events = [msgspec.json.decode(line[6:]) for line in r.text.splitlines()
              if line.startswith("data: {")]
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                   if e["choices"])


def test_a_repeat_is_an_exact_hit_that_costs_nothing(tmp_path, engine):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        first = c.post("/v1/chat/completions", json=ASK)
        again = c.post("/v1/chat/completions", json=ASK)
        stream = c.post("/v1/chat/completions", json={**ASK, "stream": True})
    assert first.headers["x-contextforge-cache"] == "miss"
    assert again.headers["x-contextforge-cache"] == "hit-exact"
    assert float(again.headers["x-contextforge-cost-usd"]) == 0.0
    body, cached = first.json(), again.json()
    assert cached["choices"] == body["choices"] and cached["id"] != body["id"]
    assert again.headers["x-contextforge-model"] == first.headers["x-contextforge-model"]
    # The same entry serves a stream, replayed in OpenAI's SSE shape.
    assert stream.headers["x-contextforge-cache"] == "hit-exact"
    assert sse_text(stream) == body["choices"][0]["message"]["content"]
    assert stream.text.rstrip().endswith("data: [DONE]")
    rows = {r.id: r for r in logged(tmp_path)}
    hit = rows[cached["id"]]
    assert hit.cache == "hit-exact" and hit.cost_usd == 0.0 and hit.cache_entry
    # The served answer is logged (to audit a reported hit) but a hit is no sample of what
    # its model answers to this request: no propensity, and retraining does not read it.
    assert hit.answer == body["choices"][0]["message"]["content"] and hit.propensity is None
    log = TrafficLog(f"sqlite:///{tmp_path / 't.sqlite3'}")
    try:
        answered = [r.id for batch in log.batches(answered=True) for r, _ in batch]
    finally:
        log.close()
    assert body["id"] in answered and cached["id"] not in answered
    assert rows[body["id"]].cache == "miss" and rows[body["id"]].cache_entry is None


def test_a_streamed_answer_is_kept_and_serves_a_plain_request(tmp_path, engine):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        stream = c.post("/v1/chat/completions", json={**ASK, "stream": True})
        plain = c.post("/v1/chat/completions", json=ASK)
    assert stream.headers["x-contextforge-cache"] == "miss"
    assert plain.headers["x-contextforge-cache"] == "hit-exact"
    assert plain.json()["choices"][0]["message"]["content"] == sse_text(stream)


def test_what_must_not_share_an_entry_misses(tmp_path, engine):
    other_system = {**ASK, "messages": [{"role": "system", "content": "Answer in French."},
                                        *ASK["messages"]]}
    next_turn = {**ASK, "messages": [*ASK["messages"],
                                     {"role": "assistant", "content": "2, 3, 5."},
                                     *ASK["messages"]]}
    with_tools = {**ASK, "tools": [{"type": "function", "function": {"name": "primes"}}]}
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        assert c.post("/v1/chat/completions", json=ASK).headers["x-contextforge-cache"] == "miss"
        for variant in (other_system, next_turn, with_tools, {**ASK, "model": "gpt-4o"}):
            r = c.post("/v1/chat/completions", json=variant)
            assert r.headers["x-contextforge-cache"] == "miss", variant


def test_users_share_entries_only_under_tenant_scope(tmp_path, engine):
    ada, bob = {**ASK, "user": "ada"}, {**ASK, "user": "bob"}
    with TestClient(create_app(configured(tmp_path, scope="user"), engine=engine)) as c:
        c.post("/v1/chat/completions", json=ada)
        assert c.post("/v1/chat/completions", json=bob).headers["x-contextforge-cache"] == "miss"
        assert c.post("/v1/chat/completions",
                      json=ada).headers["x-contextforge-cache"] == "hit-exact"
    with TestClient(create_app(configured(tmp_path / "t", scope="tenant"),
                               engine=engine)) as c:
        c.post("/v1/chat/completions", json=ada)
        assert c.post("/v1/chat/completions",
                      json=bob).headers["x-contextforge-cache"] == "hit-exact"


def test_non_deterministic_requests_are_kept_only_when_they_opt_in(tmp_path, engine):
    warm = {**ASK, "temperature": 0.8}
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        assert c.post("/v1/chat/completions", json=warm).headers["x-contextforge-cache"] == \
            "bypass"
        assert c.post("/v1/chat/completions", json=warm).headers["x-contextforge-cache"] == \
            "bypass"
        opted = {**warm, "cache": {"store": True}}
        assert c.post("/v1/chat/completions", json=opted).headers["x-contextforge-cache"] == \
            "miss"
        assert c.post("/v1/chat/completions", json=opted).headers["x-contextforge-cache"] == \
            "hit-exact"
        # no_cache skips the lookup (a fresh answer, kept again); no_store keeps nothing.
        fresh = {**ASK, "cache": {"no_cache": True}}
        assert c.post("/v1/chat/completions", json=fresh).headers["x-contextforge-cache"] == \
            "miss"
        once = {**ASK, "messages": [{"role": "user", "content": "Once only."}],
                "cache": {"no_store": True}}
        c.post("/v1/chat/completions", json=once)
        assert c.post("/v1/chat/completions", json=once).headers["x-contextforge-cache"] == \
            "miss"
        bad = c.post("/v1/chat/completions", json={**ASK, "cache": {"ttl": -1}})
        assert bad.status_code == 400 and "ttl" in bad.text


def test_the_cache_is_off_by_default(tmp_path, engine):
    cfg = load_config()
    cfg = msgspec.structs.replace(cfg, traffic=msgspec.structs.replace(
        cfg.traffic, dsn=f"sqlite:///{tmp_path / 't.sqlite3'}"))
    with TestClient(create_app(cfg, engine=engine)) as c:
        c.post("/v1/chat/completions", json=ASK)
        r = c.post("/v1/chat/completions", json={**ASK, "cache": {"store": True}})
    assert r.status_code == 200 and r.headers["x-contextforge-cache"] == "bypass"


def test_a_reported_wrong_hit_evicts_its_entry_and_is_counted(tmp_path, engine):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        c.post("/v1/chat/completions", json=ASK)
        hit = c.post("/v1/chat/completions", json=ASK)
        assert hit.headers["x-contextforge-cache"] == "hit-exact"
        r = c.post("/v1/feedback", json={"request_id": hit.json()["id"], "rating": 0,
                                         "wrong_cache_hit": True})
        assert r.status_code == 201 and r.json()["evicted_cache_entry"].startswith("ce-")
        assert c.post("/v1/chat/completions", json=ASK).headers["x-contextforge-cache"] == \
            "miss"
        metrics = c.get("/metrics").text
        # A report on an answer the cache did not give is refused, and changes nothing.
        first = c.post("/v1/chat/completions", json={**ASK, "temperature": 1}).json()["id"]
        bad = c.post("/v1/feedback", json={"request_id": first, "rating": 0,
                                           "wrong_cache_hit": True})
    assert 'contextforge_cache_reported_false_hits_total{tier="exact"} 1.0' in metrics
    assert 'contextforge_cache_saved_usd_total{tier="exact"}' in metrics
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "wrong_cache_hit"


def test_the_admin_api_shows_invalidates_and_purges_the_cache(tmp_path, engine):
    cfg = configured(tmp_path)
    cfg = msgspec.structs.replace(cfg, server=msgspec.structs.replace(
        cfg.server, master_key="admin-key"))
    admin = {"authorization": "Bearer admin-key"}
    with TestClient(create_app(cfg, engine=engine)) as c:
        auth = {"authorization": "Bearer admin-key"}
        c.post("/v1/chat/completions", json=ASK, headers=auth)
        hit = c.post("/v1/chat/completions", json=ASK, headers=auth)
        stats = c.get("/admin/cache", headers=admin).json()
        assert stats["enabled"] and stats["exact"]["entries"] == 1
        assert stats["exact"]["hits"] == 1
        assert c.get("/admin/cache").status_code == 401
        entry = logged_entry(tmp_path, hit.json()["id"])
        assert c.delete(f"/admin/cache/entries/{entry}", headers=admin).status_code == 204
        assert c.delete(f"/admin/cache/entries/{entry}", headers=admin).status_code == 404
        two = {**ASK, "messages": [{"role": "user", "content": "Another question."}]}
        for body in (ASK, two):
            c.post("/v1/chat/completions", json=body, headers=auth)
        purge = c.post("/admin/cache/purge", json={"tenant": "default"}, headers=admin)
        assert purge.json()["purged"] == 2
        assert c.get("/admin/cache", headers=admin).json()["exact"]["entries"] == 0
        assert c.post("/admin/cache/purge", json={"user": "x"},
                      headers=admin).status_code == 400


def logged_entry(tmp_path, request_id):
    """The cache entry a logged hit names (the server's writer commits within ~20 ms)."""
    import time

    log = TrafficLog(f"sqlite:///{tmp_path / 't.sqlite3'}")
    try:
        deadline = time.monotonic() + 5
        while (row := log.get(request_id)) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert row is not None
        return row.cache_entry
    finally:
        log.close()


def test_the_cache_survives_a_restart_and_refuses_a_damaged_snapshot(tmp_path, engine):
    from tests.e2e.gateway_server import app_logs

    cfg = configured(tmp_path, snapshot_path=str(tmp_path / "cache.snap"))
    with TestClient(create_app(cfg, engine=engine)) as c:
        first = c.post("/v1/chat/completions", json=ASK).json()
    # Written at shutdown; the next process answers the repeat from it.
        c.post("/v1/chat/completions", json=asking(WATER))
    with TestClient(create_app(cfg, engine=engine)) as c:
        again = c.post("/v1/chat/completions", json=ASK)
        para = c.post("/v1/chat/completions",
                      json=asking("Is it safe to drink the tap water in Mexico?"))
        c.post("/v1/chat/completions", json=asking("A new question, kept after the reload."))
        with c.portal() as portal:  # what a crash now would lose
            stats = portal.call(c.app.state.gateway.cache.stats)
    assert stats["snapshot"]["kept_since"] == 1
    assert again.headers["x-contextforge-cache"] == "hit-exact"
    assert para.headers["x-contextforge-cache"] == "hit-semantic"  # the vectors came back too
    assert again.json()["choices"] == first["choices"]
    (tmp_path / "cache.snap").write_bytes(b"not a snapshot\n")
    with app_logs() as logs, TestClient(create_app(cfg, engine=engine)) as c:
        r = c.post("/v1/chat/completions", json=ASK)
    assert r.headers["x-contextforge-cache"] == "miss"  # refused, started empty
    assert "cache snapshot refused, starting empty" in logs.text
    assert "not a ContextForge cache snapshot" in logs.text


def test_cache_options_as_headers(tmp_path, engine):
    once = {**ASK, "messages": [{"role": "user", "content": "Header options."}]}
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        c.post("/v1/chat/completions", json=once, headers={"cache-control": "no-store"})
        r = c.post("/v1/chat/completions", json=once)
        assert r.headers["x-contextforge-cache"] == "miss"  # the first was not kept
        warm = {**ASK, "temperature": 0.9}
        c.post("/v1/chat/completions", json=warm, headers={"x-contextforge-cache-store": "1"})
        again = c.post("/v1/chat/completions", json=warm,
                       headers={"x-contextforge-cache-store": "1"})
        assert again.headers["x-contextforge-cache"] == "hit-exact"
        bad = c.post("/v1/chat/completions", json=ASK,
                     headers={"cache-control": "max-age=soon"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "cache"
        messages = c.post("/v1/messages", json={
            "model": "auto", "max_tokens": 50, "temperature": 0,
            "messages": [{"role": "user", "content": "Anthropic, twice."}]})
        twice = c.post("/v1/messages", json={
            "model": "auto", "max_tokens": 50, "temperature": 0,
            "messages": [{"role": "user", "content": "Anthropic, twice."}]})
    assert messages.headers["x-contextforge-cache"] == "miss"
    assert twice.headers["x-contextforge-cache"] == "hit-exact"
    assert twice.json()["content"] == messages.json()["content"]


def asking(text: str, **extra) -> dict:
    return {**ASK, "messages": [{"role": "user", "content": text}], **extra}


WATER = "Is it safe to drink tap water in Mexico?"


def test_a_paraphrase_is_a_semantic_hit_and_says_how_similar(tmp_path, engine):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        first = c.post("/v1/chat/completions", json=asking(WATER))
        para = c.post("/v1/chat/completions",
                      json=asking("Is it safe to drink the tap water in Mexico?"))
        streamed = c.post("/v1/chat/completions", json=asking(
            "Is it safe to drink the tap water in Mexico?", stream=True,
            cache={"no_store": True}))
        with c.portal() as portal:
            stats = portal.call(c.app.state.gateway.cache.stats)
    assert first.headers["x-contextforge-cache"] == "miss"
    assert "x-contextforge-cache-similarity" not in first.headers
    assert para.headers["x-contextforge-cache"] == "hit-semantic"
    assert 0.9 < float(para.headers["x-contextforge-cache-similarity"]) < 1.0
    assert para.json()["choices"] == first.json()["choices"]
    assert streamed.headers["x-contextforge-cache"] == "hit-semantic"
    assert sse_text(streamed) == first.json()["choices"][0]["message"]["content"]
    assert stats["semantic"]["hits"] == 2 and stats["semantic"]["entries"] == 1
    rows = {r.id: r for r in logged(tmp_path)}
    assert rows[para.json()["id"]].cache == "hit-semantic"
    assert rows[para.json()["id"]].cache_entry is not None
    assert rows[para.json()["id"]].cost_usd == 0.0


@pytest.mark.parametrize("near_copy", [
    "Is it not safe to drink tap water in Mexico?",  # negated
    "Is it safe to drink tap water in Canada?",  # another place
])
def test_a_negated_or_changed_question_is_not_a_semantic_hit(tmp_path, engine, near_copy):
    flights = "How can I book flights from Paris to Rome?"
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        c.post("/v1/chat/completions", json=asking(WATER))
        c.post("/v1/chat/completions", json=asking(flights))
        near = c.post("/v1/chat/completions", json=asking(near_copy))
        reversed_ = c.post("/v1/chat/completions",
                           json=asking("How can I book flights from Rome to Paris?"))
    assert near.headers["x-contextforge-cache"] == "miss"
    assert reversed_.headers["x-contextforge-cache"] == "miss"


def test_a_semantic_entry_stays_in_its_scope(tmp_path, engine):
    para = "Is it safe to drink the tap water in Mexico?"
    system = [{"role": "system", "content": "Answer as a travel agent."}]
    earlier = [{"role": "user", "content": "I am going to Mexico."},
               {"role": "assistant", "content": "Have a good trip."}]
    with TestClient(create_app(configured(tmp_path, scope="user"), engine=engine)) as c:
        c.post("/v1/chat/completions", json=asking(WATER, user="ada"))
        for variant in (asking(para, user="bob"),  # another user under scope: user
                        {**asking(para, user="ada"),
                         "messages": [*system, {"role": "user", "content": para}]},
                        {**asking(para, user="ada"),
                         "messages": [*earlier, {"role": "user", "content": para}]},
                        asking(para, user="ada", tools=[{"type": "function",
                                                         "function": {"name": "visa"}}]),
                        asking(para, user="ada", max_tokens=5),
                        asking(para, user="ada", model="gpt-4o")):
            r = c.post("/v1/chat/completions", json=variant)
            assert r.headers["x-contextforge-cache"] == "miss", variant
        same = c.post("/v1/chat/completions", json=asking(para, user="ada"))
    assert same.headers["x-contextforge-cache"] == "hit-semantic"


def test_an_agent_loops_next_turn_misses_the_turn_before(tmp_path, engine):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    turn1 = asking("What is the weather in Paris?",
                   tools=[{"type": "function", "function": {"name": "weather"}}])
    turn2 = {**turn1, "messages": [*turn1["messages"],
                                   {"role": "assistant", "content": None, "tool_calls": [call]},
                                   {"role": "tool", "tool_call_id": "call_1",
                                    "content": "18 C, sunny"}]}
    turn3 = {**turn2, "messages": [*turn2["messages"],
                                   {"role": "assistant", "content": "18 C and sunny."},
                                   {"role": "user", "content": "What is the weather in Paris?"}]}
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        assert c.post("/v1/chat/completions", json=turn1).headers["x-contextforge-cache"] == \
            "miss"
        # A tool result's turn is never served or kept; the next user turn, though it asks
        # the first turn's question word for word, has other earlier turns: its own scope.
        assert c.post("/v1/chat/completions", json=turn2).headers["x-contextforge-cache"] == \
            "bypass"
        assert c.post("/v1/chat/completions", json=turn3).headers["x-contextforge-cache"] == \
            "miss"


def test_two_tenants_never_share_an_entry(tmp_path, engine):
    from router.wire.openai import ChatRequest
    from service.pipeline import Exchange

    async def ask(gw, tenant: str, text: str) -> str:
        request = msgspec.convert(asking(text), ChatRequest)
        ex = await gw.pipeline.run(Exchange("chat", request, tenant=tenant), gw)
        return ex.cache

    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        gw = c.app.state.gateway
        with c.portal() as portal:
            outcomes = [portal.call(ask, gw, tenant, text) for tenant, text in [
                ("acme", WATER), ("globex", WATER),
                ("globex", "Is it safe to drink the tap water in Mexico?"), ("acme", WATER)]]
    assert outcomes == ["miss", "miss", "hit-semantic", "hit-exact"]


def test_wrong_semantic_hit_reported_evicts_both_tiers(tmp_path, engine):
    para = asking("Is it safe to drink the tap water in Mexico?")
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        c.post("/v1/chat/completions", json=asking(WATER))
        hit = c.post("/v1/chat/completions", json=para)
        assert hit.headers["x-contextforge-cache"] == "hit-semantic"
        fb = c.post("/v1/feedback", json={"request_id": hit.json()["id"], "rating": 0,
                                          "wrong_cache_hit": True})
        assert fb.status_code == 201 and fb.json()["evicted_cache_entry"]
        again = c.post("/v1/chat/completions", json=asking(WATER))
        metrics = c.get("/metrics").text
    assert again.headers["x-contextforge-cache"] == "miss"  # the entry is gone from both tiers
    assert 'contextforge_cache_reported_false_hits_total{tier="semantic"} 1.0' in metrics


def test_a_routed_miss_embeds_its_prompt_once(tmp_path, engine, monkeypatch):
    from router.embedding import MicroBatcher

    texts: list[str] = []
    encode = MicroBatcher.encode

    async def counted(self, text):
        texts.append(text)
        return await encode(self, text)

    monkeypatch.setattr(MicroBatcher, "encode", counted)
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        texts.clear()  # start-up's warm-up
        c.post("/v1/chat/completions", json=asking(WATER))  # nothing of its scope: no lookup
        assert texts == [WATER]  # the route's embedding, reused to keep the answer's vector
        miss = c.post("/v1/chat/completions", json=asking("Is it safe to swim in Lake Ohrid?"))
        assert miss.headers["x-contextforge-cache"] == "miss"
        # The lookup embedded it (its scope was not empty); routing reused that vector.
        assert texts == [WATER, "Is it safe to swim in Lake Ohrid?"]
        # With a system prompt the router embeds another text: the lookup encodes both at once
        # and routing takes its own from there.
        system = [{"role": "system", "content": "Be brief."}]
        c.post("/v1/chat/completions", json={**ASK, "messages": [
            *system, {"role": "user", "content": WATER}]})
        with c.portal() as portal:  # its question is embedded after the response: wait
            portal.call(c.app.state.gateway.drain)
        texts.clear()
        swim = {**ASK, "messages": [*system, {"role": "user", "content": "Can I swim there?"}]}
        assert c.post("/v1/chat/completions", json=swim).headers["x-contextforge-cache"] == \
            "miss"
    assert sorted(texts) == ["Be brief.\n\nCan I swim there?", "Can I swim there?"]


def test_a_failing_lookup_is_a_miss_not_a_failed_request(tmp_path, engine, monkeypatch):
    from router.cache.store import ResponseCache
    from tests.e2e.gateway_server import app_logs

    async def broken(self, *args):
        raise RuntimeError("index damaged")

    monkeypatch.setattr(ResponseCache, "find", broken)
    with app_logs() as logs, TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        c.post("/v1/chat/completions", json=asking(WATER))
        r = c.post("/v1/chat/completions",
                   json=asking("Is it safe to drink the tap water in Mexico?"))
    assert r.status_code == 200 and r.headers["x-contextforge-cache"] == "miss"
    assert "cache: lookup failed" in logs.text
