"""The input file's checks: every refusal names its line."""

from __future__ import annotations

import json

import pytest

from router.batch.lines import InvalidFile, parse


def line(i: int, **over) -> dict:
    return {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}, **over}


def jsonl(*items: dict) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in items).encode()


def test_a_good_file_gives_its_endpoint_and_requests_blank_lines_skipped():
    url, requests = parse(jsonl(line(0)) + b"\n  \n" + jsonl(line(1)), max_lines=10)
    assert url == "/v1/chat/completions"
    assert [(r.line, r.custom_id) for r in requests] == [(1, "r0"), (4, "r1")]
    assert json.loads(requests[0].body)["model"] == "auto"


@pytest.mark.parametrize(("content", "at", "code"), [
    (jsonl(line(0)) + b"{oops\n", 2, "invalid_json"),
    (jsonl(line(0), line(0)), 2, "duplicate_custom_id"),
    (jsonl(line(0, method="PUT")), 1, "invalid_file"),
    (jsonl(line(0, url="/v1/responses")), 1, "invalid_url"),
    (jsonl(line(0), line(1, url="/v1/embeddings")), 2, "mixed_urls"),
    (jsonl({"custom_id": "x", "method": "POST", "url": "/v1/embeddings"}), 1, "invalid_file"),
    (jsonl(line(0, extra=1)), 1, "invalid_file"),
    (jsonl(line(0, custom_id="")), 1, "invalid_file"),
    (jsonl(line(0, body={"model": "auto", "messages": [], "stream": True})), 1,
     "invalid_file"),
    (jsonl(line(0), line(1), line(2)), 3, "too_many_requests"),
])
def test_a_bad_line_is_named(content, at, code):
    with pytest.raises(InvalidFile) as err:
        parse(content, max_lines=2)
    assert (err.value.line, err.value.code) == (at, code)
    assert str(err.value).startswith(f"line {at}: ")


def test_empty_and_non_utf8_files_are_refused():
    with pytest.raises(InvalidFile, match="no requests"):
        parse(b"\n\n", max_lines=5)
    with pytest.raises(InvalidFile, match="not UTF-8"):
        parse(b"\xff\xfe", max_lines=5)
