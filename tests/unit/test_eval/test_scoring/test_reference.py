import asyncio

import msgspec
import pytest

from eval.scoring import Limits, Reference, ascore_reference, score_reference

FAST = Limits(timeout_s=2.0, memory_mb=256)


def decode(raw: str) -> Reference:
    return msgspec.json.decode(raw, type=Reference)


def test_pack_rows_decode_with_defaults():
    ref = decode('{"kind": "choice", "answer": "B", "choices": {"A": "home", "B": "house"}}')
    assert ref == Reference("choice", "B", choices={"A": "home", "B": "house"})
    assert (ref.tests, ref.setup) == ([], "")
    assert decode('{"kind": "match", "answer": ["NYC", "New York"]}').answer == ["NYC",
                                                                                 "New York"]


@pytest.mark.parametrize(("raw", "problem"), [
    ('{"kind": "numeric", "answer": "eighteen"}', "answer must be one number"),
    ('{"kind": "numeric", "answer": ["1", "2"]}', "answer must be one number"),
    ('{"kind": "choice", "answer": "home"}', "letters are A-Z"),
    ('{"kind": "choice", "answer": "C", "choices": {"A": "x", "B": "y"}}', "not among"),
    ('{"kind": "match"}', "needs an answer"),
    ('{"kind": "match", "answer": []}', "needs an answer"),
    ('{"kind": "code", "answer": null}', "needs at least one test"),
    ('{"kind": "regex", "answer": "x"}', "Invalid enum value 'regex'"),
    ('{"kind": "match", "answer": "x", "extra": 1}', "unknown field"),
])
def test_unusable_references_are_refused_when_decoded(raw, problem):
    with pytest.raises(msgspec.ValidationError, match=problem):
        decode(raw)


def test_building_a_bad_reference_in_code_raises_value_error():
    with pytest.raises(ValueError, match="numeric reference"):
        Reference("numeric", "x")


@pytest.mark.parametrize(("ref", "answer", "value", "detail"), [
    (Reference("choice", "B", choices={"A": "home", "B": "house"}), "house", 1.0,
     "extracted B (option text), reference B"),
    (Reference("choice", "A"), "The answer is B.", 0.0, "extracted B (answer phrase), reference A"),
    (Reference("numeric", "18"), "9 * $2 = $18\n#### 18", 1.0,
     "extracted 18 (#### marker), reference 18"),
    (Reference("match", ["Canberra"]), "canberra.", 1.0, "normalised match with 'Canberra'"),
])
def test_score_reference_dispatches_by_kind(ref, answer, value, detail):
    expected = score_reference(answer, ref)
    assert (expected.value, expected.detail) == (value, detail)
    assert asyncio.run(ascore_reference(answer, ref)) == expected


def test_code_references_run_sync_and_async():
    ref = Reference("code", tests=["assert square(3) == 9"], setup="import math")
    answer = "```python\ndef square(x):\n    return int(math.pow(x, 2))\n```"
    assert score_reference(answer, ref, limits=FAST).detail == "1/1 tests passed"

    async def main():
        sem = asyncio.Semaphore(2)
        return await asyncio.gather(*(ascore_reference(a, ref, limits=FAST, semaphore=sem)
                                      for a in (answer, "def square(x):\n    return x * 2")))

    good, bad = asyncio.run(main())
    assert (good.value, bad.value) == (1.0, 0.0)
