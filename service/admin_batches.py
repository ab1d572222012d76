"""The admin API's view of batches: ``GET /admin/batches`` (every tenant's for the platform's
operators, an organisation's own otherwise) with counts and per-state line progress, and
``GET /admin/batches/{id}`` with this replica's runner (lines in flight, live load)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, get

from service.auth import needs, own_only, tenant_in_view
from service.batch_api import NotFound
from service.batch_runner import BatchRunner

_ENCODE = msgspec.json.Encoder()


def _row(tenant: str, batch: Any, lines: dict[str, int]) -> dict[str, Any]:
    counts = batch.request_counts
    done = counts.completed + counts.failed
    return {"tenant": tenant, **msgspec.to_builtins(batch),
            "progress": done / counts.total if counts.total else 1.0, "lines": lines}


@get("/batches", guards=[needs("viewer", platform=False)])
async def admin_list_batches(request: Request[Any, Any, Any], batches: BatchRunner,
                             tenant: str | None = None, status: str | None = None,
                             after: str | None = None, limit: int = 100) -> Response[bytes]:
    """Batches newest first, with their counts, progress (0..1) and lines per state."""
    tenant = tenant_in_view(request, tenant)
    store = batches.store
    found = await asyncio.to_thread(store.list_batches, tenant, after=after, status=status,
                                    limit=min(max(limit, 1), 1000))
    rows = [_row(t, b, await asyncio.to_thread(store.line_states, b.id)) for t, b in found]
    return Response(_ENCODE.encode({"data": rows, "runner": _runner(batches)}),
                    media_type="application/json")


@get("/batches/{batch_id:str}", guards=[needs("viewer", platform=False)])
async def admin_show_batch(batch_id: str, request: Request[Any, Any, Any],
                           batches: BatchRunner) -> Response[bytes]:
    """One batch, its lines per state, and this replica's runner."""
    store = batches.store
    tenant = await asyncio.to_thread(store.tenant_of, batch_id)
    if tenant is None:
        raise NotFound(f"no batch {batch_id!r}", param="id")
    own_only(request, tenant)
    found = await asyncio.to_thread(store.get_batch, tenant, batch_id)
    lines = await asyncio.to_thread(store.line_states, batch_id)
    return Response(_ENCODE.encode({**_row(tenant, found, lines), "runner": _runner(batches)}),
                    media_type="application/json")


def _runner(batches: BatchRunner) -> dict[str, Any]:
    return {"id": batches.owner, "lines_in_flight": batches.in_flight,
            "concurrency": batches.config.concurrency,
            "live_in_flight": batches.live.in_flight,
            "yield_above": batches.config.yield_above, "rounds_yielded": batches.yielded}


BATCH_ADMIN_ROUTES = [admin_list_batches, admin_show_batch]
