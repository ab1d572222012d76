"""A local Gemini API and Vertex AI upstream, speaking Google's wire format, for adapter tests.

Paths, as Google serves them:

- ``POST /v1beta/models/{model}:generateContent`` / ``:streamGenerateContent`` /
  ``:batchEmbedContents`` with header ``x-goog-api-key`` (missing: 403 PERMISSION_DENIED; wrong:
  400 INVALID_ARGUMENT with ``reason: API_KEY_INVALID``, as the real API answers).
- ``POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:...``
  (``generateContent``, ``streamGenerateContent``, ``predict``) with ``Authorization: Bearer``
  (wrong or missing: 401 UNAUTHENTICATED; another project: 403 PERMISSION_DENIED).

Errors use Google's shape ``{"error": {"code", "message", "status", "details"?}}``. Bodies are
checked field by field (unknown fields, empty parts, bad roles, Schema keywords Gemini lacks,
enum values) and refused with 400 INVALID_ARGUMENT like the real API. With ``?alt=sse`` the
stream is ``data: <GenerateContentResponse JSON>`` events separated by CRLF CRLF, no terminator;
usage metadata is cumulative; the last event carries ``finishReason``.

Answers are deterministic. The last user turn's text drives them:

- ``FAIL 400`` / ``FAIL 500`` / ``FAIL 503`` -> that error; ``FAIL 429`` -> 429
  RESOURCE_EXHAUSTED with a ``google.rpc.RetryInfo`` of 7s (Google sends no Retry-After).
- ``FAIL BLOCK`` -> ``promptFeedback.blockReason`` and no candidates; ``FAIL SAFETY`` -> a
  candidate with ``finishReason: SAFETY`` and no content.
- ``FAIL MIDSTREAM`` (streaming) -> one chunk, then an error event; ``FAIL CUT`` -> one chunk,
  then the connection ends without a finish reason.
- Lines ``CALL <name> <json args>`` -> ``functionCall`` parts (the first carries a
  ``thoughtSignature`` the simulator remembers); tool mode ANY with no CALL line calls the first
  allowed function. A turn that answers functions -> ``tool results: name=<response>; ...``.
- Otherwise ``Echo: <text>`` (or ``{"echo": <text>}`` in JSON mode), cut to
  ``maxOutputTokens`` words (``MAX_TOKENS``) and before any stop sequence.

As Gemini 3 does, a function call of the current turn without a ``thoughtSignature`` is refused
(400), and a signature that is neither one it issued nor Google's skip placeholder is refused.
Every request is recorded in ``requests`` (path, query, headers, body).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request, Response, post
from litestar.response import Stream

SKIP_SIGNATURES = {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_FAIL_MESSAGES = {
    400: "Request contains an invalid argument.",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in "
         "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}
_TOP = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig",
        "safetySettings", "cachedContent"}
_PART_DATA = {"text", "inlineData", "fileData", "functionCall", "functionResponse",
              "executableCode", "codeExecutionResult"}
_PART_META = {"thought", "thoughtSignature", "videoMetadata", "mediaResolution"}
_NUM = (int, float)
_GENERATION = {"stopSequences": list, "responseMimeType": str, "responseSchema": dict,
               "responseJsonSchema": dict, "candidateCount": int, "maxOutputTokens": int,
               "temperature": _NUM, "topP": _NUM, "topK": _NUM, "seed": int,
               "presencePenalty": _NUM, "frequencyPenalty": _NUM, "responseLogprobs": bool,
               "logprobs": int, "thinkingConfig": dict, "responseModalities": list}
_SCHEMA = {"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
           "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
           "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum",
           "maximum"}
_TYPES = {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
_MODES = {"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"}


class Invalid(Exception):
    """A request the real API would refuse with 400 INVALID_ARGUMENT."""


def google_error(code: int, message: str, details: list[dict] | None = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message, "status": _STATUS[code]}
    if details:
        error["details"] = details
    return Response(content=json.dumps({"error": error}, indent=2).encode(), status_code=code,
                    media_type="application/json")


class GeminiSimulator:
    """One simulator serves both the Gemini API and Vertex AI paths."""

    def __init__(self, api_key: str = "sim-gemini-key", token: str = "sim-vertex-token",
                 project: str = "sim-project"):
        self.api_key, self.token, self.project = api_key, token, project
        self.requests: list[dict[str, Any]] = []
        self.signatures: set[str] = set()  # thoughtSignatures this simulator issued

        @post("/v1beta/models/{spec:str}", status_code=200)
        async def gemini(request: Request, spec: str) -> Response:
            key = request.headers.get("x-goog-api-key")
            if not key:
                return google_error(403, "Method doesn't allow unregistered callers (callers "
                                         "without established identity). Please use API Key or "
                                         "other form of API consumer identity to call this API.")
            if key != self.api_key:
                return google_error(400, "API key not valid. Please pass a valid API key.", [{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"}}])
            return await self._handle(request, spec, vertex=False)

        @post("/v1/projects/{project:str}/locations/{location:str}/publishers/google/models/"
              "{spec:str}", status_code=200)
        async def vertex(request: Request, project: str, location: str, spec: str) -> Response:
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return google_error(401, "Request had invalid authentication credentials. "
                                         "Expected OAuth 2 access token, login cookie or other "
                                         "valid authentication credential.")
            if project != self.project:
                return google_error(403, f"Permission 'aiplatform.endpoints.predict' denied on "
                                         f"resource '//aiplatform.googleapis.com/projects/"
                                         f"{project}/locations/{location}'.")
            return await self._handle(request, spec, vertex=True)

        self.app = Litestar([gemini, vertex], debug=False)

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]

    async def _handle(self, request: Request, spec: str, *, vertex: bool) -> Response:
        model, _, method = spec.rpartition(":")
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            return google_error(400, "Invalid JSON payload received. Unexpected token.")
        self.requests.append({"path": request.url.path, "query": dict(request.query_params),
                              "headers": dict(request.headers), "body": body})
        known = {"generateContent", "streamGenerateContent"} | (
            {"predict"} if vertex else {"batchEmbedContents"})
        if method not in known:
            return google_error(404, f"models/{model} is not found for API version, or "
                                     f"{method} is not supported.")
        try:
            if method == "batchEmbedContents":
                return self._batch_embed(model, body)
            if method == "predict":
                return self._predict(model, body)
            self._check_generate(body, vertex)
        except Invalid as exc:
            return google_error(400, str(exc))
        command = _last_user_text(body["contents"])
        if failure := _failure(command):
            return failure
        chunks = self._answer(model, body, command, vertex)
        if method == "generateContent":
            return Response(content=json.dumps(_merge(chunks)).encode(),
                            media_type="application/json")
        if request.query_params.get("alt") != "sse":  # Google's default: one JSON array
            return Response(content=json.dumps(chunks).encode(), media_type="application/json")
        return Stream(_sse(chunks, command), media_type="text/event-stream")

    # --- validation ---------------------------------------------------------------------

    def _check_generate(self, body: Any, vertex: bool) -> None:
        if not isinstance(body, dict):
            raise Invalid("Invalid JSON payload received. Expected an object.")
        _known(body, _TOP | ({"labels"} if vertex else set()), "")
        contents = body.get("contents")
        if not contents:
            raise Invalid("* GenerateContentRequest.contents: contents is not specified")
        if not isinstance(contents, list):
            raise Invalid("Invalid value at 'contents': expected a list")
        for i, content in enumerate(contents):
            _content(content, f"contents[{i}]", vertex, roles={"user", "model", ""})
        if "systemInstruction" in body:
            _content(body["systemInstruction"], "system_instruction", vertex, roles={"user", ""})
        for i, tool in enumerate(body.get("tools") or []):
            _known(tool, {"functionDeclarations", "googleSearch", "codeExecution"}, f"tools[{i}]")
            for j, decl in enumerate(tool.get("functionDeclarations") or []):
                where = f"tools[{i}].function_declarations[{j}]"
                _known(decl, {"name", "description", "parameters", "response",
                              "parametersJsonSchema"}, where)
                if not isinstance(decl.get("name"), str) or not decl["name"]:
                    raise Invalid(f"* GenerateContentRequest.{where}.name: Name is required.")
                if "parameters" in decl:
                    _schema(decl["parameters"], f"{where}.parameters")
        if "toolConfig" in body:
            _known(body["toolConfig"], {"functionCallingConfig"}, "tool_config")
            fcc = body["toolConfig"].get("functionCallingConfig") or {}
            _known(fcc, {"mode", "allowedFunctionNames"}, "tool_config.function_calling_config")
            if fcc.get("mode", "AUTO") not in _MODES:
                raise Invalid(f"Invalid value at 'tool_config.function_calling_config.mode' "
                              f"(type.googleapis.com/google.ai.generativelanguage.v1beta."
                              f"FunctionCallingConfig.Mode), \"{fcc.get('mode')}\"")
        config = body.get("generationConfig") or {}
        _known(config, set(_GENERATION), "generation_config")
        for key, kind in _GENERATION.items():
            if key in config and (not isinstance(config[key], kind)
                                  or (isinstance(config[key], bool) and kind is not bool)):
                raise Invalid(f"Invalid value at 'generation_config.{key}', "
                              f"{json.dumps(config[key])}")
        if len(config.get("stopSequences", [])) > 5:
            raise Invalid("* GenerateContentRequest.generation_config.stop_sequences: "
                          "at most 5 stop sequences are allowed")
        if "responseSchema" in config:
            if config.get("responseMimeType") != "application/json":
                raise Invalid("* GenerateContentRequest.generation_config.response_schema: "
                              "a compatible response_mime_type must be set")
            _schema(config["responseSchema"], "generation_config.response_schema")
        self._check_signatures(body["contents"])

    def _check_signatures(self, contents: list[dict]) -> None:
        """Gemini 3's rule: the current turn's function calls carry their signatures."""
        start = max((i for i, c in enumerate(contents) if c.get("role", "user") == "user"
                     and any("text" in p for p in c["parts"])), default=0)
        for i, content in enumerate(contents[start:], start):
            calls = [(j, p) for j, p in enumerate(content["parts"]) if "functionCall" in p]
            if content.get("role") != "model" or not calls:
                continue
            j, first = calls[0]
            signature = first.get("thoughtSignature")
            if signature is None:
                raise Invalid(f"Function call is missing a thought_signature in functionCall "
                              f"parts. This is required for tools to work correctly, and "
                              f"missing thought_signature may lead to degraded model "
                              f"performance. Additional data, function call `default_api:"
                              f"{first['functionCall']['name']}` , position {j + 1}. Please "
                              f"refer to https://ai.google.dev/gemini-api/docs/thought-signatures"
                              f" for more details.")
            for _, part in calls:
                sig = part.get("thoughtSignature")
                if sig is not None and sig not in SKIP_SIGNATURES and sig not in self.signatures:
                    raise Invalid(f"Corrupted thought signature. (contents[{i}])")

    # --- answers ------------------------------------------------------------------------

    def _answer(self, model: str, body: dict, text: str, vertex: bool) -> list[dict]:
        """The answer as the chunks a stream would carry (merged for generateContent)."""
        config = body.get("generationConfig") or {}
        prompt = _prompt_tokens(body)
        thoughts = 7 if "think" in model else 0
        meta: dict[str, Any] = {"modelVersion": model,
                                "responseId": hashlib.sha256(text.encode()).hexdigest()[:22]}
        if vertex:
            meta["createTime"] = "2025-01-01T00:00:00.000000Z"

        def usage(candidates: int) -> dict[str, Any]:
            u = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
                 "totalTokenCount": prompt + candidates + thoughts,
                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
            if thoughts:
                u["thoughtsTokenCount"] = thoughts
            if vertex:
                u["trafficType"] = "ON_DEMAND"
            return u

        def chunk(parts: list[dict] | None, finish: str | None, candidates: int) -> dict:
            cand: dict[str, Any] = {"index": 0}
            if parts is not None:
                cand["content"] = {"parts": parts, "role": "model"}
            if finish:
                cand["finishReason"] = finish
            return {"candidates": [cand], "usageMetadata": usage(candidates), **meta}

        if "FAIL BLOCK" in text:
            return [{"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                     "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                     **meta}]
        if "FAIL SAFETY" in text:
            return [chunk(None, "SAFETY", 0)]
        calls = self._calls(body, text)
        if calls:
            return [chunk(calls, "STOP", 10 * len(calls))]
        answer, finish = _text_answer(body, text, config)
        words = re.findall(r"\S+\s*", answer) or [""]
        pieces = ["".join(words[i:i + 2]) for i in range(0, len(words), 2)]
        out, produced = [], 0
        for n, piece in enumerate(pieces):
            produced += len(piece.split())
            last = n == len(pieces) - 1
            out.append(chunk([{"text": piece}], finish if last else None, produced))
        return out

    def _calls(self, body: dict, text: str) -> list[dict]:
        declared = [d["name"] for t in body.get("tools") or []
                    for d in t.get("functionDeclarations") or []]
        fcc = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        mode = fcc.get("mode", "AUTO")
        last = body["contents"][-1]
        if not declared or mode == "NONE" or any("functionResponse" in p for p in last["parts"]):
            return []
        calls = []
        for line in text.splitlines():
            if m := re.match(r"\s*CALL\s+(\S+)\s*(.*)$", line):
                calls.append({"functionCall": {"name": m[1], "args": json.loads(m[2] or "{}")}})
        if not calls and mode == "ANY":
            name = (fcc.get("allowedFunctionNames") or declared)[0]
            calls.append({"functionCall": {"name": name, "args": {}}})
        if calls:
            sig = base64.b64encode(f"sim-signature-{len(self.signatures)}".encode()).decode()
            self.signatures.add(sig)
            calls[0]["thoughtSignature"] = sig
        return calls

    # --- embeddings ---------------------------------------------------------------------

    def _batch_embed(self, model: str, body: Any) -> Response:
        if not isinstance(body, dict):
            raise Invalid("Invalid JSON payload received. Expected an object.")
        _known(body, {"requests"}, "")
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise Invalid("* BatchEmbedContentsRequest.requests: requests is not specified")
        if len(requests) > 100:
            raise Invalid("* BatchEmbedContentsRequest.requests: at most 100 requests can be "
                          "in one batch")
        vectors = []
        for i, r in enumerate(requests):
            _known(r, {"model", "content", "taskType", "title", "outputDimensionality"},
                   f"requests[{i}]")
            if r.get("model") != f"models/{model}":
                raise Invalid(f"* BatchEmbedContentsRequest.requests[{i}].model: the model "
                              "must match the model of the batch request")
            _content(r.get("content"), f"requests[{i}].content", False, roles={"user", ""})
            text = " ".join(p.get("text", "") for p in r["content"]["parts"])
            if failure := _failure(text):
                return failure
            vectors.append({"values": _vector(text, r.get("outputDimensionality") or 8)})
        return Response(content=json.dumps({"embeddings": vectors}).encode(),
                        media_type="application/json")

    def _predict(self, model: str, body: Any) -> Response:
        if not isinstance(body, dict):
            raise Invalid("Invalid JSON payload received. Expected an object.")
        _known(body, {"instances", "parameters"}, "")
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise Invalid("instances is required")
        limit = 1 if model.startswith("gemini-embedding") else 250
        if len(instances) > limit:
            raise Invalid(f"Unable to submit request because the model supports up to {limit} "
                          f"instances per request, but {len(instances)} were sent.")
        params = body.get("parameters") or {}
        _known(params, {"outputDimensionality", "autoTruncate"}, "parameters")
        predictions = []
        for i, inst in enumerate(instances):
            _known(inst, {"content", "task_type", "title"}, f"instances[{i}]")
            if not isinstance(inst.get("content"), str):
                raise Invalid(f"instances[{i}].content must be a string")
            if failure := _failure(inst["content"]):
                return failure
            predictions.append({"embeddings": {
                "statistics": {"truncated": False, "token_count": len(inst["content"].split())},
                "values": _vector(inst["content"], params.get("outputDimensionality") or 8)}})
        return Response(content=json.dumps({"predictions": predictions}).encode(),
                        media_type="application/json")


# --- helpers ---------------------------------------------------------------------------------


def _known(obj: Any, fields: set[str], where: str) -> None:
    if not isinstance(obj, dict):
        raise Invalid(f"Invalid value at '{where}': expected an object")
    for key in obj:
        if key not in fields:
            at = f" at '{where}'" if where else ""
            raise Invalid(f'Invalid JSON payload received. Unknown name "{key}"{at}: '
                          "Cannot find field.")


def _content(content: Any, where: str, vertex: bool, roles: set[str]) -> None:
    _known(content, {"role", "parts"}, where)
    if content.get("role", "") not in roles:
        raise Invalid("Please use a valid role: user, model.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise Invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be "
                      "empty.")
    for j, part in enumerate(parts):
        at = f"{where}.parts[{j}]"
        _known(part, _PART_DATA | _PART_META, at)
        data = [k for k in part if k in _PART_DATA]
        if len(data) != 1:
            raise Invalid(f"* GenerateContentRequest.{at}.data: required oneof field 'data' "
                          "must have one initialized field")
        kind = data[0]
        if kind == "text" and not isinstance(part["text"], str):
            raise Invalid(f"Invalid value at '{at}.text', expected a string")
        if kind == "inlineData":
            _known(part["inlineData"], {"mimeType", "data"}, f"{at}.inline_data")
            if not part["inlineData"].get("mimeType") or "data" not in part["inlineData"]:
                raise Invalid(f"* GenerateContentRequest.{at}.inline_data: mime_type and data "
                              "are required")
            try:
                base64.b64decode(part["inlineData"]["data"], validate=True)
            except ValueError:
                raise Invalid(f"Invalid value at '{at}.inline_data.data' (TYPE_BYTES), "
                              "Base64 decoding failed") from None
        if kind == "fileData":
            _known(part["fileData"], {"mimeType", "fileUri", "displayName"}, f"{at}.file_data")
            if not part["fileData"].get("fileUri"):
                raise Invalid(f"* GenerateContentRequest.{at}.file_data.file_uri: file_uri "
                              "is required")
            if vertex and not part["fileData"].get("mimeType"):
                raise Invalid(f"{at}.file_data.mime_type: mime_type is required")
        if kind == "functionCall":
            _known(part["functionCall"], {"name", "args", "id"}, f"{at}.function_call")
            if not isinstance(part["functionCall"].get("args", {}), dict):
                raise Invalid(f"Invalid value at '{at}.function_call.args', expected an object")
        if kind == "functionResponse":
            _known(part["functionResponse"], {"name", "response", "id"},
                   f"{at}.function_response")
            if not part["functionResponse"].get("name") or not isinstance(
                    part["functionResponse"].get("response"), dict):
                raise Invalid(f"* GenerateContentRequest.{at}.function_response: name and "
                              "response (an object) are required")
        if "thoughtSignature" in part:
            try:
                base64.b64decode(part["thoughtSignature"], altchars=b"-_")
            except ValueError:
                raise Invalid(f"Invalid value at '{at}.thought_signature' (TYPE_BYTES), "
                              "Base64 decoding failed") from None


def _schema(schema: Any, where: str) -> None:
    _known(schema, _SCHEMA, where)
    kind = schema.get("type")
    if kind is not None and str(kind).upper() not in _TYPES:
        raise Invalid(f"Invalid value at '{where}.type' (type.googleapis.com/"
                      f"google.ai.generativelanguage.v1beta.Type), \"{kind}\"")
    if "enum" in schema and not all(isinstance(v, str) for v in schema["enum"]):
        raise Invalid(f"Invalid value at '{where}.enum', expected strings")
    if str(kind).upper() == "OBJECT" and "properties" in schema and not schema["properties"]:
        raise Invalid(f"* GenerateContentRequest.{where}.properties: should be non-empty for "
                      "OBJECT type")
    for name, sub in (schema.get("properties") or {}).items():
        _schema(sub, f"{where}.properties[{name}].value")
    if "items" in schema:
        _schema(schema["items"], f"{where}.items")
    for i, sub in enumerate(schema.get("anyOf") or []):
        _schema(sub, f"{where}.any_of[{i}]")


def _last_user_text(contents: list[dict]) -> str:
    last = contents[-1]
    if last.get("role", "user") != "user":
        return ""
    return "\n".join(p["text"] for p in last["parts"] if "text" in p)


def _failure(text: str) -> Response | None:
    m = re.search(r"FAIL (400|429|500|503)\b", text)
    if not m:
        return None
    code = int(m[1])
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}] \
        if code == 429 else None
    return google_error(code, _FAIL_MESSAGES[code], details)


def _text_answer(body: dict, text: str, config: dict) -> tuple[str, str]:
    last = body["contents"][-1]
    results = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
    if results:
        answer = "tool results: " + "; ".join(
            f"{r['name']}={json.dumps(r['response'], sort_keys=True)}" for r in results)
    elif config.get("responseMimeType") == "application/json":
        answer = json.dumps({"echo": text, "schema": "responseSchema" in config})
    else:
        answer = f"Echo: {text}"
    finish = "STOP"
    for stop in config.get("stopSequences", []):
        if stop in answer:
            answer = answer[:answer.index(stop)]
    limit = config.get("maxOutputTokens")
    if limit is not None and len(answer.split()) > limit:
        answer, finish = " ".join(answer.split()[:limit]), "MAX_TOKENS"
    return answer, finish


def _prompt_tokens(body: dict) -> int:
    contents = [*body["contents"], body.get("systemInstruction") or {"parts": []}]
    tokens = 0
    for content in contents:
        for part in content["parts"]:
            tokens += len(part.get("text", "").split())
            tokens += 258 if "inlineData" in part or "fileData" in part else 0
            tokens += 5 if "functionCall" in part or "functionResponse" in part else 0
    return tokens


def _merge(chunks: list[dict]) -> dict:
    """The whole answer, as generateContent returns it: the chunks' parts in one candidate."""
    merged = json.loads(json.dumps(chunks[-1]))
    if "candidates" in merged and len(chunks) > 1:
        text = "".join(p.get("text", "") for c in chunks
                       for p in c["candidates"][0].get("content", {}).get("parts", []))
        merged["candidates"][0]["content"]["parts"] = [{"text": text}]
    return merged


def _vector(text: str, dim: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i % 32] - 128) / 128, 6) for i in range(dim)]


async def _sse(chunks: list[dict], command: str) -> AsyncIterator[bytes]:
    def frame(obj: dict) -> bytes:
        return f"data: {json.dumps(obj)}\r\n\r\n".encode()

    if "FAIL MIDSTREAM" in command or "FAIL CUT" in command:
        first = json.loads(json.dumps(chunks[0]))
        first["candidates"][0].pop("finishReason", None)
        yield frame(first)
        if "FAIL MIDSTREAM" in command:
            yield frame({"error": {"code": 503, "message": _FAIL_MESSAGES[503],
                                   "status": "UNAVAILABLE"}})
        return
    for chunk in chunks:
        yield frame(chunk)
