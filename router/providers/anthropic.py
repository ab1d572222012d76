"""Anthropic's Messages API as a provider: ``POST {endpoint}/v1/messages``.

Auth is ``x-api-key`` (the deployment's key, else ``$ANTHROPIC_API_KEY``) plus
``anthropic-version`` (``deployment.api_version`` or ``2023-06-01``); ``deployment.endpoint`` is
the base URL without ``/v1`` (default ``https://api.anthropic.com``), and ``deployment.headers``
(e.g. ``anthropic-beta``) are sent on every call.

Request translation (OpenAI chat -> Messages):

- system / developer messages (wherever they appear) -> top-level ``system`` text blocks.
- user / assistant text and image parts -> content blocks; ``data:`` URLs become ``base64``
  image sources (jpeg, png, gif, webp only), http(s) URLs ``url`` sources; other URLs are
  rejected (``UpstreamRejected``), never downloaded.
- assistant ``tool_calls`` -> ``tool_use`` blocks (arguments parsed as a JSON object);
  ``tool`` messages -> ``tool_result`` blocks in a user turn. Consecutive same-role turns are
  merged into one, with ``tool_result`` blocks first, as the API requires.
- tools -> ``tools`` (``parameters`` -> ``input_schema``); tool_choice auto/required/none/named
  -> ``auto`` / ``any`` / ``none`` / ``tool``; ``parallel_tool_calls: false`` ->
  ``disable_parallel_tool_use``.
- ``max_tokens`` is required by the API: ``request.output_limit``, else ``DEFAULT_MAX_TOKENS``.
- stop -> ``stop_sequences``; temperature (clamped to Anthropic's 0..1 range: OpenAI allows up
  to 2); top_p only when temperature is not set (Claude 4.1 and later refuse both: "use only
  one", as the API reference advises); user -> ``metadata.user_id``.
- response_format json_schema (with a schema) -> ``output_config.format`` (structured
  outputs: ``{"type": "json_schema", "schema"}``), which constrains the answer to the schema,
  as the Bedrock adapter's ``outputConfig`` does. Anthropic accepts it only from models with
  structured outputs (Claude 4.5 and later) and only for schemas it can enforce (every object
  with ``"additionalProperties": false``); otherwise it answers 400, passed back as the
  client's error with Anthropic's message. json_object (no schema to enforce) -> an extra
  system block *asks* for a single JSON object: an instruction, not a guarantee.
- Dropped silently (no Messages equivalent): seed, presence/frequency_penalty, n (always 1),
  message ``name``, ``detail`` on images, tools' ``strict``.

Responses: text blocks are joined, ``tool_use`` blocks become tool calls, thinking and server
tool blocks are skipped; stop reasons map end_turn / stop_sequence / pause_turn -> "stop",
max_tokens / model_context_window_exceeded -> "length", tool_use -> "tool_calls", refusal ->
"content_filter"; prompt tokens are input + cache creation + cache read tokens. Streams
translate message_start, content_block_start/delta (text_delta, input_json_delta)/stop,
message_delta, message_stop; ``ping`` is ignored and an ``error`` event raises the
``ProviderError`` its error type's status maps to.

Docs:
- https://docs.anthropic.com/en/api/messages
- https://docs.anthropic.com/en/docs/build-with-claude/streaming
- https://docs.anthropic.com/en/api/errors
- https://docs.anthropic.com/en/docs/build-with-claude/vision (base64 and url image sources)
- https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use
- https://docs.claude.com/en/docs/build-with-claude/structured-outputs (output_config.format)
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
from httpx_sse import ServerSentEvent

from router.providers._base import (
    ProviderContext,
    SharedClientProvider,
    UpstreamError,
    UpstreamRejected,
)
from router.providers._kit import (
    MALFORMED,
    ChunkStream,
    FinishReasons,
    relay,
    resolve_api_key,
    usage_of,
)
from router.providers._settings import BatchSettings
from router.providers.http_io import error_for_status, open_stream, send_json, sse_events
from router.wire import anthropic as aw
from router.wire.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    FunctionCall,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    Usage,
    message_text,
)

NAME = "anthropic"
DEFAULT_ENDPOINT = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
# Used when the caller sets no cap: the smallest maximum output of current Claude models
# (Claude 3 Haiku's 4,096), so the request is valid whichever model the deployment names.
DEFAULT_MAX_TOKENS = 4096
_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
FINISH_REASONS = FinishReasons(
    {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
     "max_tokens": "length", "model_context_window_exceeded": "length",
     "tool_use": "tool_calls", "refusal": "content_filter"}, missing="end_turn")
_JSON_INSTRUCTION = ("Respond with a single valid JSON object and nothing else: no prose, "
                     "no Markdown code fences.")

Block = aw.TextBlock | aw.ImageBlock | aw.ToolUseBlock | aw.ToolResultBlock


class AnthropicSettings(BatchSettings):
    """The common fields, ``api_version`` (the ``anthropic-version`` header), and the Message
    Batches API's (``native_batch``: ``router.providers.anthropic_batches``)."""

    api_version: str = ""


