"""A local Anthropic Messages API: ``POST /v1/messages``, as documented, for adapter tests.

It checks what the real API checks (``x-api-key``, or the same key as a bearer token as SDK 2.x
sends it; ``anthropic-version``; field types; unknown fields; non-empty text; tool_use /
tool_result pairing) and answers with ``{"type": "error", "error": {"type", "message"}}``
bodies when a request is wrong. It is stricter than today's API in one way: user and
assistant turns must alternate (the API merges consecutive same-role turns; the adapter must
send them merged).

Answers are deterministic: ``Echo: <last user text>`` plus what else it saw (system prompt,
images); a tool call when tools are offered (and ``tool_choice`` is not ``none``); a summary of
tool results when the last turn carries them; ``max_tokens`` (one word = one token) and
``stop_sequences`` cut the text. Under ``output_config.format`` (structured outputs) the answer
is a JSON instance of the schema (strings hold the last user text, integers its word count),
and a schema with an object lacking ``"additionalProperties": false`` is a 400, as the API
requires of every object. The last user text triggers failures: ``FAIL 400`` / ``401`` /
``429`` (``retry-after: 7``) / ``500`` / ``529`` answer with that status, ``FAIL CONTENT`` is
a 400 content-policy refusal ("Output blocked by content filtering policy"), ``FAIL MIDSTREAM``
sends an ``error`` event after the first text delta, ``REFUSE`` and ``FAIL FILTERED`` answer
200 with no content and ``stop_reason: "refusal"`` (the classifiers' refusal), ``FAIL
FILTERLATE`` likewise after the answer's first two words (streamed, then the refusal's
``message_delta``).

Docs: https://docs.anthropic.com/en/api/messages,
https://docs.anthropic.com/en/docs/build-with-claude/streaming,
https://docs.anthropic.com/en/api/errors
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, post
from litestar.response import Stream

from router.wire import anthropic as aw

API_KEY = "sk-ant-sim-0123456789"

_TOP = {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
        "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
        "container", "mcp_servers", "context_management", "output_config"}
_BLOCK = {"text": {"type", "text", "cache_control", "citations"},
          "image": {"type", "source", "cache_control"},
          "tool_use": {"type", "id", "name", "input", "cache_control"},
          "tool_result": {"type", "tool_use_id", "content", "is_error", "cache_control"},
          "thinking": {"type", "thinking", "signature"},
          "redacted_thinking": {"type", "data"}}
_SOURCE = {"base64": {"type", "media_type", "data"}, "url": {"type", "url"}}
_TOOL = {"name", "description", "input_schema", "type", "cache_control"}
_TOOL_CHOICE = {"auto": {"type", "disable_parallel_tool_use"},
                "any": {"type", "disable_parallel_tool_use"},
                "tool": {"type", "name", "disable_parallel_tool_use"}, "none": {"type"}}
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.S)


class Invalid(Exception):
    """A request the real API would refuse with this status and error type."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


class AnthropicSimulator:
    """The simulator's state: the key it accepts and the last request it received."""

    def __init__(self, api_key: str = API_KEY, batches: Any = None):
        """``batches`` (an ``anthropic_batches.BatchSim``): also the Message Batches API."""
        self.api_key = api_key
        self.last_body: dict[str, Any] | None = None
        self.last_headers: dict[str, str] = {}
        self.calls = 0
        self._ids = itertools.count(1)
        handlers = [self._handler(), *(batches.routes(self) if batches is not None else [])]
        self.app = Litestar(route_handlers=handlers, debug=False)

    def message_id(self) -> str:
        return f"msg_sim{next(self._ids):06d}"

    def _handler(self) -> Any:
        @post("/v1/messages", status_code=200)
        async def messages(request: Request[Any, Any, Any]) -> Response[Any]:
            self.calls += 1
            self.last_headers = dict(request.headers)
            try:
                req = self._validate(request, await request.body())
                _trigger_failure(req)
            except Invalid as err:
                headers = {"retry-after": "7"} if err.status == 429 else {}
                return Response(aw.error_body(err.status, err.message), status_code=err.status,
                                media_type="application/json", headers=headers)
            message = answer(req, self.message_id())
            if not req.stream:
                return Response(aw.ENCODER.encode(message), media_type="application/json")
            return Stream(events(message, fail=_text(req.messages[-1]).startswith(
                "FAIL MIDSTREAM")), media_type="text/event-stream",
                headers={"cache-control": "no-cache"})

        return messages

    def authorize(self, request: Request[Any, Any, Any]) -> None:
        """Refuse a request without this simulator's key or an ``anthropic-version``."""
        # The docs name x-api-key; SDK 2.x sends the same key as a bearer token instead.
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key not in (request.headers.get("x-api-key"), bearer):
            raise Invalid("invalid x-api-key", 401)
        if not request.headers.get("anthropic-version"):
            raise Invalid("anthropic-version: header is required")

    def _validate(self, request: Request[Any, Any, Any], body: bytes) -> aw.MessagesRequest:
        self.authorize(request)
        try:
            raw = json.loads(body)
        except ValueError:
            raise Invalid("There was an issue with the JSON body of your request") from None
        self.last_body = raw
        return checked(body, raw)


