"""A local Replicate predictions API for official language models, for adapter tests.

Routes (as documented): ``POST /v1/models/{owner}/{name}/predictions`` (201 with a prediction;
``Prefer: wait`` answers finished predictions), ``GET /v1/predictions/{id}``,
``POST /v1/predictions/{id}/cancel`` (200 with the prediction, ``canceled`` unless it had
already ended) and the
prediction's ``urls.stream`` (here ``GET /v1/streams/{id}`` on the same server; the real one is
on streaming.api.replicate.com). Every route checks ``Authorization: Bearer <token>``. Errors
are problem JSON ``{"title", "detail", "status"}`` (``application/problem+json``), with
``invalid_fields`` on 422.

The model input is checked against a Meta Llama 3 style schema: ``prompt`` (required string),
``system_prompt``, ``max_tokens`` / ``min_tokens`` (integers), ``temperature`` (0-5),
``top_p`` (0-1), ``top_k``, ``stop_sequences`` (a comma-separated string), penalties, ``seed``,
``prompt_template``; anything else is a 422, as is a wrong type.

The answer is ``Echo: <prompt>`` (plus `` [system=...]`` when a system prompt came), as a list
of word pieces; one word is one token; ``max_tokens`` and ``stop_sequences`` cut it. Metrics
report ``input_token_count`` (words of prompt and system prompt) and ``output_token_count``.
Stream events: ``output`` (plain text; a piece with newlines spans several ``data:`` lines),
``error`` (JSON ``{"detail"}``), ``done`` (JSON, ``{}`` or ``{"reason": "error"}``), each with
an ``id``.

Triggers in the prompt: ``FAIL 400`` / ``401`` / ``404`` / ``422`` / ``429``
(``retry-after: 5``) / ``500`` / ``503`` answer with that status; ``FAIL PREDICTION`` makes the
prediction fail ("CUDA out of memory") — at creation when waiting, in the stream otherwise;
``FAIL MIDSTREAM`` sends an error after the first output; ``SLOW`` leaves the prediction
``processing`` after the wait, finishing after two polls; ``HANG`` leaves it ``processing``
until canceled (a stream sends one piece, then waits); ``NO STREAM`` gives no
``urls.stream``; ``NO METRICS`` reports no token counts; ``EVIL URL`` points ``urls.get`` and
``urls.stream`` to another host. A model whose name starts with ``missing`` is a 404.

Docs: https://replicate.com/docs/reference/http,
https://replicate.com/docs/topics/predictions/create-a-prediction,
https://replicate.com/docs/topics/predictions/streaming
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.response import Stream

API_TOKEN = "r8_sim_0123456789abcdef"

_BODY_FIELDS = {"input", "stream", "webhook", "webhook_events_filter"}
_INPUT_TYPES: dict[str, type | tuple[type, ...]] = {
    "prompt": str, "system_prompt": str, "max_tokens": int, "min_tokens": int,
    "temperature": (int, float), "top_p": (int, float), "top_k": int, "stop_sequences": str,
    "length_penalty": (int, float), "presence_penalty": (int, float),
    "frequency_penalty": (int, float), "seed": int, "prompt_template": str,
    "log_performance_metrics": bool}
_FAIL = re.compile(r"FAIL (400|401|404|422|429|500|503)\b")
_TITLES = {400: "Bad request", 401: "Unauthenticated", 404: "Not found",
           422: "Input validation failed", 429: "Request was throttled",
           500: "Internal server error", 503: "Service unavailable"}


class Problem(Exception):
    def __init__(self, status: int, detail: str, invalid_fields: list[Any] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.invalid_fields = status, detail, invalid_fields


def _problem(p: Problem) -> Response[Any]:
    body: dict[str, Any] = {"title": _TITLES.get(p.status, "Error"), "detail": p.detail,
                            "status": p.status}
    if p.invalid_fields is not None:
        body["invalid_fields"] = p.invalid_fields
    headers = {"retry-after": "5"} if p.status == 429 else {}
    return Response(json.dumps(body), status_code=p.status, headers=headers,
                    media_type="application/problem+json")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class ReplicateSimulator:
    """The simulator's state: its token, predictions, and the last request body."""

    def __init__(self, api_token: str = API_TOKEN):
        self.api_token = api_token
        self.last_body: dict[str, Any] | None = None
        self.last_headers: dict[str, str] = {}
        self.create_headers: dict[str, str] = {}  # of the last prediction created
        self.requests: list[tuple[str, str]] = []  # (method, path) of every call
        self.predictions: dict[str, dict[str, Any]] = {}
        self._pending_polls: dict[str, int] = {}
        self._ids = itertools.count(1)
        self.app = Litestar(route_handlers=self._handlers(), debug=False)

    def _auth(self, request: Request[Any, Any, Any]) -> None:
        self.requests.append((request.method, request.url.path))
        self.last_headers = dict(request.headers)
        if request.headers.get("authorization") != f"Bearer {self.api_token}":
            raise Problem(401, "You did not pass a valid authentication token")

    def _known(self, request: Request[Any, Any, Any], pid: str) -> None:
        """Authenticate, then 404 unless ``pid`` names a prediction."""
        self._auth(request)
        if pid not in self.predictions:
            raise Problem(404, "The requested resource could not be found.")

    def _handlers(self) -> list[Any]:
        @post("/v1/models/{owner:str}/{name:str}/predictions", status_code=201)
        async def create(request: Request[Any, Any, Any], owner: str,
                         name: str) -> Response[Any]:
            self.create_headers = dict(request.headers)
            try:
                self._auth(request)
                raw = self._body(await request.body())
                if name.startswith("missing"):
                    raise Problem(404, "The requested resource could not be found.")
                _check_input(raw["input"])
                _trigger(raw["input"]["prompt"])
            except Problem as p:
                return _problem(p)
            wait = request.headers.get("prefer", "").startswith("wait")
            prediction = self._start(raw, f"{owner}/{name}", str(request.base_url), wait)
            return Response(prediction, status_code=201, media_type="application/json")

        @get("/v1/predictions/{pid:str}")
        async def read(request: Request[Any, Any, Any], pid: str) -> Response[Any]:
            try:
                self._known(request, pid)
            except Problem as p:
                return _problem(p)
            if self._pending_polls.get(pid):
                self._pending_polls[pid] -= 1
                if not self._pending_polls[pid]:
                    self._finish(pid)
            return Response(self.predictions[pid], media_type="application/json")

        @post("/v1/predictions/{pid:str}/cancel", status_code=200)
        async def cancel(request: Request[Any, Any, Any], pid: str) -> Response[Any]:
            try:
                self._known(request, pid)
            except Problem as p:
                return _problem(p)
            prediction = self.predictions[pid]
            if prediction["status"] not in ("succeeded", "failed", "canceled"):
                prediction.update(status="canceled", completed_at=_now())
                self._pending_polls.pop(pid, None)
            return Response(prediction, media_type="application/json")

        @get("/v1/streams/{pid:str}")
        async def stream(request: Request[Any, Any, Any], pid: str) -> Response[Any]:
            try:
                self._known(request, pid)
            except Problem as p:
                return _problem(p)
            return Stream(self._events(pid), media_type="text/event-stream",
                          headers={"cache-control": "no-store"})

        return [create, read, cancel, stream]

    def _body(self, body: bytes) -> dict[str, Any]:
        try:
            raw = json.loads(body)
        except ValueError:
            raise Problem(400, "The request body is not valid JSON.") from None
        if not isinstance(raw, dict):
            raise Problem(400, "The request body must be a JSON object.")
        self.last_body = raw
        extra = sorted(set(raw) - _BODY_FIELDS)
        if extra:
            raise Problem(422, f"Additional property {extra[0]} is not allowed",
                          [{"type": "additional_property_not_allowed", "field": extra[0]}])
        if not isinstance(raw.get("input"), dict):
            raise Problem(422, "- input: Invalid type. Expected: object",
                          [{"type": "required", "field": "input"}])
        if not isinstance(raw.get("stream", False), bool):
            raise Problem(422, "- stream: Invalid type. Expected: boolean")
        return raw

    # --- predictions ---------------------------------------------------------------------

    def _start(self, raw: dict[str, Any], model: str, base_url: str,
               wait: bool) -> dict[str, Any]:
        pid = f"sim{next(self._ids):04d}q"
        model_input = raw["input"]
        prompt = model_input["prompt"]
        base = base_url.rstrip("/")
        urls = {"cancel": f"{base}/v1/predictions/{pid}/cancel",
                "get": f"{base}/v1/predictions/{pid}", "web": f"https://replicate.com/p/{pid}"}
        if raw.get("stream") and "NO STREAM" not in prompt:
            urls["stream"] = f"{base}/v1/streams/{pid}"
        if "EVIL URL" in prompt:
            urls["get"] = f"http://evil.example:1/v1/predictions/{pid}"
            urls["stream"] = f"http://evil.example:1/v1/streams/{pid}"
        self.predictions[pid] = {
            "id": pid, "model": model, "version": "hidden", "input": model_input, "logs": "",
            "output": None, "data_removed": False, "error": None, "status": "starting",
            "created_at": _now(), "started_at": None, "completed_at": None, "urls": urls,
            "metrics": {}}
        if "HANG" in prompt:  # runs until canceled
            self.predictions[pid]["status"] = "processing"
        elif "SLOW" in prompt or "EVIL URL" in prompt:  # still running when the wait ends
            self.predictions[pid]["status"] = "processing"
            self._pending_polls[pid] = 2
        elif wait:
            self._finish(pid)
        elif "stream" not in urls:  # async: done by the first poll
            self._pending_polls[pid] = 1
        # a streamed prediction finishes while its stream is read
        return dict(self.predictions[pid])

    def _finish(self, pid: str) -> None:
        p = self.predictions[pid]
        model_input = p["input"]
        p["started_at"] = p["started_at"] or _now()
        p["completed_at"] = _now()
        if "FAIL PREDICTION" in model_input["prompt"]:
            p.update(status="failed", error="CUDA out of memory", metrics={"predict_time": 0.1})
            return
        pieces = answer(model_input)
        metrics: dict[str, Any] = {"predict_time": 0.42, "total_time": 0.5}
        if "NO METRICS" not in model_input["prompt"]:
            metrics |= {"input_token_count": _words(model_input["prompt"]) + _words(
                model_input.get("system_prompt", "")),
                "output_token_count": _words("".join(pieces)),
                "tokens_per_second": 100.0, "time_to_first_token": 0.05}
        p.update(status="succeeded", output=pieces, metrics=metrics)

    async def _events(self, pid: str) -> AsyncIterator[bytes]:
        p = self.predictions[pid]
        prompt = p["input"]["prompt"]
        p["status"] = "processing"
        stamp = int(time.time())
        n = itertools.count()

        def event(name: str, data: str) -> bytes:
            lines = "".join(f"data: {line}\n" for line in data.split("\n"))
            return f"event: {name}\nid: {stamp}:{next(n)}\n{lines}\n".encode()

        if "FAIL PREDICTION" in prompt:
            self._finish(pid)
            yield event("error", json.dumps({"detail": p["error"]}))
            yield event("done", json.dumps({"reason": "error"}))
            return
        if "HANG" in prompt:  # one piece, then nothing until canceled
            yield event("output", answer(p["input"])[0])
            while p["status"] == "processing":
                await asyncio.sleep(0.01)
            yield event("done", json.dumps({"reason": "canceled"}))
            return
        for k, piece in enumerate(answer(p["input"])):
            yield event("output", piece)
            if k == 0 and "FAIL MIDSTREAM" in prompt:
                p.update(status="failed", error="the model crashed")
                yield event("error", json.dumps({"detail": "the model crashed"}))
                yield event("done", json.dumps({"reason": "error"}))
                return
            if k == 0:
                yield event("logs", "generating...")
        self._finish(pid)
        yield event("done", "{}")


