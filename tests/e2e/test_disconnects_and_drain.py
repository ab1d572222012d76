"""Clients that leave mid-stream and a server that shuts down mid-stream: each request is one
log row, named for what happened, with no traceback; the drain is bounded."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import msgspec

from router.config import Deployment, SimulatedSettings, load_config
from router.traffic import TrafficLog
from tests.e2e.gateway_server import app_logs, gateway

BODY = {"model": "gpt-4o", "stream": True, "max_tokens": 200,
        "messages": [{"role": "user", "content": "Tell me a long story about routers."}]}



def slow_config(tmp_path, drain_s: float):
    cfg = load_config()
    return msgspec.structs.replace(
        cfg, default_deployment=Deployment(provider="simulated",
                                           simulated=SimulatedSettings(tokens_per_s=10)),
        traffic=msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{tmp_path / 't.sqlite3'}"),
        server=msgspec.structs.replace(cfg.server, drain_timeout_s=drain_s))


def rows(cfg):
    log = TrafficLog(cfg.traffic.dsn, base_dir=cfg.resolve("."))
    try:
        return log.records()
    finally:
        log.close()


def test_a_client_leaving_mid_stream_is_one_499_row_and_one_line(tmp_path, engine):
    cfg = slow_config(tmp_path, drain_s=5)
    with gateway(cfg, engine) as url, app_logs() as logs:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=BODY, timeout=10) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the first event, then hang up
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not rows(cfg):
            time.sleep(0.05)
        # The listener hears the app's loggers (so the check below can fail).
        logging.getLogger("uvicorn.error").error("probe")
    [row] = rows(cfg)
    assert row.status == 499 and "disconnected" in row.error
    assert "uvicorn.error ERROR probe" in logs.text
    assert "Traceback" not in logs.text


def test_shutdown_drains_for_a_bounded_time_and_writes_every_row(tmp_path, engine):
    cfg = slow_config(tmp_path, drain_s=0.5)
    got: list[bytes] = []

    def read(url: str) -> None:
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=BODY, timeout=30) as r:
                for line in r.iter_lines():
                    got.append(line.encode())
        except httpx.HTTPError:
            pass  # cut by the server's drain: expected

    t0 = None
    with gateway(cfg, engine) as url:
        reader = threading.Thread(target=read, args=(url,))
        reader.start()
        while not got:
            time.sleep(0.01)
        t0 = time.monotonic()  # leaving the block shuts the server down
    shutdown_s = time.monotonic() - t0
    reader.join(10)
    # 200 tokens at 10/s would take 20 s; the drain cut it after ~0.5 s.
    assert shutdown_s < 5, shutdown_s
    [row] = rows(cfg)
    assert row.status == 499 and row.stream
