"""``POST /v1/messages``: the gateway for Anthropic SDK users (Anthropic's Messages API shape).

The body is decoded with the Messages API structs (``router.wire.anthropic``),
translated to a ``ChatRequest`` and routed like any chat request (``model`` may be a catalog
model, an alias, a route or ``auto``); the answer is translated back to a Message, or to
Anthropic's stream events. Errors use Anthropic's shape,
``{"type": "error", "error": {"type", "message"}}``, with the same statuses as the OpenAI
endpoints, so the Anthropic SDK raises its matching exception (``NotFoundError`` for 404, ...).

Request translation (Messages -> OpenAI chat):

- ``system`` -> a system message; user / assistant text and image blocks -> text and
  ``image_url`` parts (base64 sources as ``data:`` URLs, url sources as they are).
- ``tool_use`` blocks -> assistant ``tool_calls``; ``tool_result`` blocks -> ``tool``
  messages (before the rest of their user turn; ``is_error`` prefixes the content with
  "Error: ", images in a result follow as a user message).
- tools -> functions (``input_schema`` -> ``parameters``); tool_choice auto / any / tool / none
  -> "auto" / "required" / named function / "none"; ``disable_parallel_tool_use`` ->
  ``parallel_tool_calls: false``.
- max_tokens, stop_sequences -> stop, temperature, top_p, metadata.user_id -> user, stream;
  ``output_config.format`` (structured outputs' JSON schema) -> ``response_format``
  json_schema, so only JSON-capable models are chosen.
- Dropped: ``top_k``, ``thinking`` and earlier turns' thinking blocks, ``cache_control``,
  ``output_config.effort``, ``service_tier`` and other fields the gateway does not model.
  Document blocks, server tools and other unknown block types are refused with a 400 naming
  the field.

Answers: text -> one text block, tool calls -> ``tool_use`` blocks; finish reasons stop /
length / tool_calls / content_filter -> end_turn / max_tokens / tool_use / refusal (which stop
sequence fired is not known, so ``stop_sequence`` stays null); usage as input / output tokens.
Streams open with ``message_start`` (``input_tokens`` is the gateway's own count until the
final ``message_delta`` carries the provider's), then content blocks as the chunks arrive,
``message_delta`` with the stop reason and usage, and ``message_stop``; a failure after the
stream began becomes an ``error`` event.

Docs: https://docs.anthropic.com/en/api/messages,
https://docs.anthropic.com/en/docs/build-with-claude/streaming,
https://docs.anthropic.com/en/api/errors
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, post
from litestar.exceptions import HTTPException
from litestar.response import Stream

from router.wire import anthropic as aw
from router.wire.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ContentPart,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
)
from service.auth import principal_of
from service.errors import APIError, BadRequest, client_error, decode_body, retry_after_header
from service.gateway import Gateway
from service.regions import asked_regions
from service.stages.cache import with_cache_headers

_STOP_REASON: dict[str | None, aw.StopReason] = {
    "stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
    "function_call": "tool_use", "content_filter": "refusal"}


# --- errors --------------------------------------------------------------------------------


def error_response(err: APIError, headers: dict[str, str] | None = None) -> Response[bytes]:
    """``err`` in Anthropic's error shape, with its status (and ``retry-after``).

    The shape has no ``param``: a message that does not name its field is prefixed with it,
    as Anthropic's own messages are (``messages.0.content.0: ...``).
    """
    message = err.message
    if err.param and err.param not in message:
        message = f"{err.param}: {message}"
    return Response(aw.error_body(err.status, message), status_code=err.status,
                    media_type="application/json",
                    headers={**retry_after_header(err), **(headers or {})})


def handle_exception(_request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """This endpoint's exception handler: the app's mapping, rendered Anthropic's way."""
    headers = getattr(exc, "headers", None) if isinstance(exc, HTTPException) else None
    return error_response(client_error(exc), headers=headers)


# --- request -------------------------------------------------------------------------------


def to_chat_request(req: aw.MessagesRequest) -> ChatRequest:
    """The routed request for a Messages body (see the module docstring)."""
    messages: list[Message] = []
    system = req.system if isinstance(req.system, str) else "\n".join(
        b.text for b in req.system or [])
    if system:
        messages.append(Message(role="system", content=system))
    for i, m in enumerate(req.messages):
        turn = _user_turn(m, i) if m.role == "user" else _assistant_turn(m, i)
        messages.extend(turn)
    if not messages:
        raise BadRequest("messages: at least one message needs content", param="messages")
    tools = [Tool(function=FunctionDef(name=t.name, description=t.description,
                                       parameters=t.input_schema)) for t in req.tools or []]
    tool_choice, parallel = _tool_choice(req.tool_choice)
    fmt = req.output_config.format if req.output_config else None
    return ChatRequest(
        model=req.model, messages=messages, stream=req.stream, max_tokens=req.max_tokens,
        temperature=req.temperature, top_p=req.top_p,
        stop=list(req.stop_sequences) if req.stop_sequences else None,
        user=req.metadata.user_id if req.metadata else None,
        tools=tools or None, tool_choice=tool_choice if tools else None,
        parallel_tool_calls=parallel if tools else None,
        response_format=ResponseFormat(type="json_schema", json_schema={
            "name": "output", "schema": fmt.schema}) if fmt else None, cache=req.cache)


