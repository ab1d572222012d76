"""A local Cohere v2 API: ``POST /v2/chat`` (JSON or SSE) and ``POST /v2/embed``, for tests.

It checks the ``Authorization: Bearer`` key and the request shape the v2 API documents (message
roles and their fields, content parts, tool definitions, ``tool_choice`` ``REQUIRED`` /
``NONE``, ``response_format``, ``p`` in [0.01, 0.99], at most 5 ``stop_sequences``); a wrong
request gets Cohere's error body ``{"message": ...}`` with status 400 (401 for a bad key). It is
strict about unknown fields, so an adapter sending OpenAI names (``top_p``, ``stop``) fails.

Answers are deterministic: ``Echo: <last user text>`` plus what else it saw (system prompt,
images, earlier turns); a tool call when a tool's name appears in the last user text (or the
first tool when ``tool_choice`` is ``REQUIRED``), with a ``tool_plan``; a summary of tool
results when the conversation ends with them; a JSON object for ``json_object``. One word is
one token; ``max_tokens`` and ``stop_sequences`` cut the answer (``MAX_TOKENS`` /
``STOP_SEQUENCE``). Usage reports ``tokens.input_tokens`` = words + 7 (the preamble) and
``billed_units.input_tokens`` = words, so tests can tell which one an adapter read.

Triggers in the last user text (or any embed text): ``FAIL 400`` / ``401`` / ``429``
(``retry-after: 3``) / ``500`` / ``503`` answer with that status; ``TOXIC`` finishes with
``ERROR_TOXIC``; when streaming, ``FAIL MIDSTREAM`` ends with a ``message-end`` carrying
``finish_reason: ERROR`` and ``error``, ``FAIL TRUNCATE`` stops before ``message-end``.

Docs: https://docs.cohere.com/reference/chat, https://docs.cohere.com/v2/docs/streaming,
https://docs.cohere.com/docs/tool-use-streaming, https://docs.cohere.com/reference/embed
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

from litestar import Litestar, Request, Response, post
from litestar.response import Stream

API_KEY = "co-sim-key-0123456789"
PREAMBLE_TOKENS = 7  # tokens.input_tokens exceeds billed_units by this much

_CHAT_FIELDS = {"model", "messages", "stream", "tools", "strict_tools", "documents",
                "citation_options", "response_format", "safety_mode", "max_tokens",
                "stop_sequences", "temperature", "seed", "frequency_penalty", "presence_penalty",
                "k", "p", "logprobs", "tool_choice", "thinking", "priority"}
_MESSAGE_FIELDS = {"user": {"role", "content"}, "system": {"role", "content"},
                   "assistant": {"role", "content", "tool_calls", "tool_plan", "citations"},
                   "tool": {"role", "tool_call_id", "content"}}
_EMBED_FIELDS = {"model", "texts", "images", "inputs", "input_type", "embedding_types",
                 "output_dimension", "truncate", "max_tokens"}
_INPUT_TYPES = {"search_document", "search_query", "classification", "clustering", "image"}
_EMBEDDING_TYPES = {"float", "int8", "uint8", "binary", "ubinary", "base64"}
_FAIL = re.compile(r"FAIL (400|401|429|500|503)\b")


class Invalid(Exception):
    """A request Cohere would refuse with this status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def _error(err: Invalid) -> Response[Any]:
    headers = {"retry-after": "3"} if err.status == 429 else {}
    return Response({"message": err.message}, status_code=err.status, headers=headers,
                    media_type="application/json")


