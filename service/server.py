"""``contextforge serve``: the gateway app under uvicorn."""

from __future__ import annotations

import importlib.util
import logging

import msgspec
import uvicorn
from litestar import Litestar

from router.config import Config, is_loopback, tls_files
from service.app import create_app
from service.timeouts import with_header_timeout

log = logging.getLogger("contextforge.server")


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
    when installed (about 2x plain), the header deadline, the bounded drain and TLS
    (``server.tls``)."""
    server = config.server
    fast = {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        # httptools parses faster, and our subclass bounds the wait for request headers.
        "http": (with_header_timeout(server.header_timeout_s)
                 if importlib.util.find_spec("httptools") else "h11"),
    }
    settings = {"host": server.host, "port": server.port, "lifespan": "on",
                "access_log": False, "log_level": "info",
                "timeout_graceful_shutdown": server.drain_timeout_s,
                # uvicorn's own X-Forwarded-For handling trusts any loopback peer by default:
                # off, the app reads forwarding headers itself (service.proxies says why).
                "proxy_headers": False, **_tls(config), **fast, **overrides}
    return uvicorn.Config(app or create_app(config), **settings)  # type: ignore[arg-type]


def _tls(config: Config) -> dict[str, object]:
    files = tls_files(config)
    if files is None:
        return {}
    cert, key, password = files
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key),
            "ssl_keyfile_password": password}


def plain_http_warning(config: Config) -> str | None:
    """What to warn about when the gateway is reachable from other machines over plain
    HTTP with no proxy in front (keys would cross the network in clear); None otherwise. A
    warning, not an error: TLS is often terminated by a proxy or a load balancer that is not
    listed in ``server.trusted_proxies`` (it forwards no client address)."""
    server = config.server
    if is_loopback(server.host) or server.tls is not None or server.trusted_proxies:
        return None
    return (f"serving plain HTTP on {server.host}: API keys cross the network in clear "
            "unless a proxy in front terminates TLS; set server.tls to terminate it here")


def serve(config: Config) -> None:
    """Run the gateway until interrupted (blocks)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    # httpx logs every upstream call at INFO: a line per request, and the URL in each.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    warning = plain_http_warning(config)
    if warning:
        log.warning(warning)
    uvicorn.Server(uvicorn_config(config)).run()
