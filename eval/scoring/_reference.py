"""A pack row's reference, and scoring an answer against it by the reference's kind."""

from __future__ import annotations

import asyncio
import re
from typing import Literal

import msgspec

from eval.scoring._choice import choice
from eval.scoring._code import Limits, acode, code
from eval.scoring._match import match
from eval.scoring._numeric import numeric, parse_number
from eval.scoring._score import Score

Kind = Literal["choice", "numeric", "match", "code"]


class Reference(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a correct answer looks like.

    * ``choice``: ``answer`` is the letter (or letters) and ``choices`` maps letters to option
      texts (optional; lets an answer that restates an option count);
    * ``numeric``: ``answer`` is the number, as a string;
    * ``match``: ``answer`` is the accepted string or strings;
    * ``code``: ``tests`` are ``assert`` statements, ``setup`` runs before the answer's code.
    """

    kind: Kind
    answer: str | list[str] | None = None
    tests: list[str] = []
    setup: str = ""
    choices: dict[str, str] = {}

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ValueError(f"{self.kind} reference: {problem}")


def score_reference(answer_text: str, ref: Reference, *, limits: Limits | None = None) -> Score:
    """Score an answer against its reference (code runs in the sandbox; from async code use
    :func:`ascore_reference`)."""
    if ref.kind == "code":
        return code(answer_text, ref.tests, setup=ref.setup, limits=limits)
    return _score_pure(answer_text, ref)


async def ascore_reference(answer_text: str, ref: Reference, *, limits: Limits | None = None,
                           semaphore: asyncio.Semaphore | None = None) -> Score:
    """:func:`score_reference` for asyncio programs: code answers run as asyncio subprocesses,
    at most ``semaphore``'s value at once."""
    if ref.kind == "code":
        return await acode(answer_text, ref.tests, setup=ref.setup, limits=limits,
                           semaphore=semaphore)
    return _score_pure(answer_text, ref)


def _score_pure(answer_text: str, ref: Reference) -> Score:
    assert ref.answer is not None  # checked when the reference was built
    if ref.kind == "choice":
        return choice(answer_text, ref.answer, choices=ref.choices or None)
    if ref.kind == "numeric":
        assert isinstance(ref.answer, str)
        return numeric(answer_text, ref.answer)
    return match(answer_text, ref.answer)


def _problem(ref: Reference) -> str | None:
    """What makes a reference unusable, or None."""
    answers = [ref.answer] if isinstance(ref.answer, str) else ref.answer
    if ref.kind == "code":
        return None if ref.tests else "needs at least one test"
    if not answers:
        return "needs an answer"
    if ref.kind == "numeric" and (not isinstance(ref.answer, str)
                                  or parse_number(ref.answer) is None):
        return f"answer must be one number, got {ref.answer!r}"
    if ref.kind == "choice":
        bad = [k for k in [*answers, *ref.choices] if not re.fullmatch(r"[A-Z]", k)]
        if bad:
            return f"letters are A-Z, got {bad[0]!r}"
        if ref.choices and not set(answers) <= set(ref.choices):
            return f"answer {ref.answer!r} is not among the choices {''.join(ref.choices)}"
    return None
