"""Replicate's predictions API, for official language models (Meta Llama and alike).

A call creates a prediction: ``POST {endpoint or https://api.replicate.com}/v1/models/{owner}/
{name}/predictions`` with ``Authorization: Bearer $REPLICATE_API_TOKEN`` and body ``{"input":
{...}}``. The deployment's model id must be ``owner/name`` (e.g. ``meta/meta-llama-3-70b-
instruct``); versioned community models are not served by this adapter.

- ``complete`` sends ``Prefer: wait`` (the API holds the request up to 60 s); a prediction
  still ``starting`` / ``processing`` after that is polled at ``urls.get`` (0.25 s doubling to
  2 s) until ``succeeded``, ``failed`` or ``canceled``. The output is a list of string pieces
  (a plain string is accepted too), joined.
- ``stream`` creates the prediction with ``"stream": true`` (no wait) and reads the SSE stream
  at ``urls.stream`` (``GET``, ``Accept: text/event-stream``): ``output`` events carry plain
  text pieces, ``error`` a JSON ``{"detail"}``, ``done`` ends the stream (its JSON ``reason``
  is ``canceled`` or ``error`` when the prediction did not succeed). A model without
  ``urls.stream`` is waited for and its answer sent as one piece.
- The bearer token is only ever sent to the endpoint's own host or, for the public API, to
  ``https://*.replicate.com`` (where ``urls.get`` / ``urls.stream`` point); any other URL in a
  prediction is refused with ``UpstreamError``.

Input: language models' inputs are model-specific; this adapter uses the keys Meta's Llama
models on Replicate share: ``prompt``, ``system_prompt``, ``max_tokens``, ``temperature``,
``top_p`` and ``stop_sequences`` (one comma-separated string, so a stop sequence containing a
comma is refused with ``UpstreamRejected``). The chat is flattened:

- ``system`` / ``developer`` messages, joined by blank lines -> ``system_prompt``; a
  ``json_object`` / ``json_schema`` response format adds an instruction to answer with one
  JSON object (matching the schema, which is quoted) — these models have no JSON mode.
- a single user message -> ``prompt``, verbatim (the model's own chat template wraps it);
- otherwise the turns as a transcript, ``User: <text>`` / ``Assistant: <text>``, separated by
  blank lines and ending with the last message.

``max_tokens`` is only sent when the caller set a limit (else the model's default applies).
Dropped (no common Llama input): ``seed``, ``user``, penalties, ``parallel_tool_calls``.
Tools, tool messages and images get ``UpstreamRejected``: these inputs cannot carry them.

Usage: ``metrics.input_token_count`` / ``output_token_count`` when the prediction reports them
(for streams, read with one ``GET urls.get`` after ``done``), else ``ctx.count_tokens`` of the
sent ``prompt`` + ``system_prompt`` and of the answer. Replicate reports no finish reason:
``length`` when the caller's limit was reached (output tokens >= ``max_tokens``), else ``stop``.

Errors are problem JSON (``{"title", "detail", "status"}``), mapped by status like every
provider; a ``failed`` or ``canceled`` prediction is an ``UpstreamError`` carrying its
``error``.

A prediction we stop waiting for before it ends (the gateway's timeout, a client that went
away mid-stream, a dropped stream) is canceled upstream with ``POST urls.cancel`` (the
documented ``/v1/predictions/{id}/cancel``), so it stops running and billing. The cancel is sent
in the background, best effort (5 s timeout, errors ignored), and only to a trusted host;
``aclose`` waits for the ones still in flight.

Docs used:
https://replicate.com/docs/reference/http (models.predictions.create, predictions.get,
predictions.cancel)
https://replicate.com/docs/topics/predictions/create-a-prediction (sync mode, Prefer: wait)
https://replicate.com/docs/topics/predictions/streaming (SSE events output / error / done)
https://replicate.com/meta/meta-llama-3-70b-instruct/api (input schema)
https://github.com/replicate/replicate-python (replicate/stream.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec

from router.providers._base import (
    ProviderContext,
    ProviderError,
    SharedClientProvider,
    UpstreamError,
    UpstreamRejected,
)
from router.providers._kit import (
    ChunkStream,
    completion_id,
    config_error,
    resolve_api_key,
    usage_of,
)
from router.providers._settings import Settings
from router.providers.http_io import open_stream, send_json, sse_events
from router.wire.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    Usage,
    has_images,
    message_text,
)

NAME = "replicate"
DEFAULT_BASE_URL = "https://api.replicate.com"
KEY_ENV = "REPLICATE_API_TOKEN"
SYNC_WAIT_S = 60  # what ``Prefer: wait`` holds the request for (the API's maximum)
POLL_FIRST_S, POLL_MAX_S = 0.25, 2.0  # waits between polls of a running prediction
_CANCEL_TIMEOUT_S = 5.0
_TERMINAL = frozenset({"succeeded", "failed", "canceled"})

Body = dict[str, Any]


class _Urls(msgspec.Struct):
    get: str | None = None
    stream: str | None = None
    cancel: str | None = None


class _Metrics(msgspec.Struct):
    input_token_count: float | None = None
    output_token_count: float | None = None


class _Ended(UpstreamError):
    """The prediction's stream said it ended without success: nothing is left to cancel."""


