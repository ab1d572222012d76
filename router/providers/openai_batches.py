"""OpenAI's Files and Batches API, as a client: upload a JSONL of chat requests, start a
batch of them, read its state, cancel it, and read its output and error files back.

One ``OpenAIBatches`` per ``native_batch`` deployment (``router.providers.native_batch``); the
request bodies are exactly what that deployment's adapter sends live (``request_body``) and
each answer is translated by the same code as a live answer (``completion``), so a line
answered through the Batch API is indistinguishable from one answered live but for its price.

Shapes (https://platform.openai.com/docs/api-reference/batch, the ``openai`` SDK's
``types.Batch`` and ``types.FileObject``): ``POST /files`` multipart (``purpose=batch``,
``file``), ``POST /batches`` ``{input_file_id, endpoint, completion_window: "24h",
metadata}``, ``GET /batches/{id}``, ``GET /batches?limit=``, ``POST /batches/{id}/cancel``,
``GET /files/{id}/content``. An output or error line is ``{id, custom_id, response:
{status_code, request_id, body} | null, error: {code, message} | null}``. Failures map to
the adapters' errors (``router.providers.http_io``).
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from router.providers._base import ProviderError
from router.providers.batch_api import LineResponse, ProviderBatch, ResultLine
from router.providers.http_io import error_for_exception, error_for_status, send_json
from router.providers.openai_compat import OpenAICompatProvider
from router.wire.openai import ChatCompletion, ChatRequest

ENDPOINT = "/v1/chat/completions"
# Where the gateway's own id for a provider batch travels, so a batch whose creation was
# never recorded (a crash in between) is found again instead of being submitted twice.
TAG = "contextforge_batch"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


class _Batch(msgspec.Struct):
    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    metadata: dict[str, str] | None = None

    def ours(self) -> ProviderBatch:
        return ProviderBatch(self.id, self.status, self.status in TERMINAL,
                             self.output_file_id, self.error_file_id)


class _Page(msgspec.Struct):
    data: list[_Batch]


class _Line(msgspec.Struct):
    custom_id: str
    response: LineResponse | None = None


_RESULT = msgspec.json.Decoder(_Line)
_ENCODE = msgspec.json.Encoder()


class OpenAIBatches:
    """The Batch API of one deployment (its endpoint and key), over the gateway's client."""

    def __init__(self, provider: OpenAICompatProvider, http: httpx.AsyncClient):
        self.provider, self.http = provider, http
        self.name = provider.name

    def encode(self, lines: list[tuple[str, ChatRequest]]) -> bytes:
        """The input file: one ``{custom_id, method, url, body}`` per (custom id, request)."""
        return b"".join(_ENCODE.encode({"custom_id": cid, "method": "POST", "url": ENDPOINT,
                                        "body": self.provider.request_body(request)}) + b"\n"
                        for cid, request in lines)

    async def submit(self, content: bytes, tag: str) -> ProviderBatch:
        """Upload ``content`` (``encode``) and start a 24-hour batch of it, tagged ``tag``."""
        try:
            response = await self.http.post(
                f"{self.provider.base_url}/files", headers=self.provider.auth_headers,
                data={"purpose": "batch"},
                files={"file": (f"{tag}.jsonl", content, "application/jsonl")})
        except httpx.HTTPError as exc:
            raise error_for_exception(self.name, exc) from None
        if response.status_code >= 400:
            raise error_for_status(self.name, response.status_code, response.content,
                                   response.headers)
        file_id = response.json()["id"]
        data = await send_json(self.http, self.name, f"{self.provider.base_url}/batches",
                               body={"input_file_id": file_id, "endpoint": ENDPOINT,
                                     "completion_window": "24h", "metadata": {TAG: tag}},
                               headers=self.provider.auth_headers)
        return msgspec.convert(data, _Batch).ours()

    async def find(self, tag: str, count: int = 0, since: float = 0.0) -> ProviderBatch | None:
        """The batch tagged ``tag`` among the upstream's latest 100, if one is."""
        data = await send_json(self.http, self.name, f"{self.provider.base_url}/batches",
                               method="GET", params={"limit": "100"},
                               headers=self.provider.auth_headers)
        page = msgspec.convert(data, _Page)
        return next((b.ours() for b in page.data if (b.metadata or {}).get(TAG) == tag), None)

    async def get(self, batch_id: str) -> ProviderBatch:
        data = await send_json(self.http, self.name,
                               f"{self.provider.base_url}/batches/{batch_id}", method="GET",
                               headers=self.provider.auth_headers)
        return msgspec.convert(data, _Batch).ours()

    async def cancel(self, batch_id: str) -> ProviderBatch:
        data = await send_json(self.http, self.name,
                               f"{self.provider.base_url}/batches/{batch_id}/cancel",
                               body={}, headers=self.provider.auth_headers)
        return msgspec.convert(data, _Batch).ours()

    async def results(self, batch: ProviderBatch) -> dict[str, ResultLine]:
        """Every line of the batch's output and error files, by custom id."""
        out: dict[str, ResultLine] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            try:
                response = await self.http.get(
                    f"{self.provider.base_url}/files/{file_id}/content",
                    headers=self.provider.auth_headers)
            except httpx.HTTPError as exc:
                raise error_for_exception(self.name, exc) from None
            if response.status_code >= 400:
                raise error_for_status(self.name, response.status_code, response.content,
                                       response.headers)
            for raw in response.content.splitlines():
                if raw.strip():
                    line = _RESULT.decode(raw)
                    out[line.custom_id] = ResultLine(line.custom_id, line.response)
        return out

    def completion(self, request: ChatRequest, body: Any) -> ChatCompletion:
        return self.provider.completion(request, body)

    def error(self, status: int, body: Any) -> ProviderError:
        return error_for_status(self.name, status, _ENCODE.encode(body), {})
