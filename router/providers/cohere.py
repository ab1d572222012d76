"""Cohere's v2 API: ``POST /v2/chat`` (streamed or not) and ``POST /v2/embed``.

Endpoint: ``{endpoint or https://api.cohere.com}/v2/chat`` and ``/v2/embed`` (the deployment's
``endpoint`` is the base URL, without ``/v2``), ``Authorization: Bearer <key>``. The key comes
from the deployment's ``api_key`` / ``api_key_env``, else ``CO_API_KEY`` (the SDK's variable),
else ``COHERE_API_KEY``.

Request translation (OpenAI -> Cohere v2):

- ``system`` and ``developer`` messages -> ``system``; ``user`` text and image parts ->
  ``{"type": "text"}`` / ``{"type": "image_url", "image_url": {"url", "detail"}}`` (data: URLs
  and http(s) URLs both pass: the API takes either); ``assistant`` tool calls -> ``tool_calls``
  with the message's text as ``tool_plan`` (Cohere's "what I am about to do" text), plain
  assistant text -> ``content``; ``tool`` results -> ``{"role": "tool", "tool_call_id",
  "content"}``.
- ``tools`` pass as they are (the same ``{"type": "function", "function": {...}}`` shape); any
  tool with ``strict: true`` sets ``strict_tools``. ``tool_choice``: ``none`` -> ``NONE``,
  ``required`` -> ``REQUIRED``, ``auto`` -> omitted; a named function (which v2 cannot express)
  -> ``REQUIRED`` with only that tool offered. Without tools, ``tool_choice`` is dropped.
- ``response_format``: ``json_object`` -> ``{"type": "json_object"}``; ``json_schema`` ->
  ``{"type": "json_object", "json_schema": <its schema>}``; ``text`` -> omitted.
- ``temperature`` -> ``temperature``; ``top_p`` -> ``p`` (clamped to Cohere's [0.01, 0.99]);
  ``max_tokens`` / ``max_completion_tokens`` -> ``max_tokens`` (omitted: the model's maximum);
  ``stop`` -> ``stop_sequences``; ``seed`` -> ``seed``; ``presence_penalty`` /
  ``frequency_penalty`` -> the same names, clamped to Cohere's [0, 1].
- Dropped (no v2 equivalent, harmless): ``user``, ``parallel_tool_calls``, ``stream_options``,
  ``n`` (always 1), message ``name``.

Responses: text content parts are joined (``thinking`` parts are skipped); a ``tool_plan``
becomes the assistant's ``content`` when the answer has no text of its own (streamed too:
``tool-plan-delta`` -> content deltas). Finish reasons: ``COMPLETE`` / ``STOP_SEQUENCE`` ->
``stop``, ``MAX_TOKENS`` / ``ERROR_LIMIT`` -> ``length``, ``TOOL_CALL`` -> ``tool_calls``,
``ERROR_TOXIC`` / ``CONTENT_BLOCKED`` -> ``content_filter``; ``ERROR`` raises ``UpstreamError``
and ``TIMEOUT`` ``UpstreamTimeout`` (the generation failed upstream).

Usage: ``usage.tokens.input_tokens`` / ``output_tokens`` — the tokens the model actually read
and wrote, which is what the gateway accounts in. ``billed_units`` is Cohere's billing view
(it can leave out tokens Cohere adds itself, such as its prompt scaffolding) and is only the
fallback when ``tokens`` is absent; ``ctx.count_tokens`` is the last resort.

Embeddings: ``POST /v2/embed`` with ``embedding_types: ["float"]`` and ``input_type:
"search_document"``. OpenAI's endpoint has no query/document distinction and clients embed both
with it, so one type must serve both; ``search_document`` is the type for stored content (the
bulk of embedding calls) and keeps all vectors in one space. ``dimensions`` ->
``output_dimension`` (embed-v4 and newer). Inputs go in batches of 96, the API's per-call limit.
Vectors are base64-encoded here when the client asks for ``encoding_format: "base64"``.

Docs used:
https://docs.cohere.com/reference/chat
https://docs.cohere.com/reference/chat-stream
https://docs.cohere.com/v2/docs/streaming
https://docs.cohere.com/docs/tool-use-streaming
https://docs.cohere.com/docs/image-inputs
https://docs.cohere.com/reference/embed
https://github.com/cohere-ai/cohere-python (src/cohere/v2/raw_client.py, types/*)
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from httpx_sse import ServerSentEvent

from router.providers._base import (
    ProviderContext,
    SharedClientProvider,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
)
from router.providers._kit import (
    ChunkStream,
    FinishReasons,
    call_id,
    completion_id,
    config_error,
    estimate_usage,
    relay,
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
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingUsage,
    FunctionCall,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
    arguments_text,
    encode_vector,
    message_text,
)

NAME = "cohere"
DEFAULT_BASE_URL = "https://api.cohere.com"
KEY_ENVS = ("CO_API_KEY", "COHERE_API_KEY")
EMBED_INPUT_TYPE = "search_document"  # see the module docstring for why
EMBED_BATCH = 96  # texts per /v2/embed call (the API's limit)
FINISH_REASONS = FinishReasons(
    {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length",
     "ERROR_LIMIT": "length", "TOOL_CALL": "tool_calls", "ERROR_TOXIC": "content_filter",
     "CONTENT_BLOCKED": "content_filter", "USER_CANCEL": "stop"},
    missing="COMPLETE", upper=True,
    failures={"ERROR": (UpstreamError, "reported an error"),
              "TIMEOUT": (UpstreamTimeout, "timed out")})

Body = dict[str, Any]


class CohereSettings(Settings):
    """Cohere reads only the common fields."""


# --- upstream bodies (lenient: only what we read) ------------------------------------------


class _Count(msgspec.Struct):
    input_tokens: float | None = None  # Cohere sends numbers that may be floats
    output_tokens: float | None = None


class _Usage(msgspec.Struct):
    tokens: _Count | None = None
    billed_units: _Count | None = None

    def ours(self) -> Usage | None:
        for count in (self.tokens, self.billed_units):
            if count is not None and count.input_tokens is not None:
                return usage_of(count.input_tokens, count.output_tokens or 0)
        return None


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | dict[str, Any] | None = None


class _ToolCall(msgspec.Struct):
    id: str | None = None
    function: _Function | None = None


class _Content(msgspec.Struct):
    type: str = "text"
    text: str | None = None


class _Message(msgspec.Struct):
    content: list[_Content] | str | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_plan: str | None = None


class _Response(msgspec.Struct):
    message: _Message
    id: str = ""
    finish_reason: str | None = None
    usage: _Usage | None = None


# Stream events share one lenient shape: message-start carries empty lists where later events
# carry objects (``content``, ``tool_calls``), hence the unions.
class _EventContent(msgspec.Struct):
    text: str | None = None
    type: str | None = None


class _EventMessage(msgspec.Struct):
    content: _EventContent | list[Any] | None = None
    tool_calls: _ToolCall | list[Any] | None = None
    tool_plan: str | None = None


class _EventDelta(msgspec.Struct):
    message: _EventMessage | None = None
    finish_reason: str | None = None
    usage: _Usage | None = None
    error: str | None = None


class _Event(msgspec.Struct):
    type: str = ""
    id: str | None = None
    index: int | None = None
    delta: _EventDelta | None = None


class _EmbedCount(msgspec.Struct):
    input_tokens: float | None = None


class _EmbedMeta(msgspec.Struct):
    tokens: _EmbedCount | None = None
    billed_units: _EmbedCount | None = None


class _Vectors(msgspec.Struct):
    float_: list[list[float]] | None = msgspec.field(default=None, name="float")


class _EmbedResponse(msgspec.Struct):
    embeddings: _Vectors
    meta: _EmbedMeta | None = None


_EVENT = msgspec.json.Decoder(_Event)


# --- the adapter ---------------------------------------------------------------------------


class CohereProvider(SharedClientProvider):
    """One Cohere v2 deployment (chat and embeddings)."""

    def __init__(self, settings: CohereSettings, ctx: ProviderContext):
        self.settings = settings
        self._ctx = ctx
        self._count: Callable[[str], int] = ctx.count_tokens
        self._base = (settings.endpoint or DEFAULT_BASE_URL).rstrip("/")
        self._headers = {"Authorization": f"Bearer {_api_key(settings)}",
                         "Accept": "application/json", **settings.headers}

    def __repr__(self) -> str:  # never the headers: they hold the key
        return f"CohereProvider(endpoint={self._base!r})"

    # --- chat ----------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        data = await send_json(self._ctx.client(), NAME, f"{self._base}/v2/chat",
                               body=self._body(request, stream=False), headers=self._headers)
        try:
            upstream = msgspec.convert(data, _Response)
        except msgspec.ValidationError as exc:
            raise UpstreamError(f"cohere upstream answered with an unusable body: {exc}") \
                from None
        msg = upstream.message
        calls = [ToolCall(id=c.id or call_id(), function=FunctionCall(
                     name=c.function.name or "", arguments=arguments_text(c.function.arguments)))
                 for c in msg.tool_calls or [] if c.function is not None]
        text = _text(msg.content)
        if not text and calls and msg.tool_plan:
            text = msg.tool_plan
        finish = FINISH_REASONS(upstream.finish_reason, bool(calls), provider=NAME)
        message = AssistantMessage(role="assistant", content=text if text or not calls else None,
                                   tool_calls=calls or None)
        usage = (upstream.usage.ours() if upstream.usage else None) or estimate_usage(
            self._count, request, text,
            [(c.function.name, c.function.arguments) for c in calls])
        return ChatCompletion(id=upstream.id or completion_id(), created=int(time.time()),
                              model=request.model, usage=usage,
                              choices=[Choice(index=0, message=message, finish_reason=finish)])

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatCompletionChunk]:
        translator = CohereStreamTranslator(request, self._count)
        async with open_stream(self._ctx.client(), NAME, f"{self._base}/v2/chat",
                               body=self._body(request, stream=True),
                               headers={**self._headers, "Accept": "text/event-stream"},
                               ) as response:
            async for chunk in relay(sse_events(NAME, response), translator):
                yield chunk

    # --- embeddings ----------------------------------------------------------------------

    async def embed(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        texts = request.texts
        model = self.settings.upstream_model(request.model)
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(texts), EMBED_BATCH):
            batch = texts[start:start + EMBED_BATCH]
            body: Body = {"model": model, "texts": batch, "input_type": EMBED_INPUT_TYPE,
                          "embedding_types": ["float"]}
            if request.dimensions is not None:
                body["output_dimension"] = request.dimensions
            data = await send_json(self._ctx.client(), NAME, f"{self._base}/v2/embed",
                                   body=body, headers=self._headers)
            try:
                upstream = msgspec.convert(data, _EmbedResponse)
            except msgspec.ValidationError as exc:
                raise UpstreamError(f"cohere upstream answered with an unusable body: "
                                    f"{exc}") from None
            got = upstream.embeddings.float_ or []
            if len(got) != len(batch):
                raise UpstreamError(f"cohere upstream returned {len(got)} vectors for "
                                    f"{len(batch)} inputs")
            vectors.extend(got)
            tokens += _embed_tokens(upstream.meta) or sum(self._count(t) for t in batch)
        data_out = [Embedding(index=i, embedding=encode_vector(v, request.encoding_format))
                    for i, v in enumerate(vectors)]
        return EmbeddingsResponse(data=data_out, model=request.model, usage=EmbeddingUsage(
            prompt_tokens=tokens, total_tokens=tokens))

    # --- request translation -------------------------------------------------------------

    def _body(self, request: ChatRequest, *, stream: bool) -> Body:
        body: Body = {"model": self.settings.upstream_model(request.model),
                      "messages": [_message(m, i) for i, m in enumerate(request.messages)],
                      "stream": stream}
        _add_tools(body, request)
        fmt = request.response_format
        if fmt is not None and fmt.type != "text":
            rf: Body = {"type": "json_object"}
            schema = (fmt.json_schema or {}).get("schema") if fmt.type == "json_schema" else None
            if schema:
                rf["json_schema"] = schema
            body["response_format"] = rf
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["p"] = min(max(request.top_p, 0.01), 0.99)
        if request.output_limit is not None:
            body["max_tokens"] = request.output_limit
        if request.stop:
            body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) \
                else list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(request, name)
            if value is not None:
                body[name] = min(max(value, 0.0), 1.0)
        return body


# --- helpers -------------------------------------------------------------------------------


def _api_key(settings: CohereSettings) -> str:
    """The deployment's key, else ``CO_API_KEY``, else ``COHERE_API_KEY``."""
    if settings.api_key or settings.api_key_env:
        return resolve_api_key(settings, KEY_ENVS[0])
    for env in KEY_ENVS:
        if key := os.environ.get(env, ""):
            return key
    raise config_error(settings.provider, f"no API key; set the environment variable "
                                          f"{' or '.join(KEY_ENVS)} or the deployment's "
                                          "api_key_env")


