"""Local upstream servers that speak each provider's real wire format, for adapter tests.

Each module holds one provider's simulator as an ASGI app; ``serve`` runs any of them under
uvicorn on a free loopback port, so adapters are exercised over real HTTP (streaming included).
``faults`` wraps the OpenAI and Anthropic simulators in a fault injector with a schedule that
changes at run time (errors, resets, hangs, malformed bodies, cut streams, latency), for
dispatch tests and ``benchmarks/chaos.py``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def serve(app: Any, *, lifespan: str = "off", startup_timeout_s: float = 30.0
          ) -> Iterator[str]:
    """Run ``app`` on 127.0.0.1 in a background thread; yield its base URL. The gateway
    itself runs this way too, with ``lifespan="on"`` (it loads its engine there)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound here and handed to uvicorn: no race for the port
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan=lifespan, access_log=False, log_level="warning",
                            loop="asyncio", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("upstream simulator did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
