"""A local upstream speaking OpenAI's chat-completions and embeddings wire format.

Paths, auth and bodies as OpenAI documents them (and its Python SDK expects):

- ``POST /v1/chat/completions`` and ``POST /v1/embeddings`` with ``Authorization: Bearer``;
- the Azure OpenAI variant ``POST /openai/deployments/{deployment}/chat/completions`` (and
  ``/embeddings``) with the ``api-key`` header and a required ``api-version`` query;
- errors as ``{"error": {"message", "type", "param", "code"}}`` (Azure's
  ``{"error": {"code", "message"}}`` for its auth and routing errors);
- streams as SSE ``data: {chunk}`` lines ending with ``data: [DONE]``: a role chunk, content
  (or tool-call) deltas, a finish chunk, then, with ``stream_options.include_usage``, a chunk
  with ``choices: []`` and ``usage`` (every earlier chunk then says ``"usage": null``).

Requests are checked like OpenAI checks them (required fields, roles, content parts, tool
results answering an earlier tool call, ``stream_options`` only when streaming, reasoning
models refusing ``max_tokens`` / ``temperature``). With ``SimState.strict`` (the default) it
also refuses top-level fields and ``tool_choice`` values OpenAI does not know; turn it off to
accept another provider's dialect (Mistral's ``random_seed``, ``"any"``).
``SimState.refuse`` names fields to refuse, to emulate an upstream that lacks them.

Answers are deterministic: ``echo: <last user text>`` (a JSON object under a JSON response
format; a call of the named or first tool, with ``{"query": <last user text>}``, when tools are
offered and ``tool_choice`` is not ``"none"``; ``tool result: <content>`` after a tool result),
cut to ``max_tokens`` words with ``finish_reason: "length"``. One word is one token.

The last user text fails on demand: ``FAIL 400`` / ``FAIL 429`` (with ``retry-after: 7``) /
``FAIL 500`` / ``FAIL 503``; ``FAIL CONTENT`` (a content-policy refusal: 400,
``content_policy_violation``); ``FAIL FILTERED`` (the refusal as a 200: no content,
``finish_reason: "content_filter"``; the stream a role chunk, then the finish);
``FAIL FILTERLATE`` (likewise after the answer's first two words); ``FAIL MALFORMED`` (a 200
with an unusable body or event); ``FAIL NOUSAGE`` (no usage, even when asked); ``FAIL
MIDSTREAM`` (the connection drops after the first delta); ``FAIL STREAMERROR`` (an error event
inside the stream); ``FAIL TRUNCATED`` (the stream ends without a finish reason or ``[DONE]``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, Request, Response, post
from litestar.params import FromPath
from litestar.response import Stream

ROLES = ("system", "developer", "user", "assistant", "tool")
CHAT_FIELDS = frozenset({
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "n", "stop", "seed", "user", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "presence_penalty", "frequency_penalty",
    "logprobs", "top_logprobs", "logit_bias", "store", "metadata", "modalities", "audio",
    "prediction", "reasoning_effort", "service_tier", "prompt_cache_key", "safety_identifier",
    "verbosity", "web_search_options", "functions", "function_call"})
REASONING = re.compile(r"^(o\d|gpt-5)")
DEFAULT_DIMENSIONS = 8


@dataclass
class SimState:
    """The simulator's keys and knobs, and what it last received (for assertions)."""

    api_key: str = "sk-sim-0123456789abcdef"
    azure_key: str = "azure-sim-0123456789abcdef"
    strict: bool = True  # refuse top-level fields OpenAI does not know, as OpenAI does
    refuse: set[str] = field(default_factory=set)  # extra fields to refuse
    last_body: dict[str, Any] | None = None
    last_headers: dict[str, str] = field(default_factory=dict)
    last_path: str = ""
    last_query: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """An error answer in OpenAI's shape (or Azure's, with ``azure_shape``)."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, azure_shape: bool = False):
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        if azure_shape:
            self.body: dict[str, Any] = {"error": {"code": code or str(status),
                                                   "message": message}}
        else:
            self.body = {"error": {"message": message, "type": type_, "param": param,
                                   "code": code}}

    def response(self) -> Response[bytes]:
        return Response(json.dumps(self.body).encode(), status_code=self.status,
                        media_type="application/json", headers=self.headers)


def _json(data: Any, status: int = 200) -> Response[bytes]:
    return Response(json.dumps(data).encode(), status_code=status,
                    media_type="application/json")


# --- auth and parsing ----------------------------------------------------------------------


async def _receive(request: Request, *, azure: bool) -> dict[str, Any]:
    """The checked-in request body; records it and the headers for the tests."""
    state: SimState = request.app.state.sim
    state.last_headers = dict(request.headers)
    state.last_path = request.url.path
    state.last_query = dict(request.query_params)
    if azure:
        if "api-version" not in request.query_params:
            raise ApiError(404, "Resource not found", azure_shape=True)
        if request.headers.get("api-key") != state.azure_key:
            raise ApiError(401, "Access denied due to invalid subscription key or wrong API "
                           "endpoint. Make sure to provide a valid key for an active "
                           "subscription and use a correct regional API endpoint for your "
                           "resource.", azure_shape=True)
    else:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise ApiError(401, "You didn't provide an API key. You need to provide your API "
                           "key in an Authorization header using Bearer auth.")
        key = auth.removeprefix("Bearer ")
        if key != state.api_key:
            shown = f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}"
            raise ApiError(401, f"Incorrect API key provided: {shown}. You can find your API "
                           "key at https://platform.openai.com/account/api-keys.",
                           code="invalid_api_key")
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "We could not parse the JSON body of your request. (HINT: This "
                       "likely means you aren't using your HTTP library correctly.)") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid type for request body: expected an object.")
    state.last_body = body
    for name in body:
        if name in state.refuse:
            raise ApiError(400, f"Extra inputs are not permitted: {name}", param=name)
    if not azure and not isinstance(body.get("model"), str):
        raise ApiError(400, "you must provide a model parameter", param="model")
    return body


def _fail(text: str) -> str | None:
    """The failure the text asks for, raising it when it is an HTTP error."""
    match = re.search(r"FAIL (\w+)", text)
    if match is None:
        return None
    mode = match.group(1)
    if mode == "400":
        raise ApiError(400, "Invalid 'messages': the simulator was asked to refuse this.",
                       param="messages")
    if mode == "429":
        raise ApiError(429, "Rate limit reached for requests. Please try again in 7s.",
                       type_="requests", code="rate_limit_exceeded",
                       headers={"retry-after": "7"})
    if mode == "500":
        raise ApiError(500, "The server had an error while processing your request. Sorry "
                       "about that!", type_="server_error")
    if mode == "503":
        raise ApiError(503, "The engine is currently overloaded, please try again later.",
                       type_="server_error")
    if mode == "CONTENT":  # OpenAI's content-policy refusal
        raise ApiError(400, "Your request was rejected as a result of our safety system.",
                       code="content_policy_violation")
    return mode


# --- chat ----------------------------------------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def _check_chat(body: dict[str, Any], strict: bool) -> None:
    if strict:
        for name in body:
            if name not in CHAT_FIELDS:
                raise ApiError(400, f"Unrecognized request argument supplied: {name}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "[] is too short - 'messages'", param="messages")
    call_ids: set[str] = set()
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            raise ApiError(400, f"Invalid value: '{role}'. Supported values are: 'system', "
                           "'assistant', 'user', 'tool', 'function', and 'developer'.",
                           param=f"{where}.role", code="invalid_value")
        content = m.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    continue
                image = (part.get("image_url") or {}) if kind == "image_url" else {}
                if "detail" in image and image["detail"] not in ("auto", "low", "high"):
                    raise ApiError(400, f"Invalid value for '{where}.content[{j}].image_url."
                                   "detail': expected one of 'auto', 'low', or 'high'.",
                                   param=f"{where}.content[{j}].image_url.detail",
                                   code="invalid_value")
                if role == "user" and isinstance(image.get("url"), str):
                    continue
                raise ApiError(400, f"Invalid content part at '{where}.content[{j}]'.",
                               param=f"{where}.content[{j}]", code="invalid_value")
        elif content is None and not (role == "assistant" and m.get("tool_calls")):
            raise ApiError(400, f"Invalid value for '{where}.content': expected a string, "
                           "got null.", param=f"{where}.content", code="invalid_type")
        elif content is not None and not isinstance(content, str):
            raise ApiError(400, f"Invalid type for '{where}.content'.",
                           param=f"{where}.content", code="invalid_type")
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            if call.get("type") != "function" or not isinstance(fn.get("arguments"), str) \
                    or not fn.get("name") or not call.get("id"):
                raise ApiError(400, f"Invalid '{where}.tool_calls'.", param=where)
            call_ids.add(call["id"])
        if role == "tool" and m.get("tool_call_id") not in call_ids:
            raise ApiError(400, "Invalid parameter: messages with role 'tool' must be a "
                           "response to a preceeding message with 'tool_calls'.",
                           param=f"{where}.role")
    tools = body.get("tools")
    for i, tool in enumerate(tools or []):
        if tool.get("type") != "function" or not (tool.get("function") or {}).get("name"):
            raise ApiError(400, f"Missing required parameter: 'tools[{i}].function'.",
                           param=f"tools[{i}].function", code="missing_required_parameter")
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            raise ApiError(400, "Invalid value for 'tool_choice': 'tool_choice' is only "
                           "allowed when 'tools' are specified.", param="tool_choice")
        named = isinstance(choice, dict) and choice.get("type") == "function" and \
            (choice.get("function") or {}).get("name")
        if strict and choice not in ("none", "auto", "required") and not named:
            raise ApiError(400, "Invalid value for 'tool_choice'.", param="tool_choice")
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object",
                                                               "json_schema"):
            raise ApiError(400, "Invalid value for 'response_format.type'.",
                           param="response_format.type", code="invalid_value")
        if fmt["type"] == "json_schema" and not (fmt.get("json_schema") or {}).get("name"):
            raise ApiError(400, "Missing required parameter: 'response_format.json_schema'.",
                           param="response_format.json_schema")
    if "stream_options" in body and not body.get("stream"):
        raise ApiError(400, "The 'stream_options' parameter is only allowed when 'stream' is "
                       "enabled.", param="stream_options")
    if REASONING.match(str(body.get("model", ""))):
        if "max_tokens" in body:
            raise ApiError(400, "Unsupported parameter: 'max_tokens' is not supported with "
                           "this model. Use 'max_completion_tokens' instead.",
                           param="max_tokens", code="unsupported_parameter")
        if "temperature" in body:
            raise ApiError(400, "Unsupported parameter: 'temperature' is not supported with "
                           "this model.", param="temperature", code="unsupported_parameter")


@dataclass
class _Answer:
    text: str | None
    call: dict[str, Any] | None
    finish: str
    usage: dict[str, int]


def _answer(body: dict[str, Any]) -> _Answer:
    messages = body["messages"]
    last_user = next((_text(m.get("content")) for m in reversed(messages)
                      if m["role"] == "user"), "")
    prompt = 3 + sum(3 + len(_text(m.get("content")).split()) for m in messages)
    tools, choice = body.get("tools"), body.get("tool_choice", "auto")
    last = messages[-1]
    if last["role"] == "tool":
        text: str | None = f"tool result: {_text(last.get('content'))}"
    elif tools and choice != "none":
        name = choice["function"]["name"] if isinstance(choice, dict) else \
            tools[0]["function"]["name"]
        arguments = json.dumps({"query": last_user})
        call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                "function": {"name": name, "arguments": arguments}}
        completion = len(arguments) // 4 + 1
        return _Answer(None, call, "tool_calls", _usage(prompt, completion))
    elif (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        text = json.dumps({"echo": last_user})
    else:
        images = sum(isinstance(p, dict) and p.get("type") == "image_url"
                     for m in messages if isinstance(m.get("content"), list)
                     for p in m["content"])
        text = f"echo: {last_user}" + (f" [{images} image(s)]" if images else "")
    words = text.split(" ")
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "stop"
    if limit is not None and len(words) > limit:
        words, finish = words[:limit], "length"
    return _Answer(" ".join(words), None, finish, _usage(prompt, len(words)))


def _filtered(answer: _Answer, mode: str | None) -> _Answer:
    """``answer`` as OpenAI's output filter leaves it: cut (to nothing, or its first two
    words), ``content_filter``, billed for what was generated."""
    if mode not in ("FILTERED", "FILTERLATE"):
        return answer
    words = (answer.text or "").split(" ")[:2] if mode == "FILTERLATE" else []
    usage = {**answer.usage, "completion_tokens": len(words),
             "total_tokens": answer.usage["prompt_tokens"] + len(words)}
    return _Answer(" ".join(words) or None, None, "content_filter", usage)


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


async def _chat(request: Request, model: str | None) -> Response[bytes] | Stream:
    azure = model is not None
    try:
        body = await _receive(request, azure=azure)
        _check_chat(body, request.app.state.sim.strict)
        mode = _fail(_text(next((m.get("content") for m in reversed(body["messages"])
                                 if m.get("role") == "user"), "")))
    except ApiError as exc:
        return exc.response()
    answer = _filtered(_answer(body), mode)
    model = model or body["model"]
    if body.get("stream"):
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Stream(_events(answer, model, usage and mode != "NOUSAGE", mode),
                      status_code=200, media_type="text/event-stream",
                      headers={"cache-control": "no-cache"})
    return _json(_completion(answer, model, mode))


def chat_answer(body: dict[str, Any], strict: bool = True) -> tuple[int, dict[str, Any]]:
    """(status, body) of a non-streaming chat request, as ``POST /v1/chat/completions``
    answers it (the Batch API's lines are answered by this, ``openai_batches``)."""
    try:
        _check_chat(body, strict)
        mode = _fail(_text(next((m.get("content") for m in reversed(body["messages"])
                                 if m.get("role") == "user"), "")))
    except ApiError as exc:
        return exc.status, exc.body
    return 200, _completion(_answer(body), body["model"], mode)


def _completion(answer: _Answer, model: str, mode: str | None) -> dict[str, Any]:
    if mode == "MALFORMED":
        return {"object": "chat.completion", "choices": "not a list"}
    message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None,
                               "annotations": []}
    if answer.call:
        message["tool_calls"] = [answer.call]
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:29]}", "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": answer.finish}],
        "usage": answer.usage, "service_tier": "default", "system_fingerprint": "fp_sim"}
    if mode == "NOUSAGE":
        del completion["usage"]
    return completion


