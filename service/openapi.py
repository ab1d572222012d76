"""``GET /openapi.json``: the gateway's API described from the msgspec types it decodes with.

Handlers read raw bytes and decode them with the wire structs (strict types, field paths in
errors), so Litestar's generator would see no request bodies. This document is built from those
same structs (``msgspec.json.schema_components``), so what users, SDK generators and fuzzers
(schemathesis) read is what the gateway enforces.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
from litestar import Response, get

from router.batch.wire import Batch, CreateBatch, FileDeleted, FileObject, Page
from router.config import ModelEntry, ProviderEntry
from router.registry import VersionInfo
from router.wire import anthropic as aw
from router.wire.openai import ChatCompletion, ChatRequest, EmbeddingsRequest, EmbeddingsResponse
from service.admin import PurgeRequest
from service.errors import ErrorBody
from service.openai_api import FeedbackRecorded, FeedbackRequest, ModelCard, ModelList

REF = "#/components/schemas/{name}"
JSON = "application/json"

# (method, path, summary, request type, (status, response type), auth)
OPERATIONS: list[tuple[str, str, str, Any, tuple[int, Any], str]] = [
    ("post", "/v1/chat/completions", "Chat completion, routed (SSE when stream is true)",
     ChatRequest, (200, ChatCompletion), "api"),
    ("post", "/v1/messages", "Anthropic Messages, routed", aw.MessagesRequest,
     (200, aw.Message), "api"),
    ("post", "/v1/embeddings", "Embeddings (the local encoder or a catalog model)",
     EmbeddingsRequest, (200, EmbeddingsResponse), "api"),
    ("post", "/v1/feedback", "Rate one logged answer", FeedbackRequest,
     (201, FeedbackRecorded), "api"),
    ("get", "/v1/models", "Catalog models and routes", None, (200, ModelList), "api"),
    ("get", "/v1/models/{model_id}", "One model or route", None, (200, ModelCard), "api"),
    ("post", "/v1/batches", "A batch of an uploaded file's requests (POST /v1/files, "
     "multipart, purpose=batch, uploads the file)", CreateBatch, (200, Batch), "api"),
    ("get", "/v1/batches", "The caller's batches, newest first", None, (200, Page), "api"),
    ("get", "/v1/batches/{batch_id}", "One batch", None, (200, Batch), "api"),
    ("post", "/v1/batches/{batch_id}/cancel", "Cancel a batch", None, (200, Batch), "api"),
    ("get", "/v1/files", "The caller's files, newest first", None, (200, Page), "api"),
    ("get", "/v1/files/{file_id}", "One file", None, (200, FileObject), "api"),
    ("get", "/v1/files/{file_id}/content", "A file's bytes (JSONL)", None, (200, None), "api"),
    ("delete", "/v1/files/{file_id}", "Delete a file", None, (200, FileDeleted), "api"),
    ("get", "/admin/batches", "Batches with counts and progress", None, (200, None), "admin"),
    ("get", "/admin/batches/{batch_id}", "One batch's progress", None, (200, None), "admin"),
    ("get", "/admin/models", "Catalog models with deployments", None, (200, None), "admin"),
    ("get", "/admin/models/{name}", "One catalog model", None, (200, ModelEntry), "admin"),
    ("put", "/admin/models/{name}", "Add or replace a catalog model", ModelEntry,
     (200, ModelEntry), "admin"),
    ("delete", "/admin/models/{name}", "Remove a catalog model", None, (204, None), "admin"),
    ("get", "/admin/providers", "Named providers", None, (200, None), "admin"),
    ("put", "/admin/providers/{name}", "Add or replace a named provider", ProviderEntry,
     (200, ProviderEntry), "admin"),
    ("delete", "/admin/providers/{name}", "Remove a named provider", None, (204, None),
     "admin"),
    ("get", "/admin/deployments", "Deployment health", None, (200, None), "admin"),
    ("get", "/admin/routers", "Router versions in the registry, with state and card figures",
     None, (200, None), "admin"),
    ("post", "/admin/routers/{version}/promote",
     "Make a router version live, here at once and for every replica following the registry",
     None, (200, VersionInfo), "admin"),
    ("get", "/admin/cache", "The response cache's size, bounds, hits and evictions", None,
     (200, None), "admin"),
    ("delete", "/admin/cache/entries/{entry}", "Drop one cache entry", None, (204, None),
     "admin"),
    ("post", "/admin/cache/purge", "Drop every cache entry of a tenant or one of its users",
     PurgeRequest, (200, None), "admin"),
    ("get", "/healthz", "Liveness", None, (200, None), "open"),
    ("get", "/readyz", "Readiness", None, (200, None), "open"),
]


def _operation(summary: str, request: Any, response: tuple[int, Any], auth: str,
               path: str, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    status, body = response
    ok: dict[str, Any] = {"description": "OK" if status != 204 else "No content"}
    if body is not None:
        ok["content"] = {JSON: {"schema": refs[body]}}
    error = {"description": "An error in OpenAI's shape (Anthropic's on /v1/messages)",
             "content": {JSON: {"schema": refs[ErrorBody]}}}
    op: dict[str, Any] = {"summary": summary, "responses": {str(status): ok, "default": error}}
    params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True,
                             "schema": {"type": "string", "minLength": 1}} for p in params]
    if request is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": refs[request]}}}
    if auth != "open":
        op["security"] = [{"bearer": []}, {"apiKey": []}] if auth == "api" else [{"bearer": []}]
    return op


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the gateway's HTTP API."""
    types = sorted({t for op in OPERATIONS for t in (op[3], op[4][1]) if t is not None}
                   | {ErrorBody}, key=lambda t: t.__name__)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    refs = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, request, response, auth in OPERATIONS:
        paths.setdefault(path, {})[method] = _operation(summary, request, response, auth, path,
                                                        refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "ContextForge Router", "version": "0.1.0",
                 "description": "OpenAI- and Anthropic-compatible LLM gateway with a semantic "
                                "router"},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}},
    }


@get("/openapi.json", include_in_schema=False)
async def openapi_handler() -> Response[bytes]:
    """The API description (no credentials needed: it holds no data)."""
    return Response(msgspec.json.encode(openapi_document()), media_type=JSON)