def checked(body: bytes, raw: dict[str, Any]) -> aw.MessagesRequest:
    """A Messages body (``raw``, decoded from ``body``) checked as the API checks it."""
    try:
        req = aw.REQUEST_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        m = _AT.match(str(exc))
        assert m is not None
        path = re.sub(r"\[(\d+)\]", r".\1", m["path"] or "")
        raise Invalid(f"{path}: {m['msg']}" if path else m["msg"]) from None
    _no_extra_fields(raw)
    _check_semantics(req)
    return req


# --- validation ----------------------------------------------------------------------------


def _extra(obj: dict[str, Any], allowed: set[str], path: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise Invalid(f"{path}.{extra[0]}: Extra inputs are not permitted".lstrip("."))


def _check_block(block: dict[str, Any], path: str) -> None:
    _extra(block, _BLOCK[block["type"]], path)
    if block["type"] == "image":
        _extra(block["source"], _SOURCE[block["source"]["type"]], f"{path}.source")
    if block["type"] == "tool_result" and isinstance(block.get("content"), list):
        for k, inner in enumerate(block["content"]):
            _check_block(inner, f"{path}.content.{k}")


def _no_extra_fields(raw: dict[str, Any]) -> None:
    """The real API refuses fields it does not know ("Extra inputs are not permitted")."""
    _extra(raw, _TOP, "")
    for i, m in enumerate(raw["messages"]):
        _extra(m, {"role", "content"}, f"messages.{i}")
        if isinstance(m["content"], list):
            for j, block in enumerate(m["content"]):
                _check_block(block, f"messages.{i}.content.{j}")
    if isinstance(raw.get("system"), list):
        for j, block in enumerate(raw["system"]):
            _check_block(block, f"system.{j}")
    for i, tool in enumerate(raw.get("tools") or []):
        _extra(tool, _TOOL, f"tools.{i}")
    if raw.get("tool_choice"):
        _extra(raw["tool_choice"], _TOOL_CHOICE[raw["tool_choice"]["type"]], "tool_choice")
    if raw.get("metadata"):
        _extra(raw["metadata"], {"user_id"}, "metadata")


def _blocks(m: aw.MessageParam) -> list[Any]:
    return [aw.TextBlock(m.content)] if isinstance(m.content, str) else list(m.content)


def _check_semantics(req: aw.MessagesRequest) -> None:
    previous_tool_ids: set[str] = set()
    for i, m in enumerate(req.messages):
        if i and m.role == req.messages[i - 1].role:
            raise Invalid('messages: roles must alternate between "user" and "assistant", '
                          "but found multiple consecutive messages with the same role")
        blocks = _blocks(m)
        if not blocks:
            raise Invalid(f"messages.{i}: all messages must have non-empty content")
        results = [b.tool_use_id for b in blocks if isinstance(b, aw.ToolResultBlock)]
        for j, b in enumerate(blocks):
            if isinstance(b, aw.TextBlock) and not b.text:
                raise Invalid(f"messages.{i}.content.{j}: text content blocks must be non-empty")
            if isinstance(b, aw.ToolUseBlock) and m.role != "assistant":
                raise Invalid(f"messages.{i}.content.{j}: tool_use blocks are only allowed in "
                              "assistant messages")
            if isinstance(b, aw.ToolResultBlock) and m.role != "user":
                raise Invalid(f"messages.{i}.content.{j}: tool_result blocks are only allowed "
                              "in user messages")
            if isinstance(b, aw.ImageBlock) and isinstance(b.source, aw.Base64ImageSource):
                try:
                    base64.b64decode(b.source.data, validate=True)
                except binascii.Error:
                    raise Invalid(f"messages.{i}.content.{j}.source.data: invalid base64 "
                                  "data") from None
        if results and not all(isinstance(b, aw.ToolResultBlock) for b in blocks[:len(results)]):
            raise Invalid(f"messages.{i}: tool_result blocks must come first in the content")
        if m.role == "user" and set(results) != previous_tool_ids:
            raise Invalid(f"messages.{i}: each tool_use in the previous assistant message "
                          "needs exactly one tool_result here, and nothing else: expected "
                          f"{sorted(previous_tool_ids)}, got {sorted(results)}")
        previous_tool_ids = {b.id for b in blocks if isinstance(b, aw.ToolUseBlock)}
    for i, tool in enumerate(req.tools or []):
        if tool.input_schema.get("type") != "object":
            raise Invalid(f"tools.{i}.input_schema.type: Input should be 'object'")
    fmt = req.output_config.format if req.output_config else None
    if fmt is not None:
        _check_output_schema(fmt.schema, "output_config.format.schema")
    if req.tool_choice is not None and not req.tools:
        raise Invalid("tool_choice: tool_choice may only be specified while providing tools")
    if isinstance(req.tool_choice, aw.ToolChoiceTool) and req.tool_choice.name not in {
            t.name for t in req.tools or []}:
        raise Invalid(f"tool_choice.name: no tool named {req.tool_choice.name!r}")
    for k, s in enumerate(req.stop_sequences or []):
        if not s.strip():
            raise Invalid(f"stop_sequences.{k}: each stop sequence must contain "
                          "non-whitespace")


def _check_output_schema(schema: Any, path: str) -> None:
    """Structured outputs' rule: every object schema sets additionalProperties to false."""
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            _check_output_schema(item, f"{path}.{i}")
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
        raise Invalid(f"{path}: For 'object' type, 'additionalProperties' must be explicitly "
                      "set to false")
    for key, value in schema.items():
        if isinstance(value, dict | list):
            _check_output_schema(value, f"{path}.{key}")


def _instance(schema: dict[str, Any], text: str) -> Any:
    """A JSON value matching ``schema`` (the simple types structured outputs allow)."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _instance(v, text) for k, v in props.items()}
    if kind == "array":
        return [_instance(schema.get("items", {"type": "string"}), text)]
    if kind == "integer":
        return _words(text)
    if kind == "number":
        return float(_words(text))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def _trigger_failure(req: aw.MessagesRequest) -> None:
    text = _text(req.messages[-1])
    statuses = {"FAIL 400": 400, "FAIL 401": 401, "FAIL 429": 429, "FAIL 500": 500,
                "FAIL 529": 529}
    for trigger, status in statuses.items():
        if text.startswith(trigger):
            raise Invalid(f"simulated failure ({trigger})", status)
    if text.startswith("FAIL CONTENT"):  # the API's content-policy refusal
        raise Invalid("Output blocked by content filtering policy", 400)


# --- answers -------------------------------------------------------------------------------


def _text(m: aw.MessageParam) -> str:
    return " ".join(b.text for b in _blocks(m) if isinstance(b, aw.TextBlock))


def _system_text(req: aw.MessagesRequest) -> str:
    if isinstance(req.system, str):
        return req.system
    return " ".join(b.text for b in req.system or [])


def _words(text: str) -> int:
    return len(text.split())


def _result_text(block: aw.ToolResultBlock) -> str:
    if isinstance(block.content, list):
        return " ".join(b.text for b in block.content if isinstance(b, aw.TextBlock))
    return block.content or ""


def answer(req: aw.MessagesRequest, message_id: str) -> aw.Message:
    """The deterministic Message for ``req`` (see the module docstring)."""
    last = req.messages[-1]
    last_text = _text(last)
    results = [b for b in _blocks(last) if isinstance(b, aw.ToolResultBlock)]
    content: list[aw.TextBlock | aw.ToolUseBlock] = []
    stop_reason: aw.StopReason = "end_turn"
    stop_sequence = None
    choice = req.tool_choice
    if last_text.startswith(("REFUSE", "FAIL FILTERED")):
        stop_reason = "refusal"
    elif last_text.startswith("FAIL FILTERLATE"):
        content.append(aw.TextBlock(" ".join(f"Echo: {last_text}".split(" ")[:2])))
        stop_reason = "refusal"
    elif req.tools and not results and not isinstance(choice, aw.ToolChoiceNone):
        name = choice.name if isinstance(choice, aw.ToolChoiceTool) else req.tools[0].name
        if choice is None or isinstance(choice, aw.ToolChoiceAuto):  # forced calls have none
            content.append(aw.TextBlock("Let me check."))
        digest = hashlib.sha256(f"{name}\0{last_text}".encode()).hexdigest()[:24]
        content.append(aw.ToolUseBlock(id=f"toolu_{digest}", name=name,
                                       input={"query": last_text}))
        stop_reason = "tool_use"
    else:
        if results:
            text = "Tool results: " + "; ".join(
                f"{b.tool_use_id}={_result_text(b)}" + (" (error)" if b.is_error else "")
                for b in results)
        else:
            text = f"Echo: {last_text}"
        system = _system_text(req)
        if system:
            text += f" | system: {system}"
        images = [b.source for b in _blocks(last) if isinstance(b, aw.ImageBlock)]
        if images:
            text += " | images: " + ", ".join(
                f"base64 {s.media_type}" if isinstance(s, aw.Base64ImageSource)
                else f"url {s.url}" for s in images)
        fmt = req.output_config.format if req.output_config else None
        if fmt is not None:  # constrained decoding: the whole answer is the JSON instance
            text = json.dumps(_instance(fmt.schema, last_text))
        for seq in req.stop_sequences or []:
            if seq in text:
                text, stop_reason, stop_sequence = text[:text.index(seq)], "stop_sequence", seq
                break
        words = text.split(" ")
        if len(words) > req.max_tokens:
            text, stop_reason, stop_sequence = " ".join(words[:req.max_tokens]), "max_tokens", None
        content.append(aw.TextBlock(text))
    system_words = _words(_system_text(req))
    all_text = " ".join(_text(m) for m in req.messages)
    usage = aw.Usage(
        input_tokens=_words(all_text) + 10 * len(req.tools or []),
        output_tokens=sum(_words(b.text) if isinstance(b, aw.TextBlock) else 10
                          for b in content),
        cache_creation_input_tokens=0,
        cache_read_input_tokens=system_words)  # "the system prompt was cached"
    return aw.Message(id=message_id, content=content, model=req.model, stop_reason=stop_reason,
                      stop_sequence=stop_sequence, usage=usage)


async def events(message: aw.Message, *, fail: bool = False) -> AsyncIterator[bytes]:
    """``message`` as the documented event sequence (a ``ping`` after the first block start)."""
    skeleton = msgspec.structs.replace(message, content=[], stop_reason=None, stop_sequence=None,
                                       usage=msgspec.structs.replace(message.usage,
                                                                     output_tokens=1))
    yield aw.sse(aw.MessageStartEvent(skeleton))
    for i, block in enumerate(message.content):
        if isinstance(block, aw.TextBlock):
            yield aw.sse(aw.ContentBlockStartEvent(i, aw.TextBlock("")))
            if i == 0:
                yield aw.sse(aw.PingEvent())
            words = block.text.split(" ")
            for k, word in enumerate(words):
                piece = word if k == len(words) - 1 else word + " "
                yield aw.sse(aw.ContentBlockDeltaEvent(i, aw.TextDelta(piece)))
                if fail:
                    yield aw.sse(aw.ErrorEvent(aw.ErrorObject("overloaded_error", "Overloaded")))
                    return
        else:
            yield aw.sse(aw.ContentBlockStartEvent(i, msgspec.structs.replace(block, input={})))
            if i == 0:
                yield aw.sse(aw.PingEvent())
            args = json.dumps(block.input)
            cut = len(args) // 2
            for piece in ("", args[:cut], args[cut:]):  # the API starts with an empty piece
                yield aw.sse(aw.ContentBlockDeltaEvent(i, aw.InputJSONDelta(piece)))
        yield aw.sse(aw.ContentBlockStopEvent(i))
    yield aw.sse(aw.MessageDeltaEvent(
        aw.MessageDelta(message.stop_reason, message.stop_sequence),
        aw.MessageDeltaUsage(output_tokens=message.usage.output_tokens)))
    yield aw.sse(aw.MessageStopEvent())
