"""Answer scorers: how good one model answer is, in [0, 1], and why.

Three sources of truth:

* a reference (a pack row's :class:`Reference`): ``choice``, ``numeric``, ``match``, ``code``
  are pure functions of (answer text, reference) returning a :class:`Score`;
  :func:`score_reference` / :func:`ascore_reference` dispatch on the reference's kind;
* a judge model asked through the gateway: ``judge`` (absolute 1-10 rating) and ``pairwise``
  (against a reference model's answer, both orders), returning a :class:`JudgeScore` that
  carries the judging's cost;
* users: ``feedback`` averages the ratings posted to ``/v1/feedback``.

:data:`SCORERS` names them all. Implementation modules are private; this package's names are
the interface (``contextforge eval score`` and the prompt pack build on them). Only ``eval/``
imports this package: the serving path never scores.

Exceptions: ``ValueError`` for an unusable reference; :class:`JudgeError` when a judge cannot
be asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

from eval.scoring._choice import choice, extract_choice, prompt_options
from eval.scoring._code import Limits, acode, code, extract_code
from eval.scoring._feedback import feedback
from eval.scoring._judge import (
    Judge,
    JudgeError,
    JudgeReply,
    JudgeScore,
    judge_absolute,
    judge_pairwise,
    parse_rating,
    parse_verdict,
)
from eval.scoring._match import match, normalize
from eval.scoring._numeric import Number, extract_number, numeric, parse_number
from eval.scoring._reference import Kind, Reference, ascore_reference, score_reference
from eval.scoring._score import Score


class Scorer(msgspec.Struct, frozen=True):
    """A registry entry: what the scorer needs (a reference, a judge, users' ratings), what it
    does, and its function (a coroutine function when ``is_async``)."""

    name: str
    needs: Literal["reference", "judge", "ratings"]
    description: str
    fn: Callable[..., Any]
    is_async: bool = False


SCORERS: dict[str, Scorer] = {s.name: s for s in (
    Scorer("choice", "reference", "multiple-choice letter (or restated option text) equals the "
           "reference letter", choice),
    Scorer("numeric", "reference", "final number of the answer equals the reference within a "
           "tolerance", numeric),
    Scorer("match", "reference", "exact or SQuAD-normalised match with a reference string",
           match),
    Scorer("code", "reference", "extracted Python passes every test in a sandboxed subprocess",
           acode, is_async=True),
    Scorer("judge", "judge", "judge model's 1-10 rating through the gateway, (rating-1)/9",
           judge_absolute, is_async=True),
    Scorer("pairwise", "judge", "judge model's verdict against a reference answer, asked in "
           "both orders: win 1, loss 0, tie or inconsistent 0.5", judge_pairwise, is_async=True),
    Scorer("feedback", "ratings", "mean of users' /v1/feedback ratings (already in [0, 1])",
           feedback),
)}

__all__ = [
    "SCORERS",
    "Judge",
    "JudgeError",
    "JudgeReply",
    "JudgeScore",
    "Kind",
    "Limits",
    "Number",
    "Reference",
    "Score",
    "Scorer",
    "acode",
    "ascore_reference",
    "choice",
    "code",
    "extract_choice",
    "extract_code",
    "extract_number",
    "feedback",
    "judge_absolute",
    "judge_pairwise",
    "match",
    "normalize",
    "numeric",
    "parse_number",
    "parse_rating",
    "parse_verdict",
    "prompt_options",
    "score_reference",
]
