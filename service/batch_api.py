"""OpenAI's Batch API: ``/v1/files`` (upload a JSONL of requests, read results) and
``/v1/batches`` (create, read, list, cancel), in OpenAI's shapes, so the ``openai`` SDK's
``files`` and ``batches`` calls work unmodified.

A tenant sees only its own files and batches (another's id is a 404, as if it did not
exist); the tenant is the credential's (``service.auth``). An input file is checked when it
is uploaded and its bodies when a batch is created from it, each refusal a 400 naming the
line; the lines then run in the background (``service.batch_runner``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State, UploadFile

from router.batch.lines import InvalidFile, parse
from router.batch.store import BatchStore, NotCancellable
from router.batch.wire import (
    CREATE_DECODER,
    ENCODER,
    ENDPOINTS,
    FileDeleted,
    FileObject,
    Page,
)
from router.config import BatchConfig
from router.wire.openai import EMBEDDINGS_DECODER, REQUEST_DECODER
from service.auth import Forbidden, principal_of
from service.batch_runner import BatchRunner
from service.errors import APIError, BadRequest, Conflict, decode_body


class NotFound(APIError):
    status, type, code = 404, "invalid_request_error", "not_found"


class TooLarge(APIError):
    status, type, code = 413, "invalid_request_error", "file_too_large"


def provide_batches(state: State) -> BatchRunner:
    """The batch runner (and its store), or a 409 when ``batch.enabled`` is false."""
    runner = state.get("batches")
    if runner is None:
        raise Conflict("the Batch API is off on this server (batch.enabled: false)")
    return runner


def _json(obj: Any, status: int = 200) -> Response[bytes]:
    return Response(ENCODER.encode(obj), media_type="application/json", status_code=status)


def _page(items: list[Any], limit: int) -> Page:
    more = len(items) > limit
    items = items[:limit]
    return Page(data=items, has_more=more, first_id=items[0].id if items else None,
                last_id=items[-1].id if items else None)


def _limit(limit: int) -> int:
    if not 1 <= limit <= 10_000:
        raise BadRequest("limit must be between 1 and 10000", param="limit")
    return limit


def _invalid(exc: InvalidFile) -> BadRequest:
    return BadRequest(str(exc), param=f"line {exc.line}" if exc.line else "file",
                      code=exc.code)


def routes(config: BatchConfig) -> list[Any]:
    """The handlers, with the upload's size bound from ``config``."""

    @post("/files", status_code=200, request_max_body_size=config.max_file_bytes + 65536)
    async def upload_file(request: Request[Any, Any, Any], batches: BatchRunner
                          ) -> Response[bytes]:
        """A batch input file (multipart ``file`` and ``purpose=batch``), checked line by
        line."""
        form = await request.form()
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "batch":
            raise BadRequest(f"purpose {purpose!r} is not supported here: only 'batch'",
                             param="purpose")
        if not isinstance(upload, UploadFile):
            raise BadRequest("send the file as the multipart field 'file'", param="file")
        content = await upload.read()
        if len(content) > config.max_file_bytes:
            raise TooLarge(f"the file has {len(content)} bytes, more than "
                           f"{config.max_file_bytes} (batch.max_file_bytes)", param="file")
        try:  # off the event loop: a file may hold 50,000 lines
            await asyncio.to_thread(parse, content, max_lines=config.max_lines)
        except InvalidFile as exc:
            raise _invalid(exc) from None
        tenant = principal_of(request).tenant
        found = await asyncio.to_thread(batches.store.add_file, tenant,
                                        upload.filename or "batch.jsonl", "batch", content)
        return _json(found)

    return [upload_file, list_files, get_file, file_content, delete_file, create_batch,
            list_batches, get_batch, cancel_batch]


async def _file(request: Request[Any, Any, Any], store: BatchStore, file_id: str
                ) -> FileObject:
    found = await asyncio.to_thread(store.get_file, principal_of(request).tenant, file_id)
    if found is None:
        raise NotFound(f"No such File object: {file_id}", param="id")
    return found


@get("/files")
async def list_files(request: Request[Any, Any, Any], batches: BatchRunner,
                     purpose: str | None = None, after: str | None = None,
                     limit: int = 100) -> Response[bytes]:
    """The caller's files, newest first (cursor pages: ``after`` the last id seen)."""
    limit = _limit(limit)
    files = await asyncio.to_thread(batches.store.list_files, principal_of(request).tenant,
                                    purpose=purpose, after=after, limit=limit + 1)
    return _json(_page(files, limit))


@get("/files/{file_id:str}")
async def get_file(file_id: str, request: Request[Any, Any, Any], batches: BatchRunner
                   ) -> Response[bytes]:
    return _json(await _file(request, batches.store, file_id))