def _blocks(m: aw.MessageParam) -> list[aw.ContentBlock]:
    return [aw.TextBlock(m.content)] if isinstance(m.content, str) else list(m.content)


def _image(block: aw.ImageBlock) -> ImagePart:
    src = block.source
    url = (f"data:{src.media_type};base64,{src.data}" if isinstance(src, aw.Base64ImageSource)
           else src.url)
    return ImagePart(image_url=ImageURL(url=url))


def _parts_message(role: Any, parts: list[ContentPart]) -> Message:
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return Message(role=role, content=parts[0].text)
    return Message(role=role, content=parts)


def _user_turn(m: aw.MessageParam, i: int) -> list[Message]:
    """Tool results first (as ``tool`` messages, then any images they held), then the rest."""
    results: list[Message] = []
    result_images: list[ContentPart] = []
    parts: list[ContentPart] = []
    for j, b in enumerate(_blocks(m)):
        if isinstance(b, aw.TextBlock):
            parts.append(TextPart(b.text))
        elif isinstance(b, aw.ImageBlock):
            parts.append(_image(b))
        elif isinstance(b, aw.ToolResultBlock):
            inner = b.content if isinstance(b.content, list) else [aw.TextBlock(b.content or "")]
            text = "\n".join(x.text for x in inner if isinstance(x, aw.TextBlock))
            result_images += [_image(x) for x in inner if isinstance(x, aw.ImageBlock)]
            results.append(Message(role="tool", tool_call_id=b.tool_use_id,
                                   content=f"Error: {text}" if b.is_error else text))
        elif isinstance(b, aw.ToolUseBlock):
            raise BadRequest("tool_use blocks are only allowed in assistant messages",
                             param=f"messages[{i}].content[{j}]")
    out = results
    if result_images:
        out.append(Message(role="user", content=result_images))
    if parts:
        out.append(_parts_message("user", parts))
    return out


def _assistant_turn(m: aw.MessageParam, i: int) -> list[Message]:
    texts, calls = [], []
    for j, b in enumerate(_blocks(m)):
        if isinstance(b, aw.TextBlock):
            texts.append(b.text)
        elif isinstance(b, aw.ToolUseBlock):
            calls.append(ToolCall(id=b.id, function=FunctionCall(
                name=b.name, arguments=json.dumps(b.input))))
        elif isinstance(b, aw.ImageBlock | aw.ToolResultBlock):
            raise BadRequest(f"{b.__struct_config__.tag} blocks are only allowed in user "
                             "messages", param=f"messages[{i}].content[{j}]")
        # thinking / redacted_thinking: the routed model did not produce them; dropped
    text = "".join(texts)
    if not text and not calls:
        return []
    return [Message(role="assistant", content=text or None, tool_calls=calls or None)]


def _tool_choice(choice: aw.ToolChoice | None) -> tuple[Any, bool | None]:
    """(OpenAI tool_choice, parallel_tool_calls) for an Anthropic tool_choice."""
    if choice is None:
        return None, None
    if isinstance(choice, aw.ToolChoiceNone):
        return "none", None
    parallel = False if choice.disable_parallel_tool_use else None
    if isinstance(choice, aw.ToolChoiceTool):
        return {"type": "function", "function": {"name": choice.name}}, parallel
    return ("required" if isinstance(choice, aw.ToolChoiceAny) else "auto"), parallel


# --- response ------------------------------------------------------------------------------


def message_id(completion_id: str) -> str:
    """Anthropic-style id that still carries the gateway's request id."""
    return "msg_" + completion_id.removeprefix("chatcmpl-")


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"arguments": arguments}


def from_completion(completion: ChatCompletion) -> aw.Message:
    """A ChatCompletion as Anthropic's Message object."""
    content: list[aw.TextBlock | aw.ToolUseBlock] = []
    finish = None
    if completion.choices:
        choice = completion.choices[0]
        finish = choice.finish_reason
        if choice.message.content:
            content.append(aw.TextBlock(choice.message.content))
        content += [aw.ToolUseBlock(id=c.id, name=c.function.name,
                                    input=_tool_input(c.function.arguments))
                    for c in choice.message.tool_calls or []]
    u = completion.usage
    return aw.Message(
        id=message_id(completion.id), content=content, model=completion.model,
        stop_reason=_STOP_REASON.get(finish, "end_turn"),
        usage=aw.Usage(input_tokens=u.prompt_tokens if u else 0,
                       output_tokens=u.completion_tokens if u else 0))