class CohereSimulator:
    """The simulator's state: the key it accepts and the last request it received."""

    def __init__(self, api_key: str = API_KEY):
        self.api_key = api_key
        self.last_body: dict[str, Any] | None = None
        self.last_headers: dict[str, str] = {}
        self.bodies: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self.app = Litestar(route_handlers=self._handlers(), debug=False)

    def _read(self, request: Request[Any, Any, Any], body: bytes) -> dict[str, Any]:
        self.last_headers = dict(request.headers)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            raise Invalid("invalid api token", 401)
        try:
            raw = json.loads(body)
        except ValueError:
            raise Invalid("invalid request: body is not valid JSON") from None
        if not isinstance(raw, dict):
            raise Invalid("invalid request: body must be a JSON object")
        self.last_body = raw
        self.bodies.append(raw)
        return raw

    def _handlers(self) -> list[Any]:
        @post("/v2/chat", status_code=200)
        async def chat(request: Request[Any, Any, Any]) -> Response[Any]:
            try:
                raw = self._read(request, await request.body())
                _check_chat(raw)
                _trigger(_last_user_text(raw["messages"]))
            except Invalid as err:
                return _error(err)
            reply = answer(raw, f"sim-{next(self._ids):06d}")
            if not raw.get("stream"):
                return Response(reply, media_type="application/json")
            text = _last_user_text(raw["messages"])
            mode = "midstream" if "FAIL MIDSTREAM" in text else \
                "truncate" if "FAIL TRUNCATE" in text else ""
            return Stream(events(reply, mode), media_type="text/event-stream",
                          headers={"cache-control": "no-cache"})

        @post("/v2/embed", status_code=200)
        async def embed(request: Request[Any, Any, Any]) -> Response[Any]:
            try:
                raw = self._read(request, await request.body())
                _check_embed(raw)
                for text in raw["texts"]:
                    _trigger(text)
            except Invalid as err:
                return _error(err)
            return Response(embeddings(raw, f"emb-{next(self._ids):06d}"),
                            media_type="application/json")

        return [chat, embed]


# --- validation ----------------------------------------------------------------------------