@get("/files/{file_id:str}/content")
async def file_content(file_id: str, request: Request[Any, Any, Any], batches: BatchRunner
                       ) -> Response[bytes]:
    """The file's bytes: an input file as uploaded, a batch's output or error lines."""
    content = await asyncio.to_thread(batches.store.file_content,
                                      principal_of(request).tenant, file_id)
    if content is None:
        raise NotFound(f"No such File object: {file_id}", param="id")
    return Response(content, media_type="application/octet-stream")


@delete("/files/{file_id:str}", status_code=200)
async def delete_file(file_id: str, request: Request[Any, Any, Any], batches: BatchRunner
                      ) -> Response[bytes]:
    if not await asyncio.to_thread(batches.store.delete_file, principal_of(request).tenant,
                                   file_id):
        raise NotFound(f"No such File object: {file_id}", param="id")
    return _json(FileDeleted(id=file_id, deleted=True))


@post("/batches", status_code=200)
async def create_batch(request: Request[Any, Any, Any], batches: BatchRunner
                       ) -> Response[bytes]:
    """A batch of an uploaded file's requests, ``validating`` until the runner starts it."""
    body = decode_body(CREATE_DECODER, await request.body())
    if body.completion_window != "24h":
        raise BadRequest("completion_window must be '24h'", param="completion_window")
    if body.endpoint not in ENDPOINTS:
        raise BadRequest(f"endpoint {body.endpoint!r} is not supported: use one of "
                         f"{', '.join(ENDPOINTS)}", param="endpoint")
    if body.metadata is not None and (len(body.metadata) > 16 or any(
            len(k) > 64 or len(v) > 512 for k, v in body.metadata.items())):
        raise BadRequest("metadata: at most 16 pairs, keys up to 64 characters, values up "
                         "to 512", param="metadata")
    principal = principal_of(request)
    if not principal.may_call(body.endpoint):
        raise Forbidden(f"this credential may not call {body.endpoint}")
    store = batches.store
    await _file(request, store, body.input_file_id)
    content = await asyncio.to_thread(store.file_content, principal.tenant,
                                      body.input_file_id)
    assert content is not None
    requests = await asyncio.to_thread(_checked, content, body.endpoint,
                                       batches.config.max_lines)
    batch = await asyncio.to_thread(store.create_batch, principal.tenant,
                                    msgspec.json.encode(principal), body.endpoint,
                                    body.input_file_id, requests, body.metadata)
    batches.wake()
    return _json(batch)


def _checked(content: bytes, endpoint: str, max_lines: int) -> list[Any]:
    """The file's requests, every body decoded as ``endpoint`` takes it (a 400 naming the
    first line that does not decode)."""
    try:
        url, requests = parse(content, max_lines=max_lines)
    except InvalidFile as exc:
        raise _invalid(exc) from None
    if url != endpoint:
        raise BadRequest(f"the file's requests are for {url}, not {endpoint}",
                         param="endpoint", code="mixed_urls")
    decoder = REQUEST_DECODER if endpoint == "/v1/chat/completions" else EMBEDDINGS_DECODER
    for r in requests:
        try:
            decode_body(decoder, r.body)
        except APIError as err:
            raise BadRequest(f"line {r.line} (custom_id {r.custom_id!r}): body: "
                             f"{err.message}", param=f"line {r.line}",
                             code="invalid_body") from None
    return requests


@get("/batches")
async def list_batches(request: Request[Any, Any, Any], batches: BatchRunner,
                       after: str | None = None, limit: int = 20) -> Response[bytes]:
    """The caller's batches, newest first (cursor pages)."""
    limit = _limit(limit)
    found = await asyncio.to_thread(batches.store.list_batches, principal_of(request).tenant,
                                    after=after, limit=limit + 1)
    return _json(_page([b for _, b in found], limit))


@get("/batches/{batch_id:str}")
async def get_batch(batch_id: str, request: Request[Any, Any, Any], batches: BatchRunner
                    ) -> Response[bytes]:
    found = await asyncio.to_thread(batches.store.get_batch, principal_of(request).tenant,
                                    batch_id)
    if found is None:
        raise NotFound(f"No such Batch object: {batch_id}", param="id")
    return _json(found)


@post("/batches/{batch_id:str}/cancel", status_code=200)
async def cancel_batch(batch_id: str, request: Request[Any, Any, Any], batches: BatchRunner
                       ) -> Response[bytes]:
    """``cancelling`` now; ``cancelled`` once its lines in flight end (lines not started
    never run, and are in neither file)."""
    try:
        found = await asyncio.to_thread(batches.store.cancel, principal_of(request).tenant,
                                        batch_id)
    except NotCancellable as exc:
        raise Conflict(str(exc)) from None
    if found is None:
        raise NotFound(f"No such Batch object: {batch_id}", param="id")
    batches.wake()
    return _json(found)
