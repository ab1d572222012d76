"""A content-policy refusal (``FAIL CONTENT`` in the OpenAI and Anthropic simulators): off by
default it reaches the client as a 400 and opens no breaker; with
``dispatch.content_policy_failover`` the request moves to a model another provider serves.
A refusal that comes as a 200 (``FAIL FILTERED``: ``content_filter`` / ``refusal``) likewise,
streams only before their first content (``FAIL FILTERLATE`` streams words first)."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
from litestar.testing import TestClient

from router.catalog import Catalog
from router.config import Deployment, ProviderEntry, load_config
from router.providers import UpstreamRefused, UpstreamRejected
from router.providers.http_io import error_for_status
from router.traffic import TrafficLog
from service.app import create_app
from tests.upstreams import serve
from tests.upstreams.anthropic import API_KEY as ANTHROPIC_KEY
from tests.upstreams.anthropic import AnthropicSimulator
from tests.upstreams.openai_compat import SimState
from tests.upstreams.openai_compat import create_app as openai_sim

OPENAI_KEY = "sk-sim-0123456789abcdef"



@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    with (serve(openai_sim(SimState(api_key=OPENAI_KEY, strict=False))) as oai,
          serve(AnthropicSimulator(ANTHROPIC_KEY).app) as ant):
        yield {"oai": f"{oai}/v1", "ant": ant}


def gateway(engine, urls, refusing: str, *, failover: bool, chain: list[str], log_to=None):
    """gpt-4o on the ``refusing`` simulator ("oai" or "ant"), gpt-4o-mini on the OpenAI one,
    mixtral-8x7b on the in-process simulated provider; gpt-4o falls back along ``chain``; the
    traffic log in ``log_to`` (a folder), else off."""
    cfg = load_config()
    providers = [ProviderEntry(name="oai", type="openai-compatible", endpoint=urls["oai"],
                               api_key=OPENAI_KEY),
                 ProviderEntry(name="ant", type="anthropic", endpoint=urls["ant"],
                               api_key=ANTHROPIC_KEY),
                 *[p for p in cfg.providers if p.name == "simulated"]]
    own = {"gpt-4o": {"deployments": [Deployment(provider=refusing, model="sim-model")],
                      "fallbacks": chain},
           "gpt-4o-mini": {"deployments": [Deployment(provider="oai")]},
           "mixtral-8x7b": {"deployments": [Deployment(provider="simulated")]}}
    models = [msgspec.structs.replace(m, **own.get(m.name, {})) for m in cfg.models]
    dispatch = msgspec.structs.replace(cfg.dispatch, backoff_ms=0, failure_threshold=1,
                                       content_policy_failover=failover)
    traffic = (msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{log_to / 't.sqlite3'}")
               if log_to is not None else msgspec.structs.replace(cfg.traffic, enabled=False))
    return create_app(msgspec.structs.replace(cfg, providers=providers, models=models,
                                              dispatch=dispatch, traffic=traffic),
                      engine=engine)


def chat(c: TestClient, content: str = "FAIL CONTENT please", **kw):
    return c.post("/v1/chat/completions", json={
        "model": "gpt-4o", "max_tokens": 64,
        "messages": [{"role": "user", "content": content}], **kw})


def answered(r) -> tuple[str, str | None]:
    """A chat reply's text and its first choice's finish reason (a stream's joined)."""
    if not r.headers["content-type"].startswith("text/event-stream"):
        choice = r.json()["choices"][0]
        return choice["message"].get("content") or "", choice["finish_reason"]
    events = [msgspec.json.decode(line[6:]) for line in r.text.splitlines()
              if line.startswith("data: {")]
    choices = [e["choices"][0] for e in events if e.get("choices")]
    return ("".join(c["delta"].get("content") or "" for c in choices),
            next((c["finish_reason"] for c in choices if c.get("finish_reason")), None))


@pytest.mark.parametrize("refusing", ["oai", "ant"])
def test_off_by_default_the_refusal_is_a_400_and_opens_no_breaker(engine, urls, refusing):
    app = gateway(engine, urls, refusing, failover=False, chain=["mixtral-8x7b"])
    with TestClient(app) as c:
        replies = [chat(c) for _ in range(3)]
        upstream = app.state.gateway.dispatchers["gpt-4o"].upstreams[0]
    assert [r.status_code for r in replies] == [400] * 3
    assert replies[0].json()["error"]["code"] == "content_policy_violation"
    assert upstream.calls == 3 and upstream.breaker.state == "closed"  # threshold 1


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("refusing", ["oai", "ant"])
def test_on_it_moves_to_a_model_another_provider_serves(engine, urls, refusing, stream):
    # gpt-4o-mini is the OpenAI simulator's: after its refusal, skipped
    chain = ["gpt-4o-mini", "mixtral-8x7b"] if refusing == "oai" else ["mixtral-8x7b"]
    app = gateway(engine, urls, refusing, failover=True, chain=chain)
    with TestClient(app) as c:
        r = chat(c, stream=stream)
        upstream = app.state.gateway.dispatchers["gpt-4o"].upstreams[0]
    assert r.status_code == 200 and r.headers["x-contextforge-model"] == "mixtral-8x7b"
    assert upstream.breaker.state == "closed"


def test_with_no_other_provider_the_refusal_reaches_the_client(engine, urls):
    app = gateway(engine, urls, "oai", failover=True, chain=["gpt-4o-mini"])
    with TestClient(app) as c:
        r = chat(c)
    assert r.status_code == 400


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("refusing", ["oai", "ant"])
def test_on_a_200_refusal_moves_to_a_model_another_provider_serves(engine, urls, refusing,
                                                                   stream, tmp_path):
    chain = ["gpt-4o-mini", "mixtral-8x7b"] if refusing == "oai" else ["mixtral-8x7b"]
    app = gateway(engine, urls, refusing, failover=True, chain=chain, log_to=tmp_path)
    with TestClient(app) as c:
        r = chat(c, "FAIL FILTERED please", stream=stream)
        gw = app.state.gateway
        upstream = gw.dispatchers["gpt-4o"].upstreams[0]
        mixtral = gw.engine.catalog.get("mixtral-8x7b")
    assert r.status_code == 200 and r.headers["x-contextforge-model"] == "mixtral-8x7b"
    text, finish = answered(r)
    assert text and finish != "content_filter"
    assert upstream.calls == 1 and upstream.breaker.state == "closed"  # threshold 1
    log = TrafficLog(f"sqlite:///{tmp_path / 't.sqlite3'}")
    try:
        row = log.get(r.headers["x-contextforge-request-id"])
    finally:
        log.close()
    assert row is not None and row.model == "mixtral-8x7b"
    assert row.error == "fell back from gpt-4o"
    # the refused answer was billed too
    alone = Catalog.cost_usd(mixtral, row.input_tokens or 0, row.output_tokens or 0)
    assert row.cost_usd > alone


@pytest.mark.parametrize("refusing", ["oai", "ant"])
def test_on_a_completion_filtered_after_its_first_words_moves_on_too(engine, urls, refusing):
    app = gateway(engine, urls, refusing, failover=True, chain=["mixtral-8x7b"])
    with TestClient(app) as c:
        r = chat(c, "FAIL FILTERLATE please")
    assert r.status_code == 200 and r.headers["x-contextforge-model"] == "mixtral-8x7b"
    assert answered(r)[1] != "content_filter"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("refusing", ["oai", "ant"])
def test_off_a_200_refusal_reaches_the_client_as_it_came(engine, urls, refusing, stream):
    app = gateway(engine, urls, refusing, failover=False, chain=["mixtral-8x7b"])
    with TestClient(app) as c:
        r = chat(c, "FAIL FILTERED please", stream=stream)
        upstream = app.state.gateway.dispatchers["gpt-4o"].upstreams[0]
    assert r.status_code == 200 and r.headers["x-contextforge-model"] == "gpt-4o"
    assert answered(r) == ("", "content_filter")
    assert upstream.breaker.state == "closed"
    if stream:
        assert r.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("refusing", ["oai", "ant"])
def test_a_stream_refused_after_its_first_words_is_not_failed_over(engine, urls, refusing):
    app = gateway(engine, urls, refusing, failover=True, chain=["mixtral-8x7b"])
    with TestClient(app) as c:
        r = chat(c, "FAIL FILTERLATE please", stream=True)
    assert r.status_code == 200 and r.headers["x-contextforge-model"] == "gpt-4o"
    text, finish = answered(r)
    assert text.lower().startswith("echo:") and finish == "content_filter"


@pytest.mark.parametrize("stream", [False, True])
def test_with_no_other_provider_a_200_refusal_is_the_answer(engine, urls, stream):
    app = gateway(engine, urls, "oai", failover=True, chain=["gpt-4o-mini"])
    with TestClient(app) as c:
        r = chat(c, "FAIL FILTERED please", stream=stream)
    assert r.status_code == 200 and r.headers["x-contextforge-model"] == "gpt-4o"
    assert answered(r) == ("", "content_filter")


@pytest.mark.parametrize(("body", "refused"), [
    (b'{"error": {"message": "rejected", "code": "content_policy_violation"}}', True),
    (b'{"error": {"code": "content_filter", "message": "filtered"}}', True),  # Azure
    (b'{"type": "error", "error": {"type": "invalid_request_error", '
     b'"message": "Output blocked by content filtering policy"}}', True),
    (b'{"error": {"message": "Invalid messages", "code": null}}', False),
    (b'{"error": {"message": "x", "code": ["odd"]}}', False),
])
def test_content_policy_400s_are_told_apart(body, refused):
    exc = error_for_status("p", 400, body, {})
    assert isinstance(exc, UpstreamRejected) and not exc.retryable and exc.status == 400
    assert isinstance(exc, UpstreamRefused) is refused
