"""``contextforge serve``: the gateway app under uvicorn."""

from __future__ import annotations

import importlib.util
import logging

import msgspec
import uvicorn
from litestar import Litestar

from router.config import Config
from service.app import create_app
from service.timeouts import with_header_timeout


def with_address(config: Config, host: str | None = None, port: int | None = None) -> Config:
    """``config`` with the command line's host/port, so the auth guard sees the real address."""
    server = config.server
    if host is not None:
        server = msgspec.structs.replace(server, host=host)
    if port is not None:
        server = msgspec.structs.replace(server, port=port)
    return msgspec.structs.replace(config, server=server)


def uvicorn_config(config: Config, app: Litestar | None = None,
                   **overrides: object) -> uvicorn.Config:
    """uvicorn settings for the app (``create_app(config)`` unless given): uvloop + httptools
    when installed (about 2x plain), the header deadline and the bounded drain."""
    server = config.server
    fast = {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        # httptools parses faster, and our subclass bounds the wait for request headers.
        "http": (with_header_timeout(server.header_timeout_s)
                 if importlib.util.find_spec("httptools") else "h11"),
    }
    settings = {"host": server.host, "port": server.port, "lifespan": "on",
                "access_log": False, "log_level": "info",
                "timeout_graceful_shutdown": server.drain_timeout_s, **fast, **overrides}
    return uvicorn.Config(app or create_app(config), **settings)  # type: ignore[arg-type]


def serve(config: Config) -> None:
    """Run the gateway until interrupted (blocks)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    # httpx logs every upstream call at INFO: a line per request, and the URL in each.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.Server(uvicorn_config(config)).run()
