"""The gateway under uvicorn over real HTTP, as ``contextforge serve`` runs it (httptools,
header deadline, lifespan), for tests that need real sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from service.app import create_app
from service.server import uvicorn_config


@contextmanager
def gateway(config, engine) -> Iterator[str]:
    """The gateway under uvicorn as ``contextforge serve`` runs it (httptools, timeouts,
    drain); shut down when the block ends (it waits for the drain)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(config, create_app(config, engine=engine),
                                           log_level="warning", loop="asyncio"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(config.server.drain_timeout_s + 15)
        sock.close()
