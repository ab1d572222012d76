"""Numeric answers (GSM8K style): the final number of an answer, compared with a tolerance.

The final number is read, in this order, from the GSM8K marker (``"#### 18"``), a LaTeX
``\\boxed{18}``, an answer phrase (``"The answer is $1,234.50"``, ``"Final answer: 5/2"``),
and otherwise the last number in the text (which covers ``"... = 18"``). Numbers may carry a
sign, a currency sign, thousands separators, a fraction bar (``5/2``, ``\\frac{5}{2}``) or a
percent sign; ``25%`` matches a reference of 25 or 0.25, since either is how a question asking
for a percentage can be labelled.
"""

from __future__ import annotations

import math
import re

import msgspec

from eval.scoring._score import Score

_NUMBER = (r"(?P<num>(?<![\w.])(?P<sign>[-−])?[$€£]?(?P<sign2>[-−])?"
           r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?P<frac>\.\d+)?"
           r"(?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?(?P<pct>\s*%)?)")
_NUMBER_RE = re.compile(_NUMBER)
_MARKER = re.compile(r"####\s*" + _NUMBER)
_BOXED = re.compile(r"\\boxed\{\s*" + _NUMBER + r"\s*\}")
_PHRASE = re.compile(r"(?i:answer)\s*(?:(?i:is|would\s+be|will\s+be|should\s+be)\s*[:=]?|[:=])\s*"
                     r"(?i:approximately\s+|about\s+|roughly\s+)?" + _NUMBER)
_LATEX_FRAC = re.compile(r"\\d?frac\{([^{}]*)\}\{([^{}]*)\}")
_LATEX_ESCAPE = re.compile(r"\\([$%,])")
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations: "$<<9*2=18>>18"


class Number(msgspec.Struct, frozen=True):
    """A number read from text: its value, the text it was read from, and whether it was a
    percentage."""

    value: float
    text: str
    percent: bool = False

    def candidates(self) -> tuple[float, ...]:
        """The values it may stand for: a percentage is both ``25`` and ``0.25``."""
        return (self.value, self.value / 100) if self.percent else (self.value,)


def parse_number(text: str) -> Number | None:
    """The number a whole string spells (``"$1,234.50"``, ``"-5/2"``, ``"25%"``), or None."""
    text = _clean(text).strip()
    m = _NUMBER_RE.fullmatch(text)
    return _number(m) if m else None


def extract_number(answer: str) -> tuple[Number | None, str]:
    """The answer's final number and where it was found (``"#### marker"``, ``"last number"``)."""
    text = _clean(answer)
    for pattern, how in ((_MARKER, "#### marker"), (_BOXED, "boxed"),
                         (_PHRASE, "answer phrase")):
        # The last occurrence: chains of thought restate and correct themselves before
        # concluding, and each form is normally written once, at the end.
        found = [n for m in pattern.finditer(text) if (n := _number(m)) is not None]
        if found:
            return found[-1], how
    found = [n for m in _NUMBER_RE.finditer(text) if (n := _number(m)) is not None]
    return (found[-1], "last number") if found else (None, "no number found")


def numeric(answer: str, reference: str, *, rel_tol: float = 1e-6,
            abs_tol: float = 1e-9) -> Score:
    """1.0 when the answer's final number equals the reference number within the tolerance."""
    ref = parse_number(reference)
    if ref is None:
        raise ValueError(f"a numeric reference is a number, got {reference!r}")
    got, how = extract_number(answer)
    if got is None:
        return Score(0.0, f"{how}; reference {reference.strip()}")
    ok = any(math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
             for a in got.candidates() for b in ref.candidates())
    return Score(float(ok), f"extracted {got.text} ({how}), reference {reference.strip()}")


def _clean(text: str) -> str:
    text = _CALCULATOR.sub("", text)
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    return _LATEX_ESCAPE.sub(r"\1", text)


def _number(m: re.Match[str]) -> Number | None:
    whole, frac = m.group("int"), m.group("frac")
    if whole is None and frac is None:
        return None  # the pattern matched only a sign or a currency sign
    value = float((whole or "0").replace(",", "") + (frac or ""))
    if m.group("den") is not None:
        den = float(m.group("den"))
        if den == 0:
            return None
        value /= den
    if m.group("sign") or m.group("sign2"):
        value = -value
    text = m.group("num").strip()
    return Number(value, text, percent=m.group("pct") is not None)
