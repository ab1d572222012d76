"""Hostile input against the real server: clear 4xx answers, and no client stalls the others."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar, Request, post
from litestar.testing import TestClient

from router.config import load_config
from router.traffic import TrafficLog
from service.app import create_app
from tests.e2e.gateway_server import gateway
from tests.upstreams import serve

MSG = [{"role": "user", "content": "Is 97 prime?"}]



def configured(tmp_path, **server):
    cfg = load_config()
    traffic = msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{tmp_path / 't.sqlite3'}")
    return msgspec.structs.replace(cfg, traffic=traffic,
                                   server=msgspec.structs.replace(cfg.server, **server))


def test_a_maximal_prompt_is_refused_without_stalling_health_checks(tmp_path, engine):
    """A ~7.5 MB prompt (under the 8 MiB body limit) of ~1.5M tokens: counting stops at the
    cap, off the event loop, so /healthz answers promptly throughout."""
    words = "the quick brown fox jumps over the lazy dog while 1234 naive routers count"
    text = (words + " ") * (7_500_000 // (len(words) + 1))
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]})
    assert len(body) < 8 * 1024 * 1024
    with gateway(configured(tmp_path), engine) as url, httpx.Client(base_url=url) as c:
        c.get("/healthz")
        result: dict[str, Any] = {}

        def big() -> None:
            t0 = time.perf_counter()
            result["r"] = httpx.post(f"{url}/v1/chat/completions", content=body,
                                     headers={"content-type": "application/json"}, timeout=60)
            result["s"] = time.perf_counter() - t0

        worker = threading.Thread(target=big)
        worker.start()
        waits = []
        while worker.is_alive():
            t0 = time.perf_counter()
            assert c.get("/healthz").status_code == 200
            waits.append(time.perf_counter() - t0)
            time.sleep(0.005)
        worker.join()
    r = result["r"]
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert "262144" in err["message"]
    # Counting on the event loop would hold one /healthz for most of the big request's time;
    # off the loop, no wait comes near it (a ratio within this run: hosts differ in speed).
    elapsed = result["s"]
    assert len(waits) > 5 and max(waits) < elapsed / 4, (
        f"/healthz waited up to {max(waits):.3f} s of the big request's {elapsed:.3f} s")


def test_a_route_caps_its_prompts_below_the_server(tmp_path, engine):
    cfg = configured(tmp_path, max_prompt_tokens=50)
    with TestClient(create_app(cfg, engine=engine)) as c:
        ok = c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
        long = c.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": [
            {"role": "user", "content": "word " * 60}]})
    assert ok.status_code == 200
    assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"


def test_deep_nesting_is_a_quiet_400(tmp_path, engine, caplog):
    deep = b'{"a": ' * 50_000 + b"1" + b"}" * 50_000  # free-form JSON: decoded all the way
    chat = (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], '
            b'"response_format": {"type": "json_schema", "json_schema": ' + deep + b"}}")
    messages = (b'{"model": "auto", "max_tokens": 5, "messages": [{"role": "user", '
                b'"content": "hi"}], "tools": [{"name": "f", "input_schema": ' + deep + b"}]}")
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        embeddings = b'{"model": "m", "input": "x", "extra": ' + deep + b"}"
        for path, body in (("/v1/chat/completions", chat), ("/v1/messages", messages),
                           ("/v1/embeddings", embeddings)):
            r = c.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, (path, r.text)
            assert "nested too deeply" in r.text
    assert "Traceback" not in caplog.text and "unhandled" not in caplog.text


@pytest.mark.parametrize("model,dimensions,status", [
    ("all-MiniLM-L6-v2", 1_000_000, 400),
    ("all-MiniLM-L6-v2", 2**63, 400),
    ("all-MiniLM-L6-v2", 3e12, 400),
    ("all-MiniLM-L6-v2", 128, 400),  # the local encoder cannot shorten its vectors
    ("text-embedding-3-small", 1537, 400),  # past the model's own 1536
    ("text-embedding-3-small", 256, 200),
])
def test_embedding_dimensions_are_bounded_by_the_model(tmp_path, engine, model, dimensions,
                                                       status):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        r = c.post("/v1/embeddings", json={"model": model, "input": "hi",
                                           "dimensions": dimensions})
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["error"]["param"] == "dimensions"
    else:
        assert len(r.json()["data"][0]["embedding"]) == dimensions


@pytest.mark.parametrize("extra,param", [
    ({"tools": [{"type": "function", "function": {"name": "get_weather"}}],
      "tool_choice": {"type": "function", "function": {"name": "delete_everything"}}},
     "tool_choice.function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not base64@@"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:text/html,<b>hi</b>"}}]}]},
     "messages[0].content[0].image_url.url"),
])
def test_requests_an_upstream_would_reject_are_refused_before_routing(tmp_path, engine, extra,
                                                                      param):
    with TestClient(create_app(configured(tmp_path), engine=engine)) as c:
        r = c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG, **extra})
        decisions = c.get("/metrics").text
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert "contextforge_routing_decisions_total{" not in decisions


SECRET_KEY = "sk-deployment-secret-0123456789"
SECRET_HEADER = "tok-custom-auth-abcdef"


@post("/v1/chat/completions")
async def echo_headers(request: Request) -> dict:
    """An upstream (or a proxy before it) that echoes the request's headers in its errors."""
    raise_body = {"error": {"message": f"bad request; you sent {dict(request.headers)}"}}
    from litestar import Response

    return Response(raise_body, status_code=400)  # type: ignore[return-value]