def _unknown(obj: dict[str, Any], allowed: set[str], path: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise Invalid(f'invalid request: json: unknown field "{extra[0]}" in {path}')


def _number(raw: dict[str, Any], name: str, lo: float, hi: float) -> None:
    value = raw.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise Invalid(f"invalid request: {name} must be a number between {lo} and {hi}")


def _check_chat(raw: dict[str, Any]) -> None:
    _unknown(raw, _CHAT_FIELDS, "request")
    if not isinstance(raw.get("model"), str) or not raw["model"]:
        raise Invalid("invalid request: model must be a non-empty string")
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid("invalid request: messages must be a non-empty list")
    if not isinstance(raw.get("stream", False), bool):
        raise Invalid("invalid request: stream must be a boolean")
    call_ids: set[str] = set()
    for i, m in enumerate(messages):
        _check_message(m, i, call_ids)
    names = _check_tools(raw.get("tools"))
    choice = raw.get("tool_choice")
    if choice is not None:
        if choice not in ("REQUIRED", "NONE"):
            raise Invalid('invalid request: tool_choice must be one of "REQUIRED", "NONE"')
        if not names:
            raise Invalid("invalid request: tool_choice requires tools to be specified")
    fmt = raw.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object"):
            raise Invalid('invalid request: response_format.type must be "text" or '
                          '"json_object"')
        _unknown(fmt, {"type", "json_schema"}, "response_format")
        if "json_schema" in fmt and (fmt["type"] != "json_object"
                                     or not isinstance(fmt["json_schema"], dict)):
            raise Invalid("invalid request: json_schema must be an object and needs type "
                          "json_object")
    _number(raw, "temperature", 0, 5)
    _number(raw, "p", 0.01, 0.99)
    _number(raw, "frequency_penalty", 0, 1)
    _number(raw, "presence_penalty", 0, 1)
    limit = raw.get("max_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise Invalid("invalid request: max_tokens must be a positive integer")
    stops = raw.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or len(stops) > 5
                              or not all(isinstance(s, str) for s in stops)):
        raise Invalid("invalid request: stop_sequences must be a list of up to 5 strings")
    if raw.get("seed") is not None and not isinstance(raw["seed"], int):
        raise Invalid("invalid request: seed must be an integer")


def _check_message(m: Any, i: int, call_ids: set[str]) -> None:
    where = f"messages[{i}]"
    if not isinstance(m, dict) or m.get("role") not in _MESSAGE_FIELDS:
        raise Invalid(f"invalid request: {where}.role must be one of user, assistant, "
                      "system, tool")
    role = m["role"]
    _unknown(m, _MESSAGE_FIELDS[role], where)
    content = m.get("content")
    if role in ("user", "system"):
        if isinstance(content, list):
            for j, part in enumerate(content):
                _check_part(part, f"{where}.content[{j}]", images=role == "user")
        elif not isinstance(content, str):
            raise Invalid(f"invalid request: {where}.content must be a string or a list")
    elif role == "assistant":
        calls = m.get("tool_calls")
        if not content and not calls:
            raise Invalid(f"invalid request: {where} must have content or tool_calls")
        for j, c in enumerate(calls or []):
            path = f"{where}.tool_calls[{j}]"
            if not isinstance(c, dict) or c.get("type") != "function" or not c.get("id"):
                raise Invalid(f"invalid request: {path} needs an id and type function")
            fn = c.get("function") or {}
            if not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
                raise Invalid(f"invalid request: {path}.function needs name and arguments "
                              "strings")
            try:
                json.loads(fn["arguments"])
            except ValueError:
                raise Invalid(f"invalid request: {path}.function.arguments is not JSON") \
                    from None
            call_ids.add(c["id"])
    else:  # tool
        if m.get("tool_call_id") not in call_ids:
            raise Invalid(f"invalid request: {where}.tool_call_id does not match any tool "
                          "call of an earlier assistant message")
        if not isinstance(content, str | list):
            raise Invalid(f"invalid request: {where}.content must be a string or a list")


def _check_part(part: Any, path: str, *, images: bool) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        _unknown(part, {"type", "text"}, path)
        if not isinstance(part.get("text"), str):
            raise Invalid(f"invalid request: {path}.text must be a string")
    elif kind == "image_url" and images:
        _unknown(part, {"type", "image_url"}, path)
        image = part.get("image_url")
        if not isinstance(image, dict) or not isinstance(image.get("url"), str):
            raise Invalid(f"invalid request: {path}.image_url.url must be a string")
        _unknown(image, {"url", "detail"}, f"{path}.image_url")
        if image.get("detail") not in (None, "auto", "low", "high"):
            raise Invalid(f"invalid request: {path}.image_url.detail must be auto, low or high")
        _check_image_url(image["url"], path)
    else:
        raise Invalid(f"invalid request: {path}.type {kind!r} is not supported here")


def _check_image_url(url: str, path: str) -> None:
    if url.startswith(("http://", "https://")):
        return
    m = re.match(r"data:image/(png|jpeg|webp|gif);base64,(.*)$", url, re.S)
    if m is None:
        raise Invalid(f"invalid request: {path}.image_url.url must be a web URL or a base64 "
                      "data URI of a png, jpeg, webp or gif image")
    try:
        base64.b64decode(m[2], validate=True)
    except binascii.Error:
        raise Invalid(f"invalid request: {path}.image_url.url has invalid base64 data") \
            from None


def _check_tools(tools: Any) -> list[str]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise Invalid("invalid request: tools must be a list")
    names = []
    for i, t in enumerate(tools):
        path = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function":
            raise Invalid(f'invalid request: {path}.type must be "function"')
        _unknown(t, {"type", "function"}, path)
        fn = t.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise Invalid(f"invalid request: {path}.function.name must be a string")
        _unknown(fn, {"name", "description", "parameters"}, f"{path}.function")
        names.append(fn["name"])
    return names


def _check_embed(raw: dict[str, Any]) -> None:
    _unknown(raw, _EMBED_FIELDS, "request")
    if not isinstance(raw.get("model"), str) or not raw["model"]:
        raise Invalid("invalid request: model must be a non-empty string")
    texts = raw.get("texts")
    if (not isinstance(texts, list) or not texts or len(texts) > 96
            or not all(isinstance(t, str) for t in texts)):
        raise Invalid("invalid request: texts must be a list of 1 to 96 strings")
    if raw.get("input_type") not in _INPUT_TYPES:
        raise Invalid("invalid request: input_type is required for embed models v3 and "
                      f"higher; one of {', '.join(sorted(_INPUT_TYPES))}")
    types = raw.get("embedding_types", ["float"])
    if not isinstance(types, list) or not set(types) <= _EMBEDDING_TYPES:
        raise Invalid("invalid request: embedding_types has an unknown type")
    dim = raw.get("output_dimension")
    if dim is not None and dim not in (256, 512, 1024, 1536):
        raise Invalid("invalid request: output_dimension must be one of 256, 512, 1024, 1536")


def _trigger(text: str) -> None:
    m = _FAIL.search(text)
    if m:
        status = int(m[1])
        raise Invalid({400: "invalid request: simulated bad request",
                       401: "invalid api token", 429: "You are using a Trial key, which is "
                       "limited to 10 API calls / minute.", 500: "internal server error",
                       503: "service unavailable"}[status], status)


# --- answers -------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if p.get("type") == "text")


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return _content_text(m.get("content"))
    return ""


def _words(text: str) -> int:
    return len(text.split())


def answer(raw: dict[str, Any], rid: str) -> dict[str, Any]:
    """The non-streamed v2 response for a valid request."""
    messages = raw["messages"]
    text = _last_user_text(messages)
    tool_plan, calls, finish = None, [], "COMPLETE"
    trailing_tools = []
    for m in reversed(messages):
        if m["role"] != "tool":
            break
        trailing_tools.insert(0, m)
    picked = _pick_tools(raw, text) if not trailing_tools else []
    if picked:
        tool_plan = f"I will call {' and '.join(picked)}."
        for k, name in enumerate(picked):
            calls.append({"id": f"{rid}-call-{k}", "type": "function", "function": {
                "name": name, "arguments": json.dumps(_arguments(raw, name, text))}})
        finish = "TOOL_CALL"
        reply = ""
    elif trailing_tools:
        reply = "Tool results: " + "; ".join(
            f"{m['tool_call_id']}={_content_text(m['content'])}" for m in trailing_tools)
    elif "TOXIC" in text:
        reply, finish = "", "ERROR_TOXIC"
    else:
        reply = _echo(raw, text)
    if reply and finish == "COMPLETE":
        reply, finish = _cut(raw, reply)
    if "FAIL MIDSTREAM" in text and not raw.get("stream"):
        finish = "ERROR"
    message: dict[str, Any] = {"role": "assistant"}
    if calls:
        message["tool_plan"] = tool_plan
        message["tool_calls"] = calls
    else:
        message["content"] = [{"type": "text", "text": reply}] if reply else []
    words_in = sum(_words(_content_text(m.get("content"))) for m in messages)
    words_out = _words(reply or tool_plan or "") + sum(
        _words(c["function"]["arguments"]) for c in calls)
    usage = {"billed_units": {"input_tokens": words_in, "output_tokens": words_out},
             "tokens": {"input_tokens": words_in + PREAMBLE_TOKENS, "output_tokens": words_out}}
    return {"id": rid, "finish_reason": finish, "message": message, "usage": usage}


def _pick_tools(raw: dict[str, Any], text: str) -> list[str]:
    names = [t["function"]["name"] for t in raw.get("tools") or []]
    if not names or raw.get("tool_choice") == "NONE":
        return []
    mentioned = [n for n in names if n in text]
    if mentioned:
        return mentioned
    return names[:1] if raw.get("tool_choice") == "REQUIRED" else []


def _arguments(raw: dict[str, Any], name: str, text: str) -> dict[str, Any]:
    """Arguments for the tool: its first declared property set to the user's text."""
    for t in raw["tools"]:
        if t["function"]["name"] == name:
            props = (t["function"].get("parameters") or {}).get("properties") or {}
            return {next(iter(props)): text} if props else {}
    return {}


def _echo(raw: dict[str, Any], text: str) -> str:
    messages = raw["messages"]
    notes = []
    system = [_content_text(m["content"]) for m in messages if m["role"] == "system"]
    if system:
        notes.append(f"system={' / '.join(system)}")
    images = sum(1 for m in messages if isinstance(m.get("content"), list)
                 for p in m["content"] if p.get("type") == "image_url")
    if images:
        notes.append(f"images={images}")
    turns = sum(1 for m in messages if m["role"] in ("user", "assistant"))
    if turns > 1:
        notes.append(f"turns={turns}")
    reply = f"Echo: {text}" + "".join(f" [{n}]" for n in notes)
    fmt = raw.get("response_format") or {}
    if fmt.get("type") == "json_object":
        obj: dict[str, Any] = {"echo": text}
        if "json_schema" in fmt:
            obj["schema_keys"] = sorted(fmt["json_schema"].get("properties") or {})
        reply = json.dumps(obj)
    return reply


def _cut(raw: dict[str, Any], reply: str) -> tuple[str, str]:
    for stop in raw.get("stop_sequences") or []:
        at = reply.find(stop)
        if stop and at >= 0:
            return reply[:at], "STOP_SEQUENCE"
    words = reply.split(" ")
    limit = raw.get("max_tokens")
    if limit is not None and len(words) > limit:
        return " ".join(words[:limit]), "MAX_TOKENS"
    return reply, "COMPLETE"


# --- streaming -----------------------------------------------------------------------------


def _sse(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]] if text else []