# --- validation and answers ----------------------------------------------------------------


def _check_input(model_input: dict[str, Any]) -> None:
    problems = []
    for key, value in model_input.items():
        expected = _INPUT_TYPES.get(key)
        if expected is None:
            problems.append({"type": "additional_property_not_allowed", "field": f"input.{key}",
                             "description": f"Additional property {key} is not allowed"})
        elif (isinstance(value, bool) and expected is not bool) or \
                not isinstance(value, expected):
            problems.append({"type": "invalid_type", "field": f"input.{key}",
                             "description": f"Invalid type for {key}"})
    if not isinstance(model_input.get("prompt"), str):
        problems.append({"type": "required", "field": "input.prompt",
                         "description": "prompt is required"})
    if not problems:
        for key, lo, hi in (("temperature", 0, 5), ("top_p", 0, 1)):
            if key in model_input and not lo <= model_input[key] <= hi:
                problems.append({"type": "number_out_of_range", "field": f"input.{key}",
                                 "description": f"Must be between {lo} and {hi}"})
        if model_input.get("max_tokens", 1) < 1:
            problems.append({"type": "number_out_of_range", "field": "input.max_tokens",
                             "description": "Must be greater than or equal to 1"})
    if problems:
        detail = "\n".join(f"- {p['field']}: {p['description']}" for p in problems)
        raise Problem(422, detail, problems)


def _trigger(prompt: str) -> None:
    m = _FAIL.search(prompt)
    if m:
        status = int(m[1])
        detail = {401: "You did not pass a valid authentication token",
                  429: "Request was throttled. Expected available in 5 seconds."}.get(
            status, f"simulated {status}")
        raise Problem(status, detail, [] if status == 422 else None)


def _words(text: str) -> int:
    return len(text.split())


def answer(model_input: dict[str, Any]) -> list[str]:
    """The output pieces: ``Echo: <prompt>`` cut by stop sequences and ``max_tokens``."""
    text = f"Echo: {model_input['prompt']}"
    if model_input.get("system_prompt"):
        text += f" [system={model_input['system_prompt']}]"
    for stop in (model_input.get("stop_sequences") or "").split(","):
        at = text.find(stop) if stop else -1
        if at >= 0:
            text = text[:at]
    words = text.split(" ")
    limit = model_input.get("max_tokens")
    if limit is not None and len(words) > limit:
        words = words[:limit]
    return [w + " " for w in words[:-1]] + [words[-1]]
