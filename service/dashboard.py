"""``GET /dashboard``: one page, served by the gateway itself, that draws ``/admin/stats``.

The page and its assets (``service/static/dashboard/``: the page's script and style, and
uPlot, MIT, vendored with its license: no CDN) hold no data, so they are served without a
credential; the page asks for an admin or viewer key once, keeps it in the tab's
``sessionStorage`` and sends it as a Bearer header to the JSON API (never in a URL). A strict
Content-Security-Policy allows only this origin's scripts, styles and API. The files are read
once, off the event loop, and kept in memory.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from litestar import Response, get

from service.errors import ModelNotFound

ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css",
          "uPlot.iife.min.js": "text/javascript", "uPlot.min.css": "text/css",
          "LICENSE.uPlot.txt": "text/plain"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer", "x-frame-options": "DENY"}


class NotFound(ModelNotFound):
    code = "not_found"


class _Files:
    """The static files, read on first use (a worker thread) and kept."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] | None = None

    @staticmethod
    def _read() -> dict[str, bytes]:
        folder = resources.files("service") / "static" / "dashboard"
        return {name: (folder / name).read_bytes() for name in [*ASSETS, "index.html"]}

    async def get(self, name: str) -> bytes:
        if self._files is None:  # two first callers may both read: harmless, and no lock
            self._files = await asyncio.to_thread(self._read)
        return self._files[name]


_FILES = _Files()


@get("/dashboard", include_in_schema=False)
async def dashboard_page() -> Response[bytes]:
    """The dashboard page (it fetches ``/admin/stats`` with the key it is given)."""
    return Response(await _FILES.get("index.html"), media_type="text/html; charset=utf-8",
                    headers={**_HEADERS, "cache-control": "no-store"})


@get("/dashboard/assets/{name:str}", include_in_schema=False)
async def dashboard_asset(name: str) -> Response[Any]:
    """The page's script, style and the vendored chart library."""
    if name not in ASSETS:
        raise NotFound(f"no dashboard asset {name!r}", param="name")
    return Response(await _FILES.get(name), media_type=ASSETS[name],
                    headers={**_HEADERS, "cache-control": "public, max-age=3600"})


ROUTES = [dashboard_page, dashboard_asset]
