"""Attacks on the response cache that once worked, kept as regressions: images, long pasted
texts, failing caches, odd options, tool results, erasures racing answers, other tenants'
feedback, snapshots from another encoder."""

from __future__ import annotations

import base64
import json
import random
import string
import tracemalloc

import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient

from router.cache.exact import Entry
from router.cache.snapshot import read_snapshot_with_encoder, write_snapshot
from router.cache.store import ResponseCache, Stored
from router.wire.openai import ChatRequest
from service.app import create_app
from service.pipeline import Exchange
from tests.e2e.test_gateway_cache import ASK, WATER, asking, configured


@pytest.fixture(scope="module")
def engine():
    from router.config import load_config
    from router.engine import RoutingEngine

    return RoutingEngine.from_config(load_config())


def settle(c) -> None:
    """Wait for the work a response left behind (a kept answer's question is embedded)."""
    with c.portal() as portal:
        portal.call(c.app.state.gateway.drain)


def png(variant: str) -> str:
    return "data:image/png;base64," + base64.b64encode(bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        f"0000000d49444154789c{variant}c00000030101009a1d3d6d0000000049454e44ae426082")).decode()


def image_turn(text: str, url: str, model: str = "gpt-4o") -> dict:
    return {"model": model, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}]}


def test_two_images_asked_the_same_words_are_two_questions(tmp_path, engine):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        c.post("/v1/chat/completions", json={**ASK, "model": "gpt-4o", "messages": [
            {"role": "user", "content": "Who is this?"}]})
        c.post("/v1/chat/completions", json=image_turn("Who is this?", png("6360f8cf")))
        settle(c)
        other = c.post("/v1/chat/completions", json=image_turn("Who is this?", png("63f8cfc0")))
        bad = c.post("/v1/chat/completions", json=image_turn("Who is this?",
                                                             "file:///etc/passwd"))
        blind = c.post("/v1/chat/completions",
                       json=image_turn("Who is this?", png("6360f8cf"), model="llama-3.1-8b"))
    assert other.headers["x-contextforge-cache"] == "miss"
    # Neither is answered from a text-only entry before the route stage's checks.
    assert bad.status_code == 400 and blind.status_code == 422


PASSAGE = ("The committee met on a rainy afternoon to discuss the budget for the coming year. "
           "Several members argued that the library needed new shelves while others wanted to "
           "repair the old roof before winter arrived. ") * 6


@pytest.mark.parametrize("first, second", [
    ("Is the roof repair necessary?", "Is the roof repair unnecessary?"),
    ("Is the roof more important than the shelves?",
     "Are the shelves more important than the roof?"),
])
def test_a_changed_question_after_a_long_passage_is_not_a_hit(tmp_path, engine, first, second):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        c.post("/v1/chat/completions", json=asking(PASSAGE + first))
        settle(c)
        r = c.post("/v1/chat/completions", json=asking(PASSAGE + second))
        again = c.post("/v1/chat/completions", json=asking(PASSAGE + first))
    assert r.headers["x-contextforge-cache"] == "miss"
    assert again.headers["x-contextforge-cache"] == "hit-exact"  # the exact tier still serves


def test_the_verifiers_cost_stays_small_for_a_long_text():
    from router.cache.keys import MAX_SEMANTIC_CHARS
    from router.cache.verifier import features_matrix

    rng = random.Random(0)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(5)) for _ in range(170)]
    a, b = " ".join(words)[:MAX_SEMANTIC_CHARS], " ".join(reversed(words))[:MAX_SEMANTIC_CHARS]
    tracemalloc.start()
    features_matrix([a], [b], np.array([0.99]))  # the longest pair the semantic tier reads
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2e6, f"{peak / 1e6:.1f} MB for one pair"


