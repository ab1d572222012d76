"""Checks of a batch input file (JSONL, one ``{custom_id, method, url, body}`` a line), as
OpenAI makes them: every line JSON with those fields, ``method`` POST, one ``url`` for the
whole file (a supported endpoint), ``custom_id`` unique, size and line bounds. Every refusal
names its line (1-based), so a user can fix the file."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from router.batch.wire import ENDPOINTS, InputLine

_LINE = msgspec.json.Decoder(InputLine)
MAX_CUSTOM_ID = 512


class InvalidFile(ValueError):
    """A file a batch cannot run; ``line`` is 1-based, None for the file as a whole."""

    def __init__(self, message: str, line: int | None = None, code: str = "invalid_file"):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line, self.code = line, code


@dataclass(frozen=True, slots=True)
class Request:
    """One input line, checked: its position, id and body (JSON, as the endpoint takes it)."""

    line: int
    custom_id: str
    body: bytes


def parse(content: bytes, *, max_lines: int) -> tuple[str, list[Request]]:
    """The endpoint and requests of an input file; ``InvalidFile`` naming the first bad line."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidFile(f"the file is not UTF-8 (byte {exc.start})") from None
    requests: list[Request] = []
    seen: set[str] = set()
    url = None
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(requests) >= max_lines:
            raise InvalidFile(f"the file has more than {max_lines} requests (batch.max_lines)",
                              n, code="too_many_requests")
        try:
            item = _LINE.decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidFile(f"not a batch request: {exc} (each line is "
                              '{"custom_id", "method", "url", "body"})', n) from None
        except msgspec.DecodeError as exc:
            raise InvalidFile(f"not valid JSON: {exc}", n, code="invalid_json") from None
        if not item.custom_id or len(item.custom_id) > MAX_CUSTOM_ID:
            raise InvalidFile(f"custom_id must have 1 to {MAX_CUSTOM_ID} characters", n)
        if item.custom_id in seen:
            raise InvalidFile(f"custom_id {item.custom_id!r} is used by an earlier line: "
                              "custom_ids must be unique in a batch", n,
                              code="duplicate_custom_id")
        seen.add(item.custom_id)
        if item.method != "POST":
            raise InvalidFile(f"method must be POST, not {item.method!r}", n)
        if item.url not in ENDPOINTS:
            raise InvalidFile(f"url {item.url!r} is not supported: use one of "
                              f"{', '.join(ENDPOINTS)}", n, code="invalid_url")
        if url is not None and item.url != url:
            raise InvalidFile(f"url {item.url!r} differs from the file's first url {url!r}: "
                              "a batch has one endpoint", n, code="mixed_urls")
        url = item.url
        if item.body.get("stream"):
            raise InvalidFile("body.stream must not be true in a batch", n)
        requests.append(Request(n, item.custom_id, msgspec.json.encode(item.body)))
    if url is None:
        raise InvalidFile("the file has no requests", code="empty_file")
    return url, requests
