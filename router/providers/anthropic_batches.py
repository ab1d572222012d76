"""Anthropic's Message Batches API, as a client (``router.providers.batch_api.BatchAPI``):
start a batch of Messages requests, read its state, cancel it, read its results.

Shapes (https://docs.anthropic.com/en/api/creating-message-batches, the ``anthropic`` SDK's
``types.messages.MessageBatch`` and ``MessageBatchIndividualResponse``): ``POST
/v1/messages/batches`` ``{requests: [{custom_id, params}]}`` where ``params`` is a Messages
body; a batch is ``{id, type: "message_batch", processing_status: in_progress | canceling |
ended, request_counts, created_at, results_url, ...}``; ``GET /v1/messages/batches/{id}``,
``GET /v1/messages/batches?limit=``, ``POST /v1/messages/batches/{id}/cancel``; the results
are JSONL at ``results_url``, each ``{custom_id, result: {type: succeeded, message} |
{type: errored, error: {type: "error", error: {type, message}}} | {type: canceled} |
{type: expired}}``. The bodies are the adapter's own (``request_body``, ``completion``).

The API keeps no tag on a batch, so a submission whose answer was lost is recognised (``find``)
as a batch created since the submission began with exactly its number of requests; two such
submissions at once on one key could be confused (the window is one HTTP round trip).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import msgspec

from router.providers._base import ProviderError
from router.providers.anthropic import NAME, AnthropicProvider
from router.providers.batch_api import LineResponse, ProviderBatch, ResultLine
from router.providers.http_io import error_for_exception, error_for_status, send_json
from router.wire.anthropic import ERROR_STATUS
from router.wire.openai import ChatCompletion, ChatRequest


class _Counts(msgspec.Struct, frozen=True):
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        return self.processing + self.succeeded + self.errored + self.canceled + self.expired


class _Batch(msgspec.Struct):
    id: str
    processing_status: str
    created_at: str = ""
    request_counts: _Counts = _Counts()
    results_url: str | None = None

    def ours(self) -> ProviderBatch:
        # The results' address travels where OpenAI's output file does.
        return ProviderBatch(self.id, self.processing_status,
                             self.processing_status == "ended", self.results_url)


class _Page(msgspec.Struct):
    data: list[_Batch]


class _ErrorObject(msgspec.Struct, frozen=True):
    type: str = "api_error"
    message: str = ""


class _ErrorResponse(msgspec.Struct):
    error: _ErrorObject = _ErrorObject()


class _Result(msgspec.Struct):
    type: str
    message: dict[str, Any] | None = None
    error: _ErrorResponse | None = None


class _Line(msgspec.Struct):
    custom_id: str
    result: _Result


_LINE = msgspec.json.Decoder(_Line)
_ENCODE = msgspec.json.Encoder()


class AnthropicBatches:
    """The Message Batches API of one deployment (its endpoint, key and version)."""

    def __init__(self, provider: AnthropicProvider, http: httpx.AsyncClient):
        self.provider, self.http, self.name = provider, http, NAME
        self._url = f"{provider.messages_url}/batches"

    def encode(self, lines: list[tuple[str, ChatRequest]]) -> bytes:
        return _ENCODE.encode({"requests": [
            {"custom_id": cid, "params": self.provider.request_body(request)}
            for cid, request in lines]})

    async def submit(self, payload: bytes, tag: str) -> ProviderBatch:
        data = await send_json(self.http, NAME, self._url, content=payload,
                               headers=self.provider.auth_headers)
        return msgspec.convert(data, _Batch).ours()

    async def find(self, tag: str, count: int, since: float) -> ProviderBatch | None:
        data = await send_json(self.http, NAME, self._url, method="GET",
                               params={"limit": "100"}, headers=self.provider.auth_headers)
        for batch in msgspec.convert(data, _Page).data:
            created = _timestamp(batch.created_at)
            if batch.request_counts.total == count and created is not None and \
                    created >= since - 1:
                return batch.ours()
        return None

    async def get(self, batch_id: str) -> ProviderBatch:
        data = await send_json(self.http, NAME, f"{self._url}/{batch_id}", method="GET",
                               headers=self.provider.auth_headers)
        return msgspec.convert(data, _Batch).ours()

    async def cancel(self, batch_id: str) -> ProviderBatch:
        data = await send_json(self.http, NAME, f"{self._url}/{batch_id}/cancel",
                               headers=self.provider.auth_headers)
        return msgspec.convert(data, _Batch).ours()

    async def results(self, batch: ProviderBatch) -> dict[str, ResultLine]:
        if not batch.output_file_id:
            return {}
        try:
            response = await self.http.get(batch.output_file_id,
                                           headers=self.provider.auth_headers)
        except httpx.HTTPError as exc:
            raise error_for_exception(NAME, exc) from None
        if response.status_code >= 400:
            raise error_for_status(NAME, response.status_code, response.content,
                                   response.headers)
        out = {}
        for raw in response.content.splitlines():
            if raw.strip():
                line = _LINE.decode(raw)
                out[line.custom_id] = ResultLine(line.custom_id, _response(line.result))
        return out

    def completion(self, request: ChatRequest, body: Any) -> ChatCompletion:
        return self.provider.completion(request, body)

    def error(self, status: int, body: Any) -> ProviderError:
        return error_for_status(NAME, status, _ENCODE.encode(body), {})


def _response(result: _Result) -> LineResponse | None:
    """A result as the HTTP answer the request would have had live; None when it never ran."""
    if result.type == "succeeded":
        return LineResponse(200, result.message)
    if result.type == "errored" and result.error is not None:
        err = result.error.error
        return LineResponse(ERROR_STATUS.get(err.type, 500),
                            {"type": "error", "error": {"type": err.type,
                                                        "message": err.message}})
    return None  # canceled, expired


def _timestamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