class _EventWriter:
    """Turns chunk deltas into content-block events.

    Text streams through as it comes, one open block at a time. Tool calls are held until
    the answer ends and then written one complete block each: OpenAI-style streams may
    interleave the argument pieces of parallel calls, and Anthropic's protocol allows deltas
    only inside a block's start and stop.
    """

    def __init__(self) -> None:
        self.next_index = 0
        self.open: int | None = None  # the open text block's index
        self.calls: dict[int, list[str]] = {}  # tool call index -> [id, name, arguments]

    def _close_text(self) -> list[bytes]:
        if self.open is None:
            return []
        index, self.open = self.open, None
        return [aw.sse(aw.ContentBlockStopEvent(index))]

    def text(self, piece: str) -> list[bytes]:
        events: list[bytes] = []
        if self.open is None:
            self.open = self.next_index
            self.next_index += 1
            events.append(aw.sse(aw.ContentBlockStartEvent(self.open, aw.TextBlock(""))))
        return [*events, aw.sse(aw.ContentBlockDeltaEvent(self.open, aw.TextDelta(piece)))]

    def tool(self, delta: ToolCallDelta) -> list[bytes]:
        call = self.calls.setdefault(delta.index, [f"toolu_{delta.index}", "", ""])
        if delta.id:
            call[0] = delta.id
        if delta.function.name:
            call[1] = delta.function.name
        call[2] += delta.function.arguments or ""
        return []

    def close(self) -> list[bytes]:
        events = self._close_text()
        for _, (call_id, name, arguments) in sorted(self.calls.items()):
            index = self.next_index
            self.next_index += 1
            events.append(aw.sse(aw.ContentBlockStartEvent(
                index, aw.ToolUseBlock(id=call_id, name=name, input={}))))
            if arguments:
                events.append(aw.sse(aw.ContentBlockDeltaEvent(index,
                                                               aw.InputJSONDelta(arguments))))
            events.append(aw.sse(aw.ContentBlockStopEvent(index)))
        self.calls.clear()
        return events


async def anthropic_sse(chunks: AsyncIterator[ChatCompletionChunk], *,
                        input_tokens: int = 0) -> AsyncIterator[bytes]:
    """Chunks as Anthropic stream events; ``input_tokens`` is ``message_start``'s estimate.

    The last chunk (no choices) carries the usage sent in ``message_delta``; an ``APIError``
    from the iterator becomes an ``error`` event, which ends the stream.
    """
    writer = _EventWriter()
    started = False
    stop_reason: aw.StopReason = "end_turn"
    usage = None
    try:
        async for chunk in chunks:
            if not started:
                started = True
                yield aw.sse(aw.MessageStartEvent(aw.Message(
                    id=message_id(chunk.id), content=[], model=chunk.model, stop_reason=None,
                    usage=aw.Usage(input_tokens=input_tokens, output_tokens=0))))
            usage = chunk.usage or usage
            for choice in chunk.choices[:1]:
                if choice.delta.content:
                    for event in writer.text(choice.delta.content):
                        yield event
                for call in choice.delta.tool_calls or []:
                    for event in writer.tool(call):
                        yield event
                if choice.finish_reason:
                    stop_reason = _STOP_REASON.get(choice.finish_reason, "end_turn")
        for event in writer.close():
            yield event
        yield aw.sse(aw.MessageDeltaEvent(
            aw.MessageDelta(stop_reason=stop_reason),
            aw.MessageDeltaUsage(output_tokens=usage.completion_tokens if usage else 0,
                                 input_tokens=usage.prompt_tokens if usage else None)))
        yield aw.sse(aw.MessageStopEvent())
    except APIError as err:
        kind = aw.error_type_for_status(err.status)
        yield aw.sse(aw.ErrorEvent(aw.ErrorObject(kind, err.message)))
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


# --- the endpoint --------------------------------------------------------------------------


@post("/messages", status_code=200, exception_handlers={Exception: handle_exception})
async def create_message(request: Request[Any, Any, Any], gateway: Gateway) -> Response[Any]:
    """Anthropic's Messages API, routed; Anthropic's stream events when ``stream`` is true."""
    chat = with_cache_headers(to_chat_request(decode_body(aw.REQUEST_DECODER,
                                                          await request.body())),
                              request.headers)
    ex = await gateway.chat(chat, principal_of(request),
                            regions=asked_regions(request.headers))
    if ex.chunks is not None:
        return Stream(anthropic_sse(ex.chunks, input_tokens=ex.input_tokens),
                      media_type="text/event-stream",
                      headers={**gateway.headers(ex), "cache-control": "no-cache"})
    assert isinstance(ex.result, ChatCompletion)
    return Response(aw.ENCODER.encode(from_completion(ex.result)),
                    media_type="application/json", headers=gateway.headers(ex))