class AnthropicProvider(SharedClientProvider):
    """One Anthropic Messages API deployment."""

    def __init__(self, settings: AnthropicSettings, api_key: str, http: httpx.AsyncClient | None,
                 count_tokens: Callable[[str], int] = len):
        self.settings = settings
        self._http = http
        self._count = count_tokens
        base = (settings.endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self._url = f"{base}/v1/messages"
        self._headers = {**settings.headers, "x-api-key": api_key,
                         "anthropic-version": settings.api_version or DEFAULT_VERSION,
                         "content-type": "application/json"}

    @classmethod
    def from_settings(cls, settings: AnthropicSettings, ctx: ProviderContext,
                      ) -> AnthropicProvider:
        # ctx.http may be None when the gateway only checks that deployments can be built.
        return cls(settings, resolve_api_key(settings, "ANTHROPIC_API_KEY"), ctx.http,
                   ctx.count_tokens)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("AnthropicProvider needs ProviderContext.http")
        return self._http

    def __repr__(self) -> str:  # never the key
        return f"AnthropicProvider(url={self._url!r}, model={self.settings.model!r})"

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        body = self._body(request, stream=False)
        data = await send_json(self._client(), NAME, self._url, body=body, headers=self._headers)
        return self.completion(request, data)

    def completion(self, request: ChatRequest, data: Any) -> ChatCompletion:
        """A Message (a live answer, or a Message Batches result) as ours."""
        try:
            return to_completion(data, request.model)
        except MALFORMED as exc:
            raise UpstreamError(f"{NAME} upstream answered with an unexpected body: "
                                f"{type(exc).__name__}") from None

    # --- for the Message Batches API (``router.providers.anthropic_batches``) -------------

    @property
    def messages_url(self) -> str:
        return self._url

    @property
    def auth_headers(self) -> dict[str, str]:
        return self._headers

    def request_body(self, request: ChatRequest) -> dict[str, Any]:
        """The Messages API body of a (non-streaming) chat request, as ``complete`` sends it."""
        return self._body(request, stream=False)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatCompletionChunk]:
        body = self._body(request, stream=True)
        translator = AnthropicStreamTranslator(request, self._count)
        async with open_stream(self._client(), NAME, self._url, body=body,
                               headers=self._headers) as response:
            async for chunk in relay(sse_events(NAME, response), translator):
                yield chunk

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        body = to_messages_request(request, self.settings.upstream_model(request.model))
        out: dict[str, Any] = msgspec.to_builtins(body)
        if stream:
            out["stream"] = True
        return out


# --- request -------------------------------------------------------------------------------