class _Prediction(msgspec.Struct):
    id: str = ""
    status: str = ""
    output: Any = None
    error: Any = None
    urls: _Urls | None = None
    metrics: _Metrics | None = None


class ReplicateSettings(Settings):
    """Replicate reads only the common fields (``model`` must be ``owner/name``)."""


class ReplicateProvider(SharedClientProvider):
    """One official Replicate language model, spoken to through predictions."""

    def __init__(self, settings: ReplicateSettings, ctx: ProviderContext):
        self.settings = settings
        self._ctx = ctx
        self._count: Callable[[str], int] = ctx.count_tokens
        self._base = (settings.endpoint or DEFAULT_BASE_URL).rstrip("/")
        if settings.model and _model_path(settings.model) is None:
            raise config_error(NAME, f"model {settings.model!r} must be an official model id "
                                     "'owner/name'")
        self._auth = {"Authorization": f"Bearer {resolve_api_key(settings, KEY_ENV)}",
                      **settings.headers}
        self._cancels: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:  # never the headers: they hold the key
        return f"ReplicateProvider(endpoint={self._base!r})"

    async def aclose(self) -> None:
        """Let cancels of abandoned predictions finish (each has its own short timeout)."""
        if self._cancels:
            await asyncio.gather(*self._cancels, return_exceptions=True)

    # --- chat ----------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        model_input = _input(request)
        prediction = await self._create(request.model, {"input": model_input}, wait=True)
        try:
            prediction = await self._settle(prediction)
        finally:  # interrupted (timeout, cancelled): ``prediction`` is still the running one
            self._abandon(prediction)
        _raise_if_unsuccessful(prediction)
        text = _output_text(prediction.output)
        usage = self._usage(model_input, prediction.metrics, text)
        message = AssistantMessage(role="assistant", content=text)
        return ChatCompletion(
            id=completion_id(prediction.id), created=int(time.time()), model=request.model,
            choices=[Choice(index=0, message=message,
                            finish_reason=_finish(request, usage.completion_tokens))],
            usage=usage)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatCompletionChunk]:
        model_input = _input(request)
        prediction = await self._create(request.model, {"input": model_input, "stream": True},
                                        wait=False)
        _raise_if_unsuccessful(prediction)
        out = ChunkStream(NAME, request, self._count, id=completion_id(prediction.id))
        stream_url = prediction.urls.stream if prediction.urls else None
        ended = False
        try:  # a client gone mid-stream closes this generator at a yield: cancel upstream
            for chunk in out.role():
                yield chunk
            if stream_url:
                async with contextlib.aclosing(self._read_stream(stream_url)) as stream_pieces:
                    async for piece in stream_pieces:  # aclosing: our exit closes the stream
                        yield out.content(piece)
                ended = True
            else:  # the model cannot stream: wait for it and send the answer whole
                prediction = await self._settle(prediction)
                ended = True
                _raise_if_unsuccessful(prediction)
                yield out.content(_output_text(prediction.output))
        except _Ended:
            ended = True
            raise
        finally:
            if not ended:
                self._abandon(prediction)
        metrics = (await self._final_metrics(prediction)) if stream_url else prediction.metrics
        out.usage = self._usage(model_input, metrics, "".join(out.text))
        yield out.finish(_finish(request, out.usage.completion_tokens))
        yield out.usage_chunk()

    # --- the predictions API -------------------------------------------------------------

    async def _create(self, catalog_name: str, body: Body, *, wait: bool) -> _Prediction:
        model = self.settings.upstream_model(catalog_name)
        path = _model_path(model)
        if path is None:
            raise UpstreamError(f"replicate needs an official model id 'owner/name', not "
                                f"{model!r}; set the deployment's model")
        headers = {**self._auth, "Prefer": "wait"} if wait else self._auth
        data = await send_json(self._ctx.client(), NAME,
                               f"{self._base}/v1/models/{path}/predictions", body=body,
                               headers=headers, timeout=SYNC_WAIT_S + 15 if wait else None)
        return _prediction(data)

    async def _settle(self, prediction: _Prediction) -> _Prediction:
        """Poll ``urls.get`` until the prediction ends (whether or not it succeeded)."""
        delay = POLL_FIRST_S
        while prediction.status not in _TERMINAL:
            url = self._trusted(prediction.urls.get if prediction.urls else None, "get")
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)
            prediction = _prediction(await send_json(self._ctx.client(), NAME, url,
                                                     headers=self._auth, method="GET"))
        return prediction

    def _abandon(self, prediction: _Prediction) -> None:
        """Cancel ``prediction`` upstream in the background unless it has ended."""
        url = prediction.urls.cancel if prediction.urls else None
        if prediction.status in _TERMINAL or not url:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._cancel(url))
        except RuntimeError:  # no loop left (a generator finalised at shutdown)
            return
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _cancel(self, url: str) -> None:
        with contextlib.suppress(ProviderError):  # best effort: it ends on its own anyway
            await send_json(self._ctx.client(), NAME, self._trusted(url, "cancel"),
                            headers=self._auth, timeout=_CANCEL_TIMEOUT_S)

    async def _read_stream(self, url: str) -> AsyncIterator[str]:
        """The text pieces of a prediction's SSE stream, until its ``done`` event."""
        headers = {**self._auth, "Accept": "text/event-stream", "Cache-Control": "no-store"}
        async with open_stream(self._ctx.client(), NAME, self._trusted(url, "stream"),
                               headers=headers, method="GET") as response:
            async for sse in sse_events(NAME, response):
                if sse.event == "output":
                    if sse.data:
                        yield sse.data
                elif sse.event == "error":
                    raise _Ended(f"replicate prediction failed mid-stream: "
                                 f"{_detail(sse.data)}")
                elif sse.event == "done":
                    reason = _done_reason(sse.data)
                    if reason:
                        raise _Ended(f"replicate prediction ended early: {reason}")
                    return
                # "logs" and unknown events carry nothing for the client
        raise UpstreamError("replicate upstream ended the stream before its done event")

    async def _final_metrics(self, prediction: _Prediction) -> _Metrics | None:
        """The finished prediction's token counts (one GET; None if it cannot say)."""
        url = prediction.urls.get if prediction.urls else None
        if not url:
            return None
        try:
            data = await send_json(self._ctx.client(), NAME, self._trusted(url, "get"),
                                   headers=self._auth, method="GET")
            return _prediction(data).metrics
        except ProviderError:
            return None  # the answer is complete; only the usage falls back to an estimate

    def _trusted(self, url: str | None, what: str) -> str:
        """``url`` if our key may go there: the endpoint's own host, or Replicate's hosts."""
        if not url:
            raise UpstreamError(f"replicate upstream gave no {what} URL for the prediction")
        target, base = urlsplit(url), urlsplit(self._base)
        same_origin = (target.scheme, target.netloc) == (base.scheme, base.netloc)
        replicate_host = (base.hostname or "").endswith("replicate.com") and \
            target.scheme == "https" and (target.hostname or "").endswith(".replicate.com")
        if not (same_origin or replicate_host):
            raise UpstreamError(f"replicate upstream gave a {what} URL on an unexpected host "
                                f"({target.hostname}); refusing to send credentials there")
        return url

    def _usage(self, model_input: Body, metrics: _Metrics | None, text: str) -> Usage:
        prompt = completion = None
        if metrics is not None:
            prompt, completion = metrics.input_token_count, metrics.output_token_count
        if prompt is None:
            system = model_input.get("system_prompt")
            prompt = self._count(model_input["prompt"]) + (self._count(system) if system else 0)
        if completion is None:
            completion = self._count(text)
        return usage_of(prompt, completion)


