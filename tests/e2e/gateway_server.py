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
from service.timeouts import with_header_timeout


@contextmanager
def gateway(config, engine) -> Iterator[str]:
    """The gateway under uvicorn as ``contextforge serve`` runs it (httptools, timeouts)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(
        create_app(config, engine=engine), lifespan="on", access_log=False,
        log_level="warning", loop="asyncio",
        http=with_header_timeout(config.server.header_timeout_s)))
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
        thread.join(15)
        sock.close()
