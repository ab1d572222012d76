"""The cache's keys and rules (``router.cache.keys``) and its exact tier."""

from __future__ import annotations

import msgspec
import pytest

from router.cache import Entry, ExactCache, cacheable, exact_key, last_user_text, scope_key
from router.wire.openai import CacheControl, ChatRequest

BASE = {"model": "auto", "temperature": 0,
        "messages": [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "Is the sky blue?"}]}


def req(**changes) -> ChatRequest:
    return msgspec.convert({**BASE, **changes}, ChatRequest)


def test_equal_requests_share_a_key_whatever_their_json_looks_like():
    a = msgspec.json.decode(b'{"model":"auto","temperature":0,"messages":[{"role":"user",'
                            b'"content":"hi"}]}', type=ChatRequest)
    b = msgspec.json.decode(b'{"messages": [{"content": "hi", "role": "user"}], '
                            b'"temperature": 0.0, "model": "auto", "stream": true}',
                            type=ChatRequest)
    assert exact_key(a, "t1") == exact_key(b, "t1")  # streaming is no part of the answer


@pytest.mark.parametrize("change", [
    {"messages": [{"role": "system", "content": "You are verbose."},
                  {"role": "user", "content": "Is the sky blue?"}]},  # another system prompt
    {"tools": [{"type": "function", "function": {"name": "lookup"}}]},  # a tool set
    {"response_format": {"type": "json_object"}},
    {"model": "gpt-4o"},  # another model choice
    {"max_tokens": 5}, {"seed": 7}, {"top_p": 0.5}, {"stop": "\n"},
])
def test_anything_the_answer_depends_on_changes_both_keys(change):
    other = req(**change)
    assert exact_key(other, "t1") != exact_key(req(), "t1")
    assert scope_key(other, "t1") != scope_key(req(), "t1")


def test_tenants_and_under_user_scope_users_never_share_keys():
    assert exact_key(req(), "t1") != exact_key(req(), "t2")
    assert scope_key(req(), "t1") != scope_key(req(), "t2")
    ada, bob = req(user="ada"), req(user="bob")
    assert exact_key(ada, "t1") == exact_key(bob, "t1")  # scope tenant: shared
    assert exact_key(ada, "t1", "user") != exact_key(bob, "t1", "user")
    assert scope_key(ada, "t1", "user") != scope_key(bob, "t1", "user")


def test_the_next_turn_of_a_conversation_has_another_scope():
    first = req()
    second = req(messages=[*BASE["messages"], {"role": "assistant", "content": "Yes."},
                           {"role": "user", "content": "Is the sky blue?"}])
    # Same last user text, another conversation before it: no entry of the first turn.
    assert last_user_text(first) == last_user_text(second) == "Is the sky blue?"
    assert scope_key(first, "t1") != scope_key(second, "t1")
    assert exact_key(first, "t1") != exact_key(second, "t1")


def test_only_deterministic_user_turns_are_cached_unless_a_request_opts_in():
    assert cacheable(req(), None).store and cacheable(req(), None).lookup
    warm = req(temperature=0.7)
    assert not cacheable(warm, None).store and not cacheable(warm, None).lookup
    assert not cacheable(req(temperature=None), None).store  # the provider's default: 1
    assert cacheable(warm, CacheControl(store=True)).store
    assert cacheable(warm, None, deterministic_only=False).store
    tool_turn = req(messages=[*BASE["messages"],
                              {"role": "assistant", "content": None, "tool_calls": [
                                  {"id": "c1", "type": "function",
                                   "function": {"name": "f", "arguments": "{}"}}]},
                              {"role": "tool", "tool_call_id": "c1", "content": "42"}])
    v = cacheable(tool_turn, CacheControl(store=True))
    assert not v.lookup and not v.store and "not a user turn" in v.reason
    assert last_user_text(tool_turn) is None
    assert not cacheable(req(), CacheControl(no_cache=True)).lookup
    assert not cacheable(req(), CacheControl(no_store=True)).store


def entry(key: str, tenant: str = "t1", user: str | None = None, size: int = 100,
          expires: float = 1e12) -> Entry:
    return Entry(id=f"id-{key}", key=key, tenant=tenant, user=user, route="auto",
                 model="m", body=b"x" * size, created=0.0, expires=expires)


def test_the_exact_tier_evicts_the_least_recently_used_past_its_bounds():
    c = ExactCache(max_entries=2, max_bytes=10_000)
    c.put(entry("a"))
    c.put(entry("b"))
    assert c.get("a") is not None  # a is now the most recent
    c.put(entry("c"))
    assert c.get("b") is None and c.get("a") and c.get("c") and c.evicted == 1
    small = ExactCache(max_entries=100, max_bytes=3 * entry("x").size)
    for k in "wxyz":
        small.put(entry(k))
    assert len(small) == 3 and small.get("w") is None and small.bytes <= small.max_bytes
    small.put(entry("huge", size=10_000))  # larger than the whole cache: not kept
    assert small.get("huge") is None and len(small) == 3


def test_entries_expire_and_can_be_deleted_or_purged():
    now = [100.0]
    c = ExactCache(10, 10**6, clock=lambda: now[0])
    c.put(entry("a", expires=150.0))
    c.put(entry("b", tenant="t2", user="ada"))
    c.put(entry("c", tenant="t2", user="bob"))
    assert c.get("a") is not None
    now[0] = 150.0
    assert c.get("a") is None and len(c) == 2
    assert c.delete("id-b") and not c.delete("id-b")
    c.put(entry("b", tenant="t2", user="ada"))
    assert c.purge("t2", user="bob") == 1 and c.get("b") is not None
    assert c.purge("t2") == 1 and len(c) == 0 and c.bytes == 0


def test_cache_options_arrive_as_headers_too_and_the_body_wins():
    from router.cache.keys import header_options, with_header_options

    got = header_options({"cache-control": "no-store, max-age=30",
                          "x-contextforge-cache-scope": "User",
                          "x-contextforge-cache-store": "true"})
    assert got == CacheControl(no_store=True, ttl=30.0, scope="user", store=True)
    assert header_options({"cache-control": "no-cache"}) == CacheControl(no_cache=True)
    assert header_options({"accept": "*/*"}) is None
    with pytest.raises(ValueError, match="max-age"):
        header_options({"cache-control": "max-age=soon"})
    with pytest.raises(ValueError, match="x-contextforge-cache-scope: 'planet'"):
        header_options({"x-contextforge-cache-scope": "planet"})
    for odd in ("maybe", "on"):  # not silently false
        with pytest.raises(ValueError, match="x-contextforge-cache-store"):
            header_options({"x-contextforge-cache-store": odd})
    # max-age=0 (a browser's reload) keeps nothing; beyond a year is refused by name.
    assert header_options({"cache-control": "max-age=0"}) == CacheControl(no_store=True)
    with pytest.raises(ValueError, match="max-age=9e9"):
        header_options({"cache-control": "max-age=9e9"})
    body = req(cache={"ttl": 5, "scope": "tenant"})
    merged = with_header_options(body, {"cache-control": "no-store, max-age=30"})
    assert merged.cache == CacheControl(no_store=True, ttl=5.0, scope="tenant")
    assert with_header_options(req(), {}) == req()