async def events(reply: dict[str, Any], mode: str = "") -> AsyncIterator[bytes]:
    """The v2 event stream for ``reply``: message-start, content or tool-plan/tool-call
    events, message-end (``mode``: "midstream" fails at the end, "truncate" stops early)."""
    msg = reply["message"]
    yield _sse({"id": reply["id"], "type": "message-start", "delta": {"message": {
        "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [],
        "citations": []}}})
    if msg.get("tool_calls"):
        for piece in _pieces(msg["tool_plan"]):
            yield _sse({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}})
        for k, call in enumerate(msg["tool_calls"]):
            yield _sse({"type": "tool-call-start", "index": k, "delta": {"message": {
                "tool_calls": {"id": call["id"], "type": "function", "function": {
                    "name": call["function"]["name"], "arguments": ""}}}}})
            args = call["function"]["arguments"]
            for at in range(0, len(args), 8):
                yield _sse({"type": "tool-call-delta", "index": k, "delta": {"message": {
                    "tool_calls": {"function": {"arguments": args[at:at + 8]}}}}})
            yield _sse({"type": "tool-call-end", "index": k})
    else:
        text = _content_text(msg.get("content"))
        yield _sse({"type": "content-start", "index": 0, "delta": {"message": {
            "content": {"type": "text", "text": ""}}}})
        for n, piece in enumerate(_pieces(text)):
            yield _sse({"type": "content-delta", "index": 0, "delta": {"message": {
                "content": {"text": piece}}}})
            if n == 0 and mode == "truncate":
                return
            if n == 0 and mode == "midstream":
                yield _sse({"type": "message-end", "delta": {
                    "error": "internal error while generating", "finish_reason": "ERROR"}})
                return
        yield _sse({"type": "content-end", "index": 0})
    yield _sse({"type": "message-end", "delta": {"finish_reason": reply["finish_reason"],
                                                 "usage": reply["usage"]}})


# --- embeddings ----------------------------------------------------------------------------


def embeddings(raw: dict[str, Any], rid: str) -> dict[str, Any]:
    """Deterministic unit-length vectors seeded by model, input_type and text."""
    dim = raw.get("output_dimension") or 1024
    vectors = []
    for text in raw["texts"]:
        seed = hashlib.sha256(f"{raw['model']}\0{raw['input_type']}\0{text}".encode()).digest()
        values = [(seed[i % 32] - 127.5) / 127.5 + i * 1e-4 for i in range(dim)]
        norm = sum(v * v for v in values) ** 0.5
        vectors.append([v / norm for v in values])
    tokens = sum(_words(t) for t in raw["texts"])
    return {"id": rid, "embeddings": {"float": vectors}, "texts": raw["texts"],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
            "response_type": "embeddings_by_type"}
