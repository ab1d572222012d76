"""A local upstream speaking Amazon Bedrock's Converse wire format, SigV4 included.

- ``POST /model/{modelId}/converse`` and ``POST /model/{modelId}/converse-stream``, the model id
  percent-encoded as one path segment (checked on the raw path: an ARN's ``/`` must not split it);
- every request must carry a valid AWS Signature Version 4 for service ``bedrock`` in the
  simulator's region, made with its credentials: the signature is recomputed with botocore from
  the received method, raw path, signed headers and body bytes. Or, instead, its Bedrock API key
  as ``Authorization: Bearer <key>``. Failures answer 403 the way AWS does
  (``MissingAuthenticationTokenException``, ``UnrecognizedClientException``,
  ``InvalidSignatureException``);
- errors are ``{"message": ...}`` with the error's name in ``x-amzn-ErrorType``
  (``Name:namespace``), at the statuses of botocore's service model;
- Converse answers JSON (``output.message.content``, ``stopReason``, ``usage``, ``metrics``);
  ConverseStream answers ``application/vnd.amazon.eventstream``: binary frames (prelude with
  total and headers lengths and its CRC32, string headers ``:message-type`` / ``:event-type`` /
  ``:exception-type`` / ``:content-type``, a JSON payload with the ``p`` padding field real
  streams carry, a message CRC32), cut at arbitrary byte boundaries to exercise buffering.

Requests are validated like Converse does (roles user/assistant alternating from a user turn,
non-empty content blocks of one known kind each, non-blank text, images png/jpeg/gif/webp with
base64 bytes, tool ids and names in Converse's alphabets, tool results answering an earlier
``toolUse``, tool blocks only with a ``toolConfig``, ``inferenceConfig`` ranges, ``toolChoice``
naming an offered tool, ``outputConfig`` schemas as JSON strings); it is stricter than AWS in
refusing unknown top-level fields, so adapter typos fail loudly. Failures answer 400
``ValidationException``.

Answers are deterministic: ``echo: <last user text>`` (``{"echo": ...}`` JSON under an
``outputConfig`` schema or a system prompt asking for a JSON object); a ``toolUse`` of the
``toolChoice`` tool or the first tool, with input ``{"query": <last user text>}``, when tools are
offered and the last message is a user text; ``tool result: <texts>`` after tool results. Cut at
a stop sequence (``stop_sequence``) or to ``maxTokens`` words (``max_tokens``). One word is one
token. ``GUARDRAIL`` in the last user text -> ``guardrail_intervened``.

The last user text fails on demand: ``FAIL <name>`` answers that HTTP error (``400``, ``403``,
``404``, ``408``, ``424``, ``429``, ``500``, ``503``, ``NOTREADY``); ``FAIL STREAM <exception>``
sends some text and then that exception event (e.g. ``throttlingException``); ``FAIL
STREAMSTART <exception>`` sends the exception as the first frame; ``FAIL TRUNCATED`` ends the
stream before ``messageStop``; ``FAIL CORRUPT`` sends a frame with a bad CRC.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import struct
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from litestar import Litestar, Request, Response, post
from litestar.response import Stream

EVENT_STREAM = "application/vnd.amazon.eventstream"
NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
TOP_FIELDS = frozenset({
    "messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
    "additionalModelRequestFields", "promptVariables", "additionalModelResponseFieldPaths",
    "requestMetadata", "performanceConfig", "serviceTier", "outputConfig"})
BLOCK_KINDS = frozenset({"text", "image", "document", "video", "audio", "toolUse", "toolResult",
                         "guardContent", "cachePoint", "reasoningContent"})
IMAGE_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})
TOOL_ID = re.compile(r"^[a-zA-Z0-9_.:-]{1,64}$")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                  r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")
PATH = re.compile(r"^/model/([^/]+)/(converse|converse-stream)$")
FRAME_PIECE = 37  # bytes per body chunk: frames arrive split at odd places
PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGH"

# name -> (status, AWS error type, message), statuses as in botocore's service model
FAILURES = {
    "400": (400, "ValidationException", "The provided request is not valid"),
    "403": (403, "AccessDeniedException",
            "You don't have access to the model with the specified model ID."),
    "404": (404, "ResourceNotFoundException", "The provided model identifier is invalid."),
    "408": (408, "ModelTimeoutException", "Model has timed out in processing the request."),
    "424": (424, "ModelErrorException", "The model returned an error."),
    "429": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "NOTREADY": (429, "ModelNotReadyException", "Model is not ready to serve requests."),
    "500": (500, "InternalServerException", "The server encountered an internal error."),
    "503": (503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
}


@dataclass
class SimState:
    """The simulator's credentials and region, and what it last received (for assertions)."""

    access_key: str = "AKIDEXAMPLE"
    secret_key: str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    token: str | None = "FQoGZXIvYXdzEXAMPLESESSIONTOKEN"
    region: str = "us-east-1"
    api_key: str = "ABSKQmVkcm9ja0FQSUtleS1zaW0tZXhhbXBsZQ=="
    last_body: dict[str, Any] | None = None
    last_headers: dict[str, str] = field(default_factory=dict)
    last_raw_path: str = ""
    last_model: str = ""
    requests: int = 0