def test_upstream_echoes_never_leak_the_deployments_credentials(tmp_path, engine):
    echo = Litestar(route_handlers=[echo_headers])
    with serve(echo) as upstream:
        host = upstream.removeprefix("http://")
        cfg = configured(tmp_path)
        model = msgspec.convert({
            "name": "echo-model", "input_price": 1, "output_price": 1, "context_window": 8000,
            "deployments": [{"provider": "openai-compatible",
                             "endpoint": f"http://{host}/v1",
                             "api_key": SECRET_KEY, "headers": {"x-custom-auth": SECRET_HEADER}}],
        }, type=type(cfg.models[0]))
        cfg = msgspec.structs.replace(cfg, models=[*cfg.models, model])
        with TestClient(create_app(cfg, engine=engine)) as c:
            for stream in (False, True):
                r = c.post("/v1/chat/completions", json={"model": "echo-model", "messages": MSG,
                                                         "stream": stream})
                assert r.status_code == 400, r.text
                assert "you sent" in r.text  # the upstream's message still reaches the client
                for secret in (SECRET_KEY, SECRET_HEADER):
                    assert secret not in r.text
    log = TrafficLog(cfg.traffic.dsn, base_dir=cfg.resolve("."))
    rows = [r for r in log.records() if r.model == "echo-model"]
    log.close()
    assert len(rows) == 2
    for row in rows:
        text = json.dumps(msgspec.to_builtins(row))
        assert "you sent" in text
        for secret in (SECRET_KEY, SECRET_HEADER):
            assert secret not in text


def test_a_body_that_never_arrives_times_out_and_a_slow_header_is_cut(tmp_path, engine):
    cfg = configured(tmp_path, body_timeout_s=0.5, header_timeout_s=0.5)
    with gateway(cfg, engine) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                      b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{")
            t0 = time.monotonic()
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert time.monotonic() - t0 < 5
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")  # never finishes its headers
            t0 = time.monotonic()
            assert s.recv(65536) == b""  # closed by the server
            assert time.monotonic() - t0 < 5
        with socket.create_connection((host, int(port)), timeout=10) as s:
            t0 = time.monotonic()
            assert s.recv(65536) == b""  # connected, sent nothing: closed too
            assert time.monotonic() - t0 < 5
