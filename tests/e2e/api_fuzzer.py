"""Fuzz the gateway's OpenAPI document with schemathesis; print a JSON summary.

    python tests/e2e/api_fuzzer.py BASE_URL KEY EXAMPLES

Run in its own process by ``test_api_fuzz``: generating from recursive schemas leaves this
Python's AST recursion bookkeeping broken in the generating thread (``SystemError: AST
constructor recursion depth mismatch`` when pytest or hypothesis later parse source), so the
fuzzing happens where nothing parses source afterwards.
"""

from __future__ import annotations

import json
import sys

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings


def fuzz(op, base_url: str, key: str, examples: int, failures: list) -> int:
    """Up to ``examples`` generated requests to one operation; 5xx answers are collected."""
    sent = 0

    @given(case=op.as_strategy())
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    def call(case):
        nonlocal sent
        response = case.call(base_url=base_url, headers={"authorization": f"Bearer {key}"},
                             timeout=30)
        sent += 1
        if response.status_code >= 500:
            failures.append([op.label, repr(case.body)[:300], response.status_code,
                             response.text[:300]])

    call()
    return sent


def main(base_url: str, key: str, examples: int) -> None:
    api = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    failures: list = []
    sent = {op.label: fuzz(op, base_url, key, examples, failures) for op in operations}
    print(json.dumps({"sent": sent, "failures": failures}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
