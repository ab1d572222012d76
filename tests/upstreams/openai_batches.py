"""OpenAI's Files and Batches API, simulated: mounted by the OpenAI simulator
(``openai_compat.create_app(batches=BatchSim())``), with its keys and errors.

Shapes as OpenAI documents them and its SDK reads them (``openai.types.FileObject``,
``Batch``, ``BatchRequestCounts``): ``POST /v1/files`` (multipart ``purpose=batch`` and
``file``), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``POST /v1/batches``
(``input_file_id``, ``endpoint``, ``completion_window: "24h"``, ``metadata``),
``GET /v1/batches`` (a cursor page, newest first), ``GET /v1/batches/{id}``,
``POST /v1/batches/{id}/cancel``. Output and error lines are ``{id, custom_id, response:
{status_code, request_id, body}, error}``; a line the batch never ran is in the error file
with ``response: null`` and ``error: {code: "batch_expired", ...}``.

A batch is ``validating`` when created, ``in_progress`` once read, and answers its lines
``BatchSim.delay_s`` after its creation, each as ``POST /v1/chat/completions`` would
(``openai_compat.chat_answer``: 2xx in the output file, errors in the error file). Its state
moves when it is read (no background task: nothing runs between the test's reads). Knobs:
``fail`` (the next batch ``failed`` at validation, no lines run), ``expire`` (the next batch
``expired`` with every line unrun), and ``submissions`` counts ``POST /v1/batches``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath

from tests.upstreams.openai_compat import ApiError, SimState, chat_answer


def _json(data: Any, status: int = 200) -> Response[bytes]:
    return Response(json.dumps(data).encode(), status_code=status,
                    media_type="application/json")


def _authorized(request: Request) -> None:
    state: SimState = request.app.state.sim
    if request.headers.get("authorization", "") != f"Bearer {state.api_key}":
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")


@dataclass
class BatchSim:
    """The files and batches the simulator holds, and its knobs (module docstring)."""

    delay_s: float = 0.5
    fail: bool = False
    expire: bool = False
    submissions: int = 0
    cancels: int = 0
    files: dict[str, tuple[dict[str, Any], bytes]] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    _ready_at: dict[str, float] = field(default_factory=dict)
    _mode: dict[str, str] = field(default_factory=dict)

    def add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        fid = f"file-{uuid.uuid4().hex[:24]}"
        meta = {"id": fid, "object": "file", "bytes": len(content),
                "created_at": int(time.time()), "filename": filename, "purpose": purpose,
                "status": "processed", "expires_at": None, "status_details": None}
        self.files[fid] = (meta, content)
        return meta

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        file_id, endpoint = body.get("input_file_id"), body.get("endpoint")
        if file_id not in self.files:
            raise ApiError(400, f"Invalid 'input_file_id': '{file_id}'.",
                           param="input_file_id")
        if endpoint not in ("/v1/chat/completions", "/v1/embeddings", "/v1/responses"):
            raise ApiError(400, f"Invalid value for 'endpoint': '{endpoint}'.",
                           param="endpoint")
        if body.get("completion_window") != "24h":
            raise ApiError(400, "Invalid value for 'completion_window'.",
                           param="completion_window")
        self.submissions += 1
        bid, now = f"batch_{uuid.uuid4().hex[:24]}", int(time.time())
        lines = [x for x in self.files[file_id][1].splitlines() if x.strip()]
        batch = {"id": bid, "object": "batch", "endpoint": endpoint, "errors": None,
                 "input_file_id": file_id, "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": now,
                 "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None,
                 "completed_at": None, "failed_at": None, "expired_at": None,
                 "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                 "metadata": body.get("metadata")}
        self.batches[bid] = batch
        self._ready_at[bid] = time.monotonic() + self.delay_s
        self._mode[bid] = "fail" if self.fail else "expire" if self.expire else "run"
        self.fail = self.expire = False
        return batch

    def read(self, bid: str) -> dict[str, Any]:
        """The batch, moved along by the time passed since its creation."""
        batch, now = self.batches[bid], int(time.time())
        if batch["status"] == "validating":
            if self._mode[bid] == "fail":
                batch.update(status="failed", failed_at=now, errors={"object": "list", "data": [
                    {"code": "invalid_request", "message": "simulated validation failure",
                     "param": None, "line": 1}]})
                return batch
            batch.update(status="in_progress", in_progress_at=now)
        elif batch["status"] == "cancelling":
            batch.update(status="cancelled", cancelled_at=now)
        elif batch["status"] == "in_progress" and time.monotonic() >= self._ready_at[bid]:
            self._finish(batch, now)
        return batch

    def _finish(self, batch: dict[str, Any], now: int) -> None:
        out, err = [], []
        expire = self._mode[batch["id"]] == "expire"
        for raw in self.files[batch["input_file_id"]][1].splitlines():
            if not raw.strip():
                continue
            item = json.loads(raw)
            line: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:24]}",
                                    "custom_id": item["custom_id"], "response": None,
                                    "error": None}
            if expire:
                line["error"] = {"code": "batch_expired", "message": "This request could "
                                 "not be executed before the completion window expired."}
                err.append(line)
                continue
            status, body = chat_answer(item["body"])
            line["response"] = {"status_code": status,
                                "request_id": f"req_{uuid.uuid4().hex[:24]}", "body": body}
            (out if status == 200 else err).append(line)
        counts = batch["request_counts"]
        counts.update(completed=len(out), failed=len(err))
        for kind, lines in (("output", out), ("error", err)):
            if lines:
                content = "".join(json.dumps(x) + "\n" for x in lines).encode()
                meta = self.add_file(content, f"{batch['id']}_{kind}.jsonl", "batch_output")
                batch[f"{kind}_file_id"] = meta["id"]
        if expire:
            batch.update(status="expired", expired_at=now)
        else:
            batch.update(status="completed", finalizing_at=now, completed_at=now)

    def cancel(self, bid: str) -> dict[str, Any]:
        batch = self.batches.get(bid)
        if batch is None:
            raise ApiError(404, f"No such Batch object: {bid}", param="id")
        if batch["status"] not in ("validating", "in_progress"):
            raise ApiError(409, f"Cannot cancel a batch with status '{batch['status']}'.")
        self.cancels += 1
        batch.update(status="cancelling", cancelling_at=int(time.time()))
        return batch

    def file(self, fid: str) -> tuple[dict[str, Any], bytes]:
        if fid not in self.files:
            raise ApiError(404, f"No such File object: {fid}", param="id")
        return self.files[fid]

    def page(self, limit: int) -> dict[str, Any]:
        data = [self.read(b) for b in reversed(list(self.batches))][:limit]
        return {"object": "list", "data": data, "has_more": len(self.batches) > limit,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}

    def routes(self) -> list[Any]:
        """The Files and Batches handlers, bound to this simulator."""
        sim = self

        @post("/v1/files", status_code=200)
        async def upload(request: Request) -> Response[bytes]:
            async def run() -> Response[bytes]:
                form = await request.form()
                upload = form.get("file")
                if form.get("purpose") != "batch" or not isinstance(upload, UploadFile):
                    raise ApiError(400, "'purpose' must be 'batch' and 'file' a file.",
                                   param="purpose")
                return _json(sim.add_file(await upload.read(), upload.filename or "file",
                                          "batch"))
            return await _guarded(request, run)

        @get("/v1/files/{file_id:str}")
        async def file_meta(request: Request, file_id: FromPath[str]) -> Response[bytes]:
            async def run() -> Response[bytes]:
                return _json(sim.file(file_id)[0])
            return await _guarded(request, run)

        @get("/v1/files/{file_id:str}/content")
        async def file_content(request: Request, file_id: FromPath[str]) -> Response[bytes]:
            async def run() -> Response[bytes]:
                return Response(sim.file(file_id)[1], media_type="application/octet-stream")
            return await _guarded(request, run)

        @post("/v1/batches", status_code=200)
        async def create(request: Request) -> Response[bytes]:
            async def run() -> Response[bytes]:
                return _json(sim.create(json.loads(await request.body())))
            return await _guarded(request, run)

        @get("/v1/batches")
        async def listing(request: Request) -> Response[bytes]:
            async def run() -> Response[bytes]:
                return _json(sim.page(int(request.query_params.get("limit", 20))))
            return await _guarded(request, run)

        @get("/v1/batches/{batch_id:str}")
        async def retrieve(request: Request, batch_id: FromPath[str]) -> Response[bytes]:
            async def run() -> Response[bytes]:
                if batch_id not in sim.batches:
                    raise ApiError(404, f"No such Batch object: {batch_id}", param="id")
                return _json(sim.read(batch_id))
            return await _guarded(request, run)

        @post("/v1/batches/{batch_id:str}/cancel", status_code=200)
        async def cancel(request: Request, batch_id: FromPath[str]) -> Response[bytes]:
            async def run() -> Response[bytes]:
                return _json(sim.cancel(batch_id))
            return await _guarded(request, run)

        return [upload, file_meta, file_content, create, listing, retrieve, cancel]


async def _guarded(request: Request, run: Callable[[], Awaitable[Response[bytes]]]
                   ) -> Response[bytes]:
    """``run``'s answer for a caller with the simulator's key; errors in OpenAI's shape."""
    try:
        _authorized(request)
        return await run()
    except ApiError as exc:
        return exc.response()