# --- translation ---------------------------------------------------------------------------


def _input(request: ChatRequest) -> Body:
    """The Llama-style input for ``request`` (see the module docstring for the template)."""
    if request.tools:
        raise UpstreamRejected("replicate language models take no tools (function calling); "
                               "send the request without tools")
    if has_images(request):
        raise UpstreamRejected("replicate language models served here take text only; "
                               "send the request without images")
    system, turns = [], []
    for m in request.messages:
        if m.role == "tool" or m.tool_calls:
            raise UpstreamRejected("replicate language models take no tool calls or tool "
                                   "results")
        if m.role in ("system", "developer"):
            system.append(message_text(m))
        else:
            turns.append((m.role, message_text(m)))
    if not turns:
        raise UpstreamRejected("replicate needs at least one user message")
    if json_hint := _json_instruction(request):
        system.append(json_hint)
    if len(turns) == 1 and turns[0][0] == "user":
        prompt = turns[0][1]
    else:
        prompt = "\n\n".join(f"{'User' if role == 'user' else 'Assistant'}: {text}"
                             for role, text in turns)
    out: Body = {"prompt": prompt}
    if system:
        out["system_prompt"] = "\n\n".join(system)
    if request.output_limit is not None:
        out["max_tokens"] = request.output_limit
    if request.temperature is not None:
        out["temperature"] = request.temperature
    if request.top_p is not None:
        out["top_p"] = request.top_p
    if request.stop:
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop)
        if any("," in s for s in stops):
            raise UpstreamRejected("replicate takes stop sequences as one comma-separated "
                                   "string; a stop sequence cannot contain a comma")
        out["stop_sequences"] = ",".join(stops)
    return out