@pytest.mark.parametrize("method", ["get", "keep"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_cache_is_a_miss_not_a_failed_request(tmp_path, engine, monkeypatch,
                                                        method, stream):
    def broken(self, *args, **kwargs):
        raise RuntimeError("cache damaged")

    async def broken_async(self, *args, **kwargs):
        raise RuntimeError("cache damaged")

    monkeypatch.setattr(ResponseCache, method, broken_async if method == "get" else broken)
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        r = c.post("/v1/chat/completions", json={**ASK, "stream": stream})
    assert r.status_code == 200
    if stream:
        assert r.text.rstrip().endswith("data: [DONE]")


def test_a_failing_lookup_embedding_is_a_miss(tmp_path, engine, monkeypatch):
    from service.gateway import Gateway

    pinned = {**asking(WATER), "model": "gpt-4o"}
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        c.post("/v1/chat/completions", json=pinned)
        settle(c)

        async def broken(self, text):
            raise RuntimeError("encoder down")

        monkeypatch.setattr(Gateway, "text_vector", broken)
        r = c.post("/v1/chat/completions", json={
            **pinned, "messages": [{"role": "user", "content": WATER + " Really?"}]})
    assert r.status_code == 200 and r.headers["x-contextforge-cache"] == "miss"


MSG = {"model": "auto", "max_tokens": 50, "temperature": 0,
       "messages": [{"role": "user", "content": "Anthropic, keep nothing."}]}


def test_the_anthropic_body_takes_the_same_cache_options(tmp_path, engine):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        c.post("/v1/messages", json={**MSG, "cache": {"no_store": True}})
        again = c.post("/v1/messages", json=MSG)
        bad = c.post("/v1/messages", json={**MSG, "cache": {"ttl": -1}})
    assert again.headers["x-contextforge-cache"] == "miss"
    assert bad.status_code == 400 and "ttl" in bad.text


@pytest.mark.parametrize("headers, named", [
    ({"x-contextforge-cache-store": "maybe"}, "x-contextforge-cache-store"),
    ({"x-contextforge-cache-scope": "everyone"}, "x-contextforge-cache-scope"),
    ({"cache-control": "max-age=-3"}, "max-age"),
])
def test_an_unreadable_cache_header_is_a_400_naming_it(tmp_path, engine, headers, named):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        r = c.post("/v1/chat/completions", json=ASK, headers=headers)
    assert r.status_code == 400 and named in r.json()["error"]["message"]


TOOLS = [{"name": "screenshot", "input_schema": {"type": "object"}}]


def tool_loop(result, *extra) -> dict:
    return {"model": "auto", "max_tokens": 50, "temperature": 0, "tools": TOOLS, "messages": [
        {"role": "user", "content": "Take a screenshot and tell me what you see."},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": result}, *extra]}]}


@pytest.mark.parametrize("body", [
    tool_loop("a login page"),
    tool_loop([{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                            "data": png("6360f8cf").split(",", 1)[1]}}]),
    tool_loop("a login page", {"type": "text", "text": "Go on."}),
], ids=["text result", "image result", "result and a note"])
def test_a_tool_result_turn_bypasses_the_cache(tmp_path, engine, body):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        r = c.post("/v1/messages", json=body)
    assert r.status_code == 200 and r.headers["x-contextforge-cache"] == "bypass"


def test_the_same_question_as_one_text_part_is_the_same_request(tmp_path, engine):
    parts = {**ASK, "messages": [{"role": "user", "content": [{"type": "text",
                                                               "text": WATER}]}]}
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        c.post("/v1/chat/completions", json=asking(WATER))
        as_parts = c.post("/v1/chat/completions", json=parts)
        spaced = c.post("/v1/chat/completions", json=asking(WATER + "  "))
    assert as_parts.headers["x-contextforge-cache"] == "hit-exact"
    assert spaced.headers["x-contextforge-cache"] == "hit-semantic"  # the very question


def test_an_erasure_is_not_undone_by_a_request_in_flight(tmp_path, engine):
    async def go(gw):
        request = msgspec.convert(asking(WATER, user="ada", stream=True), ChatRequest)
        ex = await gw.pipeline.run(Exchange("chat", request), gw)  # being answered...
        purged = await gw.cache.purge("default", "ada")  # ...when the erasure lands
        async for _ in ex.chunks:
            pass
        await gw.drain()
        return purged, [e.user for e in gw.cache.exact.entries()]

    with (TestClient(create_app(configured(tmp_path), engine=engine)) as c,
          c.portal() as portal):
        _, users = portal.call(go, c.app.state.gateway)
    assert "ada" not in users


def test_no_tenant_rates_or_evicts_anothers_answer(tmp_path, engine):
    async def ask(gw, tenant):
        request = msgspec.convert(asking(WATER), ChatRequest)
        return await gw.pipeline.run(Exchange("chat", request, tenant=tenant), gw)

    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        gw = c.app.state.gateway
        with c.portal() as portal:
            portal.call(ask, gw, "acme")
            hit = portal.call(ask, gw, "acme")
        r = c.post("/v1/feedback", json={"request_id": hit.id, "rating": 0,
                                         "wrong_cache_hit": True})  # as tenant "default"
        with c.portal() as portal:
            after = portal.call(ask, gw, "acme")
    assert hit.cache == "hit-exact" and r.status_code == 404
    assert after.cache == "hit-exact"


def test_a_snapshot_names_the_encoder_of_its_vectors(tmp_path):
    from router.cache.exact import ExactCache
    from router.cache.semantic import SemanticIndex
    from router.cache.verifier import Verifier

    v = np.ones(384, dtype=np.float32) / np.sqrt(384)
    entry = Entry(id="ce-1", key="k", tenant="t", user=None, route="auto", model="gpt-4o",
                  body=b"{}", created=0.0, expires=1e12)
    path = tmp_path / "snap"
    write_snapshot(path, [Stored(entry, "q", "s", v.tobytes())], encoder="other:abc")
    assert json.loads(path.read_bytes().partition(b"\n")[0])["encoder"] == "other:abc"
    encoder, stored = read_snapshot_with_encoder(path)
    cache = ResponseCache(ExactCache(10, 10**6), SemanticIndex(384), Verifier.load(),
                          encoder="all-MiniLM-L6-v2:0123")
    cache.restore(stored, encoder)
    assert len(cache.exact) == 1 and len(cache.semantic) == 0  # exact repeats only


def test_a_stream_closed_before_its_first_chunk_still_settles(tmp_path, engine):
    # A client gone before the body started: the stages still leave (the log row, and later
    # the limits' slots and the budget's reservation).
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        gw = c.app.state.gateway

        async def go():
            request = msgspec.convert(asking(WATER, stream=True), ChatRequest)
            ex = await gw.pipeline.run(Exchange("chat", request), gw)
            await ex.chunks.aclose()
            gw.traffic.flush()
            return ex.id

        with c.portal() as portal:
            rid = portal.call(go)
        assert gw.traffic.get(rid) is not None
