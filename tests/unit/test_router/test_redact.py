"""PII redaction: the labelled cases of tests/data/pii_cases.jsonl, JSON documents, long texts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.redact import KINDS, Redactor, luhn_ok

CASES = [json.loads(line) for line in
         (Path(__file__).resolve().parents[2] / "data" / "pii_cases.jsonl").read_text()
         .splitlines() if line.strip()]
REDACTORS: dict[str, Redactor] = {}


def redactor(region: str = "US") -> Redactor:
    if region not in REDACTORS:
        REDACTORS[region] = Redactor(region=region)
    return REDACTORS[region]


def test_the_case_file_is_a_real_test_set():
    changed = sum(c["text"] != c["expected"] for c in CASES)
    assert len(CASES) >= 80 and changed >= 30 and len(CASES) - changed >= 40
    for kind in ("[EMAIL]", "[PHONE]", "[CARD]"):
        assert sum(kind in c["expected"] for c in CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[f"{i}:{c['text'][:30]}" for i, c in
                                             enumerate(CASES)])
def test_every_labelled_case(case):
    assert redactor(case.get("region", "US")).redact(case["text"]) == case["expected"]


def test_only_the_chosen_kinds_are_redacted():
    text = "ada@example.com, (415) 555-0132, 4111 1111 1111 1111"
    assert Redactor(["email"]).redact(text) == "[EMAIL], (415) 555-0132, 4111 1111 1111 1111"
    assert Redactor(["phone"]).redact(text) == "ada@example.com, [PHONE], 4111 1111 1111 1111"
    assert Redactor(["card"]).redact(text) == "ada@example.com, (415) 555-0132, [CARD]"
    assert Redactor([]).redact(text) == text
    assert Redactor(["card", "email", "phone"]).kinds == KINDS


def test_an_unknown_region_is_refused():
    with pytest.raises(ValueError, match="unknown phone region 'XX'"):
        Redactor(region="XX")
    Redactor(["email"], region="XX")  # no phones, no region read


def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("378282246310005") and luhn_ok("0")
    assert not luhn_ok("4111111111111112") and not luhn_ok("1234567812345678")


def test_tool_calls_stay_valid_json_with_their_arguments_redacted():
    args = json.dumps({"to": "ada@example.com", "body": "Hi,\nada@example.com\tcall 4155550132",
                       "card": 4111111111111111, "phone": 4155550132, "count": 3, "ok": True})
    calls = json.dumps([{"id": "call_1", "name": "send_mail", "arguments": args}],
                       ensure_ascii=False)
    out = json.loads(redactor().redact_json(calls))
    assert out[0]["id"] == "call_1" and out[0]["name"] == "send_mail"
    assert json.loads(out[0]["arguments"]) == {
        "to": "[EMAIL]", "body": "Hi,\n[EMAIL]\tcall [PHONE]", "card": "[CARD]",
        "phone": "[PHONE]", "count": 3, "ok": True}


def test_json_without_pii_comes_back_byte_for_byte_and_non_json_as_text():
    calls = '[{"id":"c","name":"f","arguments":"{\\"city\\":  \\"Paris\\"}"}]'
    assert redactor().redact_json(calls) == calls
    assert redactor().redact_json('{"to": "ada@exam') == '{"to": "ada@exam'  # cut short
    assert redactor().redact_json('[call (415) 555-0132') == "[call [PHONE]"


def test_a_phone_inside_a_long_run_of_numbers_is_found():
    # One number a line: one run of digits and whitespace, 12 KB, cut into windows.
    table = "\n".join(str(n) for n in range(10_000, 12_000))
    half = len(table) // 2
    for text in (f"{table}\n+44 20 7946 0958", f"+44 20 7946 0958\n{table}",
                 f"{table[:half]}\n(415) 555-0132\n{table[half:]}"):
        out = redactor().redact(text)
        assert out.count("[PHONE]") == 1 and "7946" not in out and "555-0132" not in out
        assert len(out) > len(table)


def test_repeated_and_adjacent_numbers_each_get_one_placeholder():
    text = "a (415) 555-0132, b (415) 555-0133; c +1 415 555 0134\n" * 20
    out = redactor().redact(text)
    assert out == "a [PHONE], b [PHONE]; c [PHONE]\n" * 20