def _json_instruction(request: ChatRequest) -> str:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return ""
    schema = (fmt.json_schema or {}).get("schema") if fmt.type == "json_schema" else None
    if schema:
        return ("Answer with a single JSON object that matches this JSON schema, and nothing "
                f"else: {json.dumps(schema)}")
    return "Answer with a single JSON object, and nothing else."


def _model_path(model: str) -> str | None:
    """``owner/name`` quoted for the URL, or None if ``model`` is not that shape."""
    parts = model.split("/")
    if len(parts) != 2 or not all(parts) or ":" in model:
        return None
    return "/".join(quote(p, safe="") for p in parts)


def _prediction(data: Any) -> _Prediction:
    try:
        return msgspec.convert(data, _Prediction)
    except msgspec.ValidationError as exc:
        raise UpstreamError(f"replicate upstream answered with an unusable prediction: "
                            f"{exc}") from None


def _raise_if_unsuccessful(prediction: _Prediction) -> None:
    if prediction.status == "failed":
        raise UpstreamError(f"replicate prediction failed: {str(prediction.error)[:300]}")
    if prediction.status == "canceled":
        raise UpstreamError("replicate prediction was canceled")


def _output_text(output: Any) -> str:
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(str(piece) for piece in output if piece is not None)
    raise UpstreamError("replicate prediction output is not text (is this a language model?)")


def _finish(request: ChatRequest, completion_tokens: int) -> str:
    limit = request.output_limit
    return "length" if limit is not None and completion_tokens >= limit else "stop"


def _detail(data: str) -> str:
    try:
        parsed = json.loads(data)
    except ValueError:
        return data[:300]
    if isinstance(parsed, dict):
        return str(parsed.get("detail") or parsed.get("error") or parsed)[:300]
    return str(parsed)[:300]


def _done_reason(data: str) -> str:
    """The ``done`` event's ``reason`` ("" when the prediction succeeded)."""
    try:
        parsed = json.loads(data) if data.strip() else {}
    except ValueError:
        return ""
    return str(parsed.get("reason") or "") if isinstance(parsed, dict) else ""