class AwsError(Exception):
    """An error answer in AWS's restJson shape."""

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message

    def response(self) -> Response[bytes]:
        return Response(json.dumps({"message": self.message}).encode(), status_code=self.status,
                        media_type="application/json",
                        headers={"x-amzn-ErrorType": f"{self.type}:{NAMESPACE}",
                                 "x-amzn-RequestId": str(uuid.uuid4())})


def _invalid(message: str) -> AwsError:
    return AwsError(400, "ValidationException", message)


# --- event stream encoding -----------------------------------------------------------------


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length: big-endian uint32),
    prelude CRC32, headers (name length u8, name, type 7 = string, value length u16, value),
    payload, CRC32 of everything before it. botocore has no public encoder."""
    encoded = b"".join(
        struct.pack(">B", len(n)) + n + struct.pack(">BH", 7, len(v)) + v
        for n, v in ((k.encode(), val.encode()) for k, val in headers.items()))
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    return encode_frame({":event-type": event_type, ":content-type": "application/json",
                         ":message-type": "event"},
                        json.dumps({**payload, "p": PADDING[:len(event_type)]}).encode())


def exception_frame(exception_type: str, message: str) -> bytes:
    return encode_frame({":exception-type": exception_type, ":content-type": "application/json",
                         ":message-type": "exception"}, json.dumps({"message": message}).encode())


# --- signature -----------------------------------------------------------------------------


def _check_signature(state: SimState, request: Request, raw_path: str, body: bytes) -> None:
    headers = request.headers
    auth = headers.get("authorization")
    if not auth:
        raise AwsError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    if auth.startswith("Bearer "):  # a Bedrock API key: no signature
        if not hmac.compare_digest(auth.removeprefix("Bearer "), state.api_key):
            raise AwsError(403, "UnrecognizedClientException",
                           "The security token included in the request is invalid.")
        return
    match = AUTH.match(auth)
    if match is None:
        raise AwsError(403, "IncompleteSignatureException",
                       "Authorization header requires 'Credential', 'SignedHeaders' and "
                       "'Signature' parameters.")
    access_key, date, region, service, signed, signature = match.groups()
    if access_key != state.access_key:
        raise AwsError(403, "UnrecognizedClientException",
                       "The security token included in the request is invalid.")
    if service != "bedrock" or region != state.region:
        raise AwsError(403, "InvalidSignatureException",
                       f"Credential should be scoped to a valid region and to service 'bedrock', "
                       f"not '{region}/{service}'.")
    names = signed.split(";")
    amz_date = headers.get("x-amz-date", "")
    if "host" not in names or "x-amz-date" not in names or not amz_date.startswith(date):
        raise AwsError(403, "InvalidSignatureException",
                       "The request must sign the host and x-amz-date headers.")
    when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    if abs((dt.datetime.now(dt.UTC) - when).total_seconds()) > 300:
        raise AwsError(403, "InvalidSignatureException", "Signature expired.")
    if state.token and (headers.get("x-amz-security-token") != state.token
                        or "x-amz-security-token" not in names):
        raise AwsError(403, "UnrecognizedClientException",
                       "The security token included in the request is invalid.")
    # Recompute from what arrived: the raw path, the signed headers' values, the body bytes.
    aws = AWSRequest(method=request.method, url=f"http://{headers.get('host', '')}{raw_path}",
                     data=body, headers={n: headers.get(n, "") for n in names})
    aws.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(state.access_key, state.secret_key, state.token)
                       .get_frozen_credentials(), "bedrock", state.region)
    expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
    if not hmac.compare_digest(expected, signature):
        raise AwsError(403, "InvalidSignatureException",
                       "The request signature we calculated does not match the signature you "
                       "provided. Check your AWS Secret Access Key and signing method. Consult "
                       "the service documentation for details.")


# --- request validation --------------------------------------------------------------------


def _check_request(body: Any) -> None:
    if not isinstance(body, dict):
        raise _invalid("Malformed input request, please reformat your input and try again.")
    if unknown := sorted(set(body) - TOP_FIELDS):
        raise _invalid(f"Unexpected field: {unknown[0]}")
    tool_names = _check_tool_config(body.get("toolConfig"))
    _check_messages(body.get("messages"), tools=tool_names is not None)
    system = body.get("system", [])
    if not isinstance(system, list) or not all(
            isinstance(b, dict) and isinstance(b.get("text"), str) and b["text"] for b in system):
        raise _invalid("system must be a list of {text} blocks with non-empty text")
    _check_inference(body.get("inferenceConfig", {}))
    if "outputConfig" in body:
        fmt = (body["outputConfig"] or {}).get("textFormat") or {}
        schema = ((fmt.get("structure") or {}).get("jsonSchema") or {}).get("schema")
        if fmt.get("type") != "json_schema" or not isinstance(schema, str):
            raise _invalid("outputConfig.textFormat needs type json_schema and a schema string")
        try:
            json.loads(schema)
        except ValueError:
            raise _invalid("outputConfig schema is not valid JSON") from None


def _check_messages(messages: Any, *, tools: bool) -> None:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty list")
    tool_ids: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise _invalid(f"messages.{i} must have exactly role and content")
        if m["role"] not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role must be user or assistant")
        if i == 0 and m["role"] != "user":
            raise _invalid("A conversation must start with a user message. Try again with a "
                           "conversation that starts with a user message.")
        if i and m["role"] == messages[i - 1]["role"]:
            raise _invalid("A conversation must alternate between user and assistant roles. "
                           "Make sure the conversation alternates between user and assistant "
                           "roles and try again.")
        if not isinstance(m["content"], list) or not m["content"]:
            raise _invalid(f"messages.{i}.content must be a non-empty list")
        for j, block in enumerate(m["content"]):
            _check_block(block, f"messages.{i}.content.{j}", m["role"], tools, tool_ids)


def _check_block(block: Any, where: str, role: str, tools: bool, tool_ids: set[str]) -> None:
    if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in BLOCK_KINDS:
        raise _invalid(f"{where} must hold exactly one content block kind")
    kind, value = next(iter(block.items()))
    if kind == "text" and (not isinstance(value, str) or not value.strip()):
        raise _invalid("The text field in the ContentBlock object is blank. Add text to the "
                       "text field, and try again.")
    if kind == "image":
        if not isinstance(value, dict) or value.get("format") not in IMAGE_FORMATS:
            raise _invalid(f"{where}.image.format must be one of png, jpeg, gif, webp")
        raw = (value.get("source") or {}).get("bytes")
        try:
            ok = isinstance(raw, str) and bool(base64.b64decode(raw, validate=True))
        except binascii.Error:
            ok = False
        if not ok:
            raise _invalid(f"{where}.image.source.bytes must be non-empty base64")
    if kind in ("toolUse", "toolResult") and not tools:
        raise _invalid("The toolConfig field must be defined when using toolUse and toolResult "
                       "content blocks.")
    if kind == "toolUse":
        if (role != "assistant" or not isinstance(value, dict)
                or not TOOL_ID.match(str(value.get("toolUseId", "")))
                or not TOOL_NAME.match(str(value.get("name", "")))
                or not isinstance(value.get("input"), dict)):
            raise _invalid(f"{where}.toolUse needs toolUseId, name and an input object")
        tool_ids.add(value["toolUseId"])
    if kind == "toolResult":
        content = value.get("content") if isinstance(value, dict) else None
        if (role != "user" or not isinstance(content, list)
                or value.get("toolUseId") not in tool_ids
                or not all(isinstance(c, dict) and len(c) == 1 and ("text" in c or "json" in c)
                           for c in content)):
            raise _invalid(f"{where}.toolResult must answer an earlier toolUse with text or "
                           "json content")


def _check_tool_config(config: Any) -> set[str] | None:
    if config is None:
        return None
    tools = config.get("tools") if isinstance(config, dict) else None
    if not isinstance(tools, list) or not tools:
        raise _invalid("toolConfig.tools must be a non-empty list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if (not isinstance(spec, dict) or not TOOL_NAME.match(str(spec.get("name", "")))
                or not isinstance((spec.get("inputSchema") or {}).get("json"), dict)
                or ("description" in spec and not spec["description"])):
            raise _invalid(f"toolConfig.tools.{i}.toolSpec needs a name and inputSchema.json")
        names.add(spec["name"])
    choice = config.get("toolChoice")
    if choice is not None:
        if not isinstance(choice, dict) or len(choice) != 1 or next(iter(choice)) not in (
                "auto", "any", "tool"):
            raise _invalid("toolChoice must be one of auto, any, tool")
        if "tool" in choice and (choice["tool"] or {}).get("name") not in names:
            raise _invalid("toolChoice.tool.name must name one of the tools")
    return names


def _check_inference(config: Any) -> None:
    if not isinstance(config, dict) or set(config) - {"maxTokens", "temperature", "topP",
                                                      "stopSequences"}:
        raise _invalid("inferenceConfig takes maxTokens, temperature, topP, stopSequences")
    if "maxTokens" in config and (not isinstance(config["maxTokens"], int)
                                  or config["maxTokens"] < 1):
        raise _invalid("inferenceConfig.maxTokens must be an integer >= 1")
    for name in ("temperature", "topP"):
        if name in config and not (isinstance(config[name], int | float)
                                   and 0 <= config[name] <= 1):
            raise _invalid(f"inferenceConfig.{name} must be between 0 and 1")
    stops = config.get("stopSequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _invalid("inferenceConfig.stopSequences must be non-empty strings")


# --- answers -------------------------------------------------------------------------------


@dataclass
class _Answer:
    text: str = ""
    tool: dict[str, Any] | None = None  # {"toolUseId", "name", "input"}
    stop_reason: str = "end_turn"
    usage: dict[str, int] = field(default_factory=dict)


def _texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["text"] for b in blocks if "text" in b]


def _words(s: str) -> int:
    return len(s.split())


def _answer(body: dict[str, Any]) -> _Answer:
    messages = body["messages"]
    last = messages[-1]["content"] if messages[-1]["role"] == "user" else []
    last_text = " ".join(_texts(last))
    results = [" ".join(_texts(b["toolResult"]["content"])) for b in last if "toolResult" in b]
    system = " ".join(_texts(body.get("system", [])))
    answer = _Answer()
    config = body.get("toolConfig")
    if results:
        answer.text = "tool result: " + " | ".join(results)
    elif config is not None and last_text:
        name = (config.get("toolChoice", {}).get("tool") or {}).get("name")
        name = name or config["tools"][0]["toolSpec"]["name"]
        call_id = "tooluse_" + hashlib.sha1(last_text.encode()).hexdigest()[:20]
        answer.tool = {"toolUseId": call_id, "name": name, "input": {"query": last_text}}
        answer.stop_reason = "tool_use"
    elif "outputConfig" in body or "JSON object" in system:
        answer.text = json.dumps({"echo": last_text})
    else:
        answer.text = f"echo: {last_text}"
    if "GUARDRAIL" in last_text:
        answer.text, answer.tool = "Sorry, the model cannot answer this question.", None
        answer.stop_reason = "guardrail_intervened"
    inference = body.get("inferenceConfig", {})
    for stop in inference.get("stopSequences", []):
        if answer.tool is None and stop in answer.text:
            answer.text = answer.text[:answer.text.index(stop)]
            answer.stop_reason = "stop_sequence"
    limit = inference.get("maxTokens")
    if answer.tool is None and limit is not None and _words(answer.text) > limit:
        answer.text = " ".join(answer.text.split()[:limit])
        answer.stop_reason = "max_tokens"
    prompt = _words(system) + sum(_words(t) for m in messages for t in _texts(m["content"]))
    output = _words(answer.text) + (_words(json.dumps(answer.tool["input"])) if answer.tool
                                    else 0)
    answer.usage = {"inputTokens": prompt, "outputTokens": output, "totalTokens": prompt + output}
    return answer


def _converse(answer: _Answer) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"text": answer.text}] if answer.text else []
    if answer.tool:
        content.append({"toolUse": answer.tool})
    return {"output": {"message": {"role": "assistant", "content": content}},
            "stopReason": answer.stop_reason, "usage": answer.usage,
            "metrics": {"latencyMs": 42}}


def _frames(answer: _Answer, fail: list[str]) -> list[bytes]:
    if fail[:1] == ["STREAMSTART"]:
        return [exception_frame(fail[1], "The stream failed before it started.")]
    frames = [event_frame("messageStart", {"role": "assistant"})]
    index = 0
    if answer.text:
        words = answer.text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == len(words) - 1 else word + " "
            frames.append(event_frame("contentBlockDelta",
                                      {"contentBlockIndex": 0, "delta": {"text": piece}}))
        frames.append(event_frame("contentBlockStop", {"contentBlockIndex": 0}))
        index = 1
    if fail[:1] == ["STREAM"]:
        return [*frames, exception_frame(fail[1], "The stream was interrupted.")]
    if answer.tool:
        tool = answer.tool
        frames.append(event_frame("contentBlockStart", {"contentBlockIndex": index, "start": {
            "toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}}))
        arguments = json.dumps(tool["input"])
        for piece in (arguments[:7], arguments[7:15], arguments[15:]):
            frames.append(event_frame("contentBlockDelta", {
                "contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}))
        frames.append(event_frame("contentBlockStop", {"contentBlockIndex": index}))
    if fail == ["TRUNCATED"]:
        return frames
    frames.append(event_frame("messageStop", {"stopReason": answer.stop_reason}))
    frames.append(event_frame("metadata", {"usage": answer.usage,
                                           "metrics": {"latencyMs": 42}}))
    if fail == ["CORRUPT"]:
        frames[1] = frames[1][:-1] + bytes([frames[1][-1] ^ 0xFF])
    return frames


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), FRAME_PIECE):
        yield data[i:i + FRAME_PIECE]


# --- app -----------------------------------------------------------------------------------


def create_app(state: SimState) -> Litestar:
    @post("/model/{rest:path}", status_code=200)
    async def model_action(request: Request, rest: str) -> Response[bytes] | Stream:
        raw_path = request.scope.get("raw_path", b"").decode("latin-1")
        body_bytes = await request.body()
        state.requests += 1
        state.last_headers = {k.lower(): v for k, v in request.headers.items()}
        state.last_raw_path = raw_path
        try:
            match = PATH.match(raw_path)
            if match is None:
                raise AwsError(404, "UnknownOperationException", "Unknown operation")
            _check_signature(state, request, raw_path, body_bytes)
            state.last_model = unquote(match.group(1))
            if request.headers.get("content-type") != "application/json":
                raise _invalid("Content-Type must be application/json")
            try:
                body = json.loads(body_bytes)
            except ValueError:
                raise _invalid("Malformed input request, please reformat your input and try "
                               "again.") from None
            state.last_body = body
            _check_request(body)
            last = body["messages"][-1]
            fail = " ".join(_texts(last["content"])).split() if last["role"] == "user" else []
            fail = fail[1:] if fail[:1] == ["FAIL"] else []
            if fail and fail[0] in FAILURES:
                raise AwsError(*FAILURES[fail[0]])
        except AwsError as exc:
            return exc.response()
        answer = _answer(body)
        request_id = {"x-amzn-RequestId": str(uuid.uuid4())}
        if match.group(2) == "converse":
            return Response(json.dumps(_converse(answer)).encode(), media_type="application/json",
                            headers=request_id)
        return Stream(_pieces(b"".join(_frames(answer, fail))), media_type=EVENT_STREAM,
                      headers=request_id)

    return Litestar(route_handlers=[model_action], debug=False)
