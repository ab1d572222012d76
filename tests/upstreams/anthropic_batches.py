"""Anthropic's Message Batches API, simulated: mounted by the Anthropic simulator
(``AnthropicSimulator(batches=BatchSim())``), with its key and version checks.

Shapes as documented and as the ``anthropic`` SDK reads them (``types.messages.MessageBatch``,
``MessageBatchIndividualResponse``): ``POST /v1/messages/batches`` ``{requests: [{custom_id,
params}]}``, ``GET /v1/messages/batches`` (a page, newest first), ``GET
/v1/messages/batches/{id}``, ``POST /v1/messages/batches/{id}/cancel``, ``GET
/v1/messages/batches/{id}/results`` (JSONL, each ``{custom_id, result}`` with ``result``
``{type: succeeded, message}``, ``{type: errored, error: {type: "error", error: {type,
message}}}``, ``{type: canceled}`` or ``{type: expired}``). Times are RFC 3339 strings.

A batch is ``in_progress`` until ``BatchSim.delay_s`` after its creation, then ``ended``,
each request answered as ``POST /v1/messages`` would (its checks and ``FAIL`` triggers
included). A cancelled batch is ``canceling`` until read again, then ``ended`` with its
requests ``canceled``. Knobs: ``expire`` (the next batch ends with every request
``expired``); ``submissions`` and ``cancels`` count the calls.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from litestar import Request, Response, get, post
from litestar.params import FromPath

from router.wire import anthropic as aw
from tests.upstreams.anthropic import Invalid, _trigger_failure, answer, checked

if TYPE_CHECKING:
    from tests.upstreams.anthropic import AnthropicSimulator


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _error(err: Invalid) -> Response[bytes]:
    return Response(aw.error_body(err.status, err.message), status_code=err.status,
                    media_type="application/json")


@dataclass
class BatchSim:
    """The batches the simulator holds, and its knobs (module docstring)."""

    delay_s: float = 0.5
    expire: bool = False
    submissions: int = 0
    cancels: int = 0
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _ready_at: dict[str, float] = field(default_factory=dict)
    _expire: set[str] = field(default_factory=set)

    def create(self, body: dict[str, Any], base: str) -> dict[str, Any]:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise Invalid("requests: Field required")
        seen = set()
        for i, r in enumerate(requests):
            cid = r.get("custom_id") if isinstance(r, dict) else None
            if not isinstance(cid, str) or not 1 <= len(cid) <= 64 or cid in seen:
                raise Invalid(f"requests.{i}.custom_id: must be unique, 1 to 64 characters")
            seen.add(cid)
        self.submissions += 1
        bid = f"msgbatch_{uuid.uuid4().hex[:24]}"
        batch = {"id": bid, "type": "message_batch", "processing_status": "in_progress",
                 "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0,
                                    "canceled": 0, "expired": 0},
                 "ended_at": None, "created_at": _now(), "expires_at": _now(),
                 "archived_at": None, "cancel_initiated_at": None, "results_url": None}
        self.batches[bid], self.requests[bid] = batch, requests
        self._ready_at[bid] = time.monotonic() + self.delay_s
        if self.expire:
            self._expire.add(bid)
            self.expire = False
        batch["_base"] = base
        return batch

    def read(self, bid: str, sim: AnthropicSimulator) -> dict[str, Any]:
        """The batch, moved along by the time passed since its creation."""
        batch = self.batches[bid]
        if batch["processing_status"] == "canceling":
            self._end(batch, [self._outcome(r, "canceled", sim) for r in self.requests[bid]])
        elif batch["processing_status"] == "in_progress" and \
                time.monotonic() >= self._ready_at[bid]:
            kind = "expired" if bid in self._expire else "run"
            self._end(batch, [self._outcome(r, kind, sim) for r in self.requests[bid]])
        return batch

    def _outcome(self, item: dict[str, Any], kind: str, sim: AnthropicSimulator
                 ) -> dict[str, Any]:
        if kind != "run":
            return {"custom_id": item["custom_id"], "result": {"type": kind}}
        params = item.get("params")
        try:
            req = checked(json.dumps(params).encode(), params)
            _trigger_failure(req)
        except Invalid as err:
            error = json.loads(aw.error_body(err.status, err.message))
            return {"custom_id": item["custom_id"], "result": {"type": "errored",
                                                               "error": error}}
        message = json.loads(aw.ENCODER.encode(answer(req, sim.message_id())))
        return {"custom_id": item["custom_id"], "result": {"type": "succeeded",
                                                           "message": message}}

    def _end(self, batch: dict[str, Any], outcomes: list[dict[str, Any]]) -> None:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for o in outcomes:
            counts[o["result"]["type"]] += 1
        self.results[batch["id"]] = outcomes
        batch.update(processing_status="ended", ended_at=_now(), request_counts=counts,
                     results_url=f"{batch['_base']}/v1/messages/batches/{batch['id']}/results")

    def routes(self, sim: AnthropicSimulator) -> list[Any]:
        """The Message Batches handlers, behind ``sim``'s key checks."""
        store = self

        def shown(batch: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in batch.items() if not k.startswith("_")}

        def found(bid: str) -> dict[str, Any]:
            if bid not in store.batches:
                raise Invalid(f"No such message batch: {bid}", 404)
            return store.read(bid, sim)

        async def guarded(request: Request, run: Any) -> Response[bytes]:
            try:
                sim.authorize(request)
                result = await run()
            except Invalid as err:
                return _error(err)
            if isinstance(result, Response):
                return result
            return Response(json.dumps(result).encode(), media_type="application/json")

        @post("/v1/messages/batches", status_code=200)
        async def create(request: Request) -> Response[bytes]:
            async def run() -> Any:
                base = str(request.base_url).rstrip("/")
                return shown(store.create(json.loads(await request.body()), base))
            return await guarded(request, run)

        @get("/v1/messages/batches")
        async def listing(request: Request) -> Response[bytes]:
            async def run() -> Any:
                limit = int(request.query_params.get("limit", 20))
                data = [shown(store.read(b, sim)) for b in reversed(list(store.batches))]
                data = data[:limit]
                return {"data": data, "has_more": len(store.batches) > limit,
                        "first_id": data[0]["id"] if data else None,
                        "last_id": data[-1]["id"] if data else None}
            return await guarded(request, run)

        @get("/v1/messages/batches/{batch_id:str}")
        async def retrieve(request: Request, batch_id: FromPath[str]) -> Response[bytes]:
            async def run() -> Any:
                return shown(found(batch_id))
            return await guarded(request, run)

        @post("/v1/messages/batches/{batch_id:str}/cancel", status_code=200)
        async def cancel(request: Request, batch_id: FromPath[str]) -> Response[bytes]:
            async def run() -> Any:
                batch = found(batch_id)
                if batch["processing_status"] == "in_progress":
                    store.cancels += 1
                    batch.update(processing_status="canceling", cancel_initiated_at=_now())
                return shown(batch)
            return await guarded(request, run)

        @get("/v1/messages/batches/{batch_id:str}/results")
        async def results(request: Request, batch_id: FromPath[str]) -> Response[bytes]:
            async def run() -> Any:
                if found(batch_id)["processing_status"] != "ended":
                    raise Invalid(f"Message Batch {batch_id} has not yet ended", 400)
                body = "".join(json.dumps(o) + "\n" for o in store.results[batch_id])
                return Response(body.encode(), media_type="application/binary")
            return await guarded(request, run)

        return [create, listing, retrieve, cancel, results]