async def _events(answer: _Answer, model: str, include_usage: bool,
                  mode: str | None) -> AsyncIterator[bytes]:
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:29]}", int(time.time())

    def event(choices: list[dict[str, Any]], usage: Any = None) -> bytes:
        data: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk",
                                "created": created, "model": model,
                                "service_tier": "default", "system_fingerprint": "fp_sim",
                                "choices": choices}
        if include_usage:
            data["usage"] = usage
        return f"data: {json.dumps(data)}\n\n".encode()

    def delta(d: dict[str, Any], finish: str | None = None) -> bytes:
        return event([{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}])

    yield delta({"role": "assistant", "content": "", "refusal": None})
    if mode == "MALFORMED":
        yield b'data: {"choices": 5}\n\n'
        return
    if mode == "STREAMERROR":
        error = {"error": {"message": "The server had an error while processing your request.",
                           "type": "server_error", "param": None, "code": None}}
        yield f"data: {json.dumps(error)}\n\n".encode()
        return
    if answer.call:
        fn = answer.call["function"]
        yield delta({"tool_calls": [{"index": 0, "id": answer.call["id"], "type": "function",
                                     "function": {"name": fn["name"], "arguments": ""}}]})
        args = fn["arguments"]
        for i in range(0, len(args), 8):
            yield delta({"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 8]}}]})
    elif answer.text is not None:
        words = answer.text.split(" ")
        for i, word in enumerate(words):
            yield delta({"content": word if i == 0 else f" {word}"})
            if mode == "MIDSTREAM":
                raise RuntimeError("simulated connection drop")  # uvicorn cuts the response
    if mode == "TRUNCATED":
        return
    yield delta({}, answer.finish)
    if include_usage:
        yield event([], answer.usage)
    yield b"data: [DONE]\n\n"


# --- embeddings ----------------------------------------------------------------------------


def _vector(text: str, dimensions: int) -> list[float]:
    """A deterministic vector: the text's SHA-256 bytes, centred and scaled."""
    digest = b""
    while len(digest) < dimensions:
        digest += hashlib.sha256(digest + text.encode()).digest()
    return [round(b / 255 - 0.5, 6) for b in digest[:dimensions]]


async def _embeddings(request: Request, model: str | None) -> Response[bytes]:
    try:
        body = await _receive(request, azure=model is not None)
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(
                isinstance(t, str) and t for t in texts):
            raise ApiError(400, "'$.input' is invalid. Please check the API reference: "
                           "https://platform.openai.com/docs/api-reference.", param="input")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise ApiError(400, f"Invalid value for 'encoding_format': '{fmt}'.",
                           param="encoding_format", code="invalid_value")
        dimensions = body.get("dimensions", DEFAULT_DIMENSIONS)
        if not isinstance(dimensions, int) or dimensions < 1:
            raise ApiError(400, "Invalid 'dimensions': must be a positive integer.",
                           param="dimensions")
        mode = _fail(" ".join(texts))
    except ApiError as exc:
        return exc.response()
    if mode == "MALFORMED":
        return _json({"object": "list", "data": [{"index": 0}]})
    data = []
    for i, text in enumerate(texts):
        vector = _vector(text, dimensions)
        embedding: list[float] | str = vector if fmt == "float" else \
            base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    tokens = sum(len(t.split()) for t in texts)
    result: dict[str, Any] = {"object": "list", "data": data, "model": model or body["model"],
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    if mode == "NOUSAGE":
        del result["usage"]
    return _json(result)


# --- routes --------------------------------------------------------------------------------


@post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response[bytes] | Stream:
    return await _chat(request, None)


@post("/v1/embeddings")
async def embeddings(request: Request) -> Response[bytes]:
    return await _embeddings(request, None)


@post("/openai/deployments/{deployment:str}/chat/completions")
async def azure_chat_completions(request: Request, deployment: FromPath[str],
                                 ) -> Response[bytes] | Stream:
    return await _chat(request, deployment)


@post("/openai/deployments/{deployment:str}/embeddings")
async def azure_embeddings(request: Request, deployment: FromPath[str]) -> Response[bytes]:
    return await _embeddings(request, deployment)


def create_app(state: SimState | None = None, batches: Any = None) -> Litestar:
    """The simulator as an ASGI app; its ``state.sim`` is the ``SimState`` it uses. With
    ``batches`` (an ``openai_batches.BatchSim``), also OpenAI's Files and Batches API."""
    handlers: list[Any] = [chat_completions, embeddings, azure_chat_completions,
                           azure_embeddings]
    if batches is not None:
        handlers += batches.routes()
    app = Litestar(handlers)
    app.state.sim = state or SimState()
    app.state.batches = batches
    return app