def to_messages_request(request: ChatRequest, upstream_model: str) -> aw.MessagesRequest:
    """The Messages API body for an OpenAI chat request (see the module docstring)."""
    system = [aw.TextBlock(message_text(m)) for m in request.messages
              if m.role in ("system", "developer") and message_text(m)]
    fmt = request.response_format
    schema = _schema(fmt.json_schema) if fmt is not None and fmt.type == "json_schema" else None
    if fmt is not None and fmt.type != "text" and schema is None:
        system.append(aw.TextBlock(_JSON_INSTRUCTION))
    turns = _turns([m for m in request.messages if m.role not in ("system", "developer")])
    if not turns:
        raise UpstreamRejected("anthropic needs at least one user or assistant message "
                               "besides the system prompt")
    tools = [aw.ToolParam(name=t.function.name, description=t.function.description,
                          input_schema=t.function.parameters or {"type": "object",
                                                                 "properties": {}})
             for t in request.tools or []]
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    temperature = None if request.temperature is None else min(request.temperature, 1.0)
    return aw.MessagesRequest(
        model=upstream_model,
        max_tokens=request.output_limit or DEFAULT_MAX_TOKENS,
        messages=turns,
        system=system or None,
        metadata=aw.Metadata(user_id=request.user) if request.user else None,
        stop_sequences=stop or None,
        temperature=temperature,
        top_p=request.top_p if temperature is None else None,
        tools=tools or None,
        tool_choice=_tool_choice(request) if tools else None,
        output_config=aw.OutputConfig(format=aw.JSONOutputFormat(schema=schema))
        if schema is not None else None,
    )