def _message(m: Message, i: int) -> Body:
    """One OpenAI message in Cohere v2's shape."""
    text = message_text(m)
    if m.role in ("system", "developer"):
        return {"role": "system", "content": text}
    if m.role == "user":
        if isinstance(m.content, list):
            return {"role": "user", "content": [_part(p) for p in m.content]}
        return {"role": "user", "content": text}
    if m.role == "tool":
        if not m.tool_call_id:
            raise UpstreamRejected(f"messages[{i}]: a tool message needs tool_call_id")
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": text}
    out: Body = {"role": "assistant"}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {
            "name": c.function.name, "arguments": c.function.arguments}} for c in m.tool_calls]
        if text:
            out["tool_plan"] = text  # the text said alongside the calls is Cohere's plan
    else:
        out["content"] = text
    return out


def _part(p: TextPart | ImagePart) -> Body:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    image: Body = {"url": p.image_url.url}
    if p.image_url.detail is not None:
        image["detail"] = p.image_url.detail
    return {"type": "image_url", "image_url": image}


def _add_tools(body: Body, request: ChatRequest) -> None:
    tools = list(request.tools or [])
    if not tools:
        return  # tool_choice alone means nothing to Cohere (and REQUIRED needs tools)
    choice = request.tool_choice
    if isinstance(choice, dict):  # {"type": "function", "function": {"name": ...}}
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        tools = [t for t in tools if t.function.name == name]
        if not tools:
            raise UpstreamRejected(f"tool_choice names function {name!r}, which is not among "
                                   "the request's tools")
        body["tool_choice"] = "REQUIRED"  # v2 cannot name a tool: offer only that one
    elif choice == "required":
        body["tool_choice"] = "REQUIRED"
    elif choice == "none":
        body["tool_choice"] = "NONE"
    body["tools"] = [{"type": "function", "function": msgspec.to_builtins(t.function)}
                     for t in tools]
    for t in body["tools"]:
        t["function"].pop("strict", None)  # Cohere's switch is the request-wide strict_tools
    if any(t.function.strict for t in tools):
        body["strict_tools"] = True


