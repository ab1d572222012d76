"""The gateway under uvicorn over real HTTP, as ``contextforge serve`` runs it (httptools,
header deadline, lifespan), for tests that need real sockets."""

from __future__ import annotations

import logging
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
    drain, TLS when ``server.tls`` is set), its base URL yielded; shut down when the block
    ends (it waits for the drain)."""
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
    scheme = "https" if config.server.tls is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(config.server.drain_timeout_s + 15)
        sock.close()


# Where a failure inside the served app is logged. uvicorn's logging set-up stops "uvicorn.*"
# records at their own handler and Litestar's replaces the root's, so pytest's caplog sees
# none of them: tests that assert "no traceback" listen on these loggers directly.
APP_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "litestar", "contextforge")


class Lines(logging.Handler):
    """Every record the app's loggers emit, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def app_logs() -> Iterator[Lines]:
    """The records of ``APP_LOGGERS`` while the block runs."""
    lines = Lines()
    loggers = [logging.getLogger(name) for name in APP_LOGGERS]
    for logger in loggers:
        logger.addHandler(lines)
    try:
        yield lines
    finally:
        for logger in loggers:
            logger.removeHandler(lines)


def redis_prefix(url: str = "redis://127.0.0.1:6379/0"):
    """A fresh Redis key prefix for one test (CI and sessions share the server), yielded;
    every key under it is deleted afterwards. Use it as ``yield from redis_prefix()`` in a
    fixture."""
    import uuid

    import redis

    p = f"cf-test-{uuid.uuid4().hex[:12]}:"
    yield p
    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(match=p + "*"))
    if keys:
        r.delete(*keys)
    r.close()