def _schema(json_schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON Schema of an OpenAI ``json_schema`` response format, if it names one."""
    schema = (json_schema or {}).get("schema")  # OpenAI nests it: {name, schema, strict}
    return schema if isinstance(schema, dict) and schema else None


def _tool_choice(request: ChatRequest) -> aw.ToolChoice | None:
    choice = request.tool_choice
    single = True if request.parallel_tool_calls is False else None
    if choice == "none":
        return aw.ToolChoiceNone()
    if choice == "required":
        return aw.ToolChoiceAny(disable_parallel_tool_use=single)
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise UpstreamRejected("tool_choice must be 'none', 'auto', 'required' or "
                                   "{'type': 'function', 'function': {'name': ...}}")
        return aw.ToolChoiceTool(name=name, disable_parallel_tool_use=single)
    if choice == "auto" or single:
        return aw.ToolChoiceAuto(disable_parallel_tool_use=single)
    return None  # the API's default is auto


def _turns(messages: list[Message]) -> list[aw.MessageParam]:
    """User/assistant turns with consecutive same-role turns merged (tool results first)."""
    turns: list[tuple[str, list[Block]]] = []
    for m in messages:
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if not blocks:
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    out = []
    for role, blocks in turns:
        if role == "user":  # the API wants a turn's tool_result blocks before anything else
            blocks = sorted(blocks, key=lambda b: not isinstance(b, aw.ToolResultBlock))
        out.append(aw.MessageParam(role=role, content=list(blocks)))  # type: ignore[arg-type]
    return out


def _blocks(m: Message) -> list[Block]:
    if m.role == "tool":
        if not m.tool_call_id:
            raise UpstreamRejected("a tool message needs tool_call_id")
        return [aw.ToolResultBlock(tool_use_id=m.tool_call_id, content=message_text(m))]
    blocks: list[Block] = []
    if isinstance(m.content, str):
        if m.content:  # the API refuses empty text blocks
            blocks.append(aw.TextBlock(m.content))
    elif m.content:
        for part in m.content:
            if isinstance(part, TextPart):
                if part.text:
                    blocks.append(aw.TextBlock(part.text))
            elif isinstance(part, ImagePart):
                blocks.append(aw.ImageBlock(source=_image_source(part.image_url.url)))
    if m.role == "assistant":
        blocks += [aw.ToolUseBlock(id=c.id, name=c.function.name,
                                   input=_arguments(c.function.arguments))
                   for c in m.tool_calls or []]
    return blocks


def _image_source(url: str) -> aw.Base64ImageSource | aw.URLImageSource:
    if url.startswith(("http://", "https://")):
        return aw.URLImageSource(url=url)
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if sep and encoding == "base64" and media_type in _MEDIA_TYPES:
            return aw.Base64ImageSource(media_type=media_type, data=data)  # type: ignore[arg-type]
        raise UpstreamRejected("anthropic takes base64 data: URLs of image/jpeg, image/png, "
                               f"image/gif or image/webp only, not {header[:40]!r}")
    raise UpstreamRejected("anthropic takes images as http(s) URLs or base64 data: URLs")


def _arguments(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as the JSON object ``tool_use.input`` must be."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamRejected("an assistant tool call's arguments must be a JSON object "
                               "for anthropic")
    return value


# --- response ------------------------------------------------------------------------------


def to_usage(usage: dict[str, Any]) -> Usage:
    """Anthropic usage -> ours; cached input (written or read) is still prompt input."""
    prompt = sum(int(usage.get(k) or 0) for k in (
        "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    return usage_of(prompt, int(usage.get("output_tokens") or 0))


def to_completion(data: dict[str, Any], model: str) -> ChatCompletion:
    """A Message object as a ChatCompletion answering for catalog model ``model``."""
    texts, calls = [], []
    for block in data["content"]:
        if block.get("type") == "text":
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(ToolCall(id=block["id"], function=FunctionCall(
                name=block["name"], arguments=json.dumps(block.get("input") or {}))))
    text = "".join(texts)
    message = AssistantMessage(role="assistant", content=text if text or not calls else None,
                               tool_calls=calls or None)
    return ChatCompletion(
        id=str(data.get("id", "")), created=int(time.time()), model=model,
        choices=[Choice(index=0, message=message,
                        finish_reason=FINISH_REASONS(data.get("stop_reason"), bool(calls)))],
        usage=to_usage(data.get("usage") or {}))


class AnthropicStreamTranslator(ChunkStream):
    """Anthropic stream events in, our chunks out (see the module docstring)."""

    unfinished = "message_stop"

    def __init__(self, request: ChatRequest, count_tokens: Callable[[str], int],
                 clock: Callable[[], float] = time.time):
        super().__init__(NAME, request, count_tokens, clock=clock)
        self._tool_index: dict[int, int] = {}  # content block index -> tool call index
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None

    def feed(self, event: ServerSentEvent) -> list[ChatCompletionChunk]:
        try:
            data = json.loads(event.data) if event.data else {}
        except ValueError:
            raise UpstreamError(f"{NAME} upstream sent an event that is not JSON") from None
        try:
            return self._feed(data.get("type", event.event), data)
        except MALFORMED as exc:  # a field missing or of the wrong type
            raise UpstreamError(f"{NAME} upstream sent an unexpected {event.event} "
                                f"event: {type(exc).__name__}") from None

    def _feed(self, kind: str, data: dict[str, Any]) -> list[ChatCompletionChunk]:
        if kind == "message_start":
            message = data.get("message") or {}
            self.id = str(message.get("id", ""))
            self._usage.update(message.get("usage") or {})
            return self.role()
        if kind == "content_block_start":
            return self._block_start(int(data["index"]), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(int(data["index"]), data.get("delta") or {})
        if kind == "message_delta":
            self._stop_reason = (data.get("delta") or {}).get("stop_reason") or self._stop_reason
            # Counts are cumulative: later values replace earlier ones, absent ones stay.
            self._usage.update({k: v for k, v in (data.get("usage") or {}).items()
                                if v is not None})
            return []
        if kind == "message_stop":
            self.done = True
            self.usage = to_usage(self._usage)
            return [self.finish(FINISH_REASONS(self._stop_reason, bool(self.tools)))]
        if kind == "error":
            error = data.get("error") or {}
            status = aw.ERROR_STATUS.get(str(error.get("type")), 502)
            raise error_for_status(NAME, status, json.dumps(data).encode(), {})
        return []  # ping, content_block_stop, and event types added after this was written

    def _block_start(self, index: int, block: dict[str, Any]) -> list[ChatCompletionChunk]:
        if block.get("type") == "text" and block.get("text"):
            return [self.content(block["text"])]
        if block.get("type") != "tool_use":
            return []
        call, first = self.tools.start(block["name"], block["id"])
        self._tool_index[index] = call
        # The input is normally {} here, streamed as input_json_delta pieces.
        arguments = json.dumps(block["input"]) if block.get("input") else ""
        return self.tool_chunks([first, *self.tools.extend(call, arguments)])

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[ChatCompletionChunk]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self.content(delta["text"])]
        if kind == "input_json_delta" and delta.get("partial_json") and index in self._tool_index:
            return self.tool_chunks(self.tools.extend(self._tool_index[index],
                                                      delta["partial_json"]))
        return []  # thinking_delta, signature_delta, citations_delta: not part of the answer