class CohereStreamTranslator(ChunkStream):
    """Cohere v2 stream events in, our chunks out; message-end is the last event."""

    unfinished = "message-end"

    def __init__(self, request: ChatRequest, count_tokens: Callable[[str], int]):
        super().__init__(NAME, request, count_tokens)
        self._index_of: dict[int, int] = {}  # Cohere's tool-call index -> ours

    def feed(self, sse: ServerSentEvent) -> list[ChatCompletionChunk]:
        data = sse.data.strip()
        if not data or data == "[DONE]":
            return []
        event = _decode_event(data)
        kind = event.type or sse.event
        out = self.role()
        delta = event.delta or _EventDelta()
        msg = delta.message or _EventMessage()
        if kind in ("content-start", "content-delta"):
            content = msg.content
            if isinstance(content, _EventContent) and content.text:
                out.append(self.content(content.text))
        elif kind == "tool-plan-delta":
            if msg.tool_plan:
                out.append(self.content(msg.tool_plan))
        elif kind in ("tool-call-start", "tool-call-delta"):
            call = msg.tool_calls
            if isinstance(call, _ToolCall):
                out.extend(self.tool_chunks(self._call_deltas(kind, event.index, call)))
        elif kind == "message-end":
            if delta.error:
                raise UpstreamError(f"cohere upstream failed mid-stream: {delta.error[:300]}")
            if delta.usage is not None:
                self.usage = delta.usage.ours()
            out.append(self.finish(FINISH_REASONS(delta.finish_reason, bool(self.tools),
                                                  provider=NAME)))
            self.done = True
        # message-start (role only), content-end, tool-call-end, citation-*: nothing to say
        return out

    def _call_deltas(self, kind: str, upstream_index: int | None,
                     call: _ToolCall) -> list[ToolCallDelta]:
        fn = call.function or _Function()
        key = upstream_index if upstream_index is not None else len(self._index_of)
        pieces = []
        if kind == "tool-call-start" or key not in self._index_of:
            index, first = self.tools.start(fn.name or "", call.id)
            self._index_of[key] = index
            pieces.append(first)
        return pieces + self.tools.extend(self._index_of[key], arguments_text(fn.arguments))


def _decode_event(data: str) -> _Event:
    try:
        return _EVENT.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise UpstreamError(f"cohere upstream sent an unusable stream event: {exc}") from None


def _text(content: list[_Content] | str | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(c.text or "" for c in content if c.type == "text")


def _embed_tokens(meta: _EmbedMeta | None) -> int | None:
    if meta is None:
        return None
    for count in (meta.tokens, meta.billed_units):
        if count is not None and count.input_tokens is not None:
            return round(count.input_tokens)
    return None
