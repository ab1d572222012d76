"""Recorded answers: RouterBench's real model answers, looked up by prompt."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io

from router.config import SimulatedSettings
from router.providers import ChatRequest, Message
from router.providers.recorded import RecordedAnswers
from router.providers.simulated import SimulatedProvider

HEADER = ["", "sample_id", "prompt", "eval_name", "m-a", "m-b", "m-a|model_response",
          "m-b|model_response"]


def write_csv(path, rows):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HEADER)
    w.writerows(rows)
    path.write_bytes(gzip.compress(buf.getvalue().encode()))


def test_answers_are_keyed_by_the_last_turn_with_whitespace_collapsed(tmp_path):
    write_csv(tmp_path / "x_test.csv.gz", [
        ["0", "s0", "['Is 7 prime?']", "t", "1", "0", "['Yes, 7 is prime.']", "['No.']"],
        ["1", "s1", "['Hello', 'Name  a\\ncolour.']", "t", "1", "1", "['Red.']", "['Blue.']"],
    ])
    r = RecordedAnswers.load(tmp_path)
    assert len(r) == 2
    assert r.answer("m-a", "Is 7 prime?") == "Yes, 7 is prime."
    assert r.answer("m-b", "  Is 7   prime? ") == "No."
    assert r.answer("m-b", "Name a colour.") == "Blue."
    assert r.answer("m-c", "Is 7 prime?") is None
    assert r.answer(None, "Is 7 prime?") is None
    assert r.answer("m-a", "Is 8 prime?") is None


def test_the_shipped_data_has_real_answers():
    r = RecordedAnswers.load()
    answer = r.answer("gpt-4-1106-preview", "Write a python function to identify non-prime "
                      "numbers.")
    assert answer and "def " in answer


def test_simulated_provider_prefers_the_recorded_answer():
    def recorded(model: str, prompt: str) -> str | None:
        return "Canberra, of course." if (model, prompt) == ("big", "Capital?") else None

    p = SimulatedProvider(SimulatedSettings(), lambda t: len(t.split()), recorded)

    def ask(model: str, prompt: str, **kw) -> str:
        req = ChatRequest(model=model, messages=[Message(role="user", content=prompt)], **kw)
        return asyncio.run(p.complete(req)).choices[0].message.content

    assert ask("big", "Capital?") == "Canberra, of course."
    assert ask("small", "Capital?").startswith("[simulated small]")
    assert ask("big", "Capital?", max_tokens=1) == "Canberra,"


def test_a_deployment_answers_as_its_answers_as_model_not_the_requested_one():
    # The closed-loop scenario: the router borrows one model's predictions (stands_in_for)
    # while the deployment answers as another (simulated.answers_as).
    def recorded(model: str, prompt: str) -> str | None:
        return {"yi": "B", "big": "A"}.get(model)

    p = SimulatedProvider(SimulatedSettings(answers_as="yi"), lambda t: len(t.split()), recorded)
    req = ChatRequest(model="big", messages=[Message(role="user", content="Which?")])
    assert asyncio.run(p.complete(req)).choices[0].message.content == "B"
