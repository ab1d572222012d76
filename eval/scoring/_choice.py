"""Multiple-choice answers: which option letter a chat model's answer picks.

Tuned on the RouterBench ARC-Challenge and Winogrande *train* answers of 11 models
(``benchmarks/scorer_agreement.py`` measures the agreement with their recorded 0/1 outcomes).
The checks run from the most to the least explicit reading, and the first that applies decides:

1. the whole answer is a letter: ``"C"``, ``"C)"``, ``"(B)"``, ``"**A**"``, ``"B\\n"``;
2. an answer phrase names it: ``"The answer is B."``, ``"Answer: D"``, ``"correct option is (C)"``;
3. two letters offered as alternatives (``"A or B"``, ``"B/C"``) -> refused as ambiguous;
4. the answer starts with it: ``"A) The refrigerator door is smooth."``, ``"D (eyeglasses)"``;
5. the answer restates one option's text (needs the prompt's options): ``"a chart"``, ``"Logan"``;
6. exactly one letter appears in option form elsewhere: ``"... so (B)."``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from eval.scoring._match import normalize
from eval.scoring._score import Score

_MARKUP = re.compile(r"[*_`]+")
_BARE = re.compile(r"[(\[]?([A-Z])[)\]]?[.:]?")
_WORDS = r"(?i:option|choice|letter)"
_PICK = (r"(?:" + _WORDS + r"\s+)?[(\[]?([A-Z])(?![\w'’])[)\]]?"
         r"(?:\s*(?i:or|and|/|,|&)\s*(?:" + _WORDS + r"\s+)?[(\[]?([A-Z])(?![\w'’]))?")
_PHRASE = re.compile(
    r"(?:\b(?i:(?:final|correct|right|best)\s+)?(?i:answer|option|choice)"
    r"\s*(?:(?i:is|would\s+be|should\s+be|will\s+be)\s*[:=\-–—]?|[:=\-–—])\s*(?i:the\s+)?"
    r"|\b(?i:I(?:\s+would|\s+will|['’]d|['’]ll)?\s+(?:choose|pick|select|go\s+with|think|"
    r"believe)(?:\s+it['’]s|\s+it\s+is)?)\s+)"
    + _PICK)
_ALTERNATIVES = re.compile(r"(?<![\w'’])[(\[]?([A-Z])[)\]]?\s*(?i:or|and|/|&)\s*(?:"
                           + _WORDS + r"\s+)?[(\[]?([A-Z])(?![\w'’])")
# A letter opening the answer, then a delimiter, a line break or a parenthesis: "D (because".
_LEADING = re.compile(r"(?:" + _WORDS + r"\s+)?[(\[]?([A-Z])(?:[)\]]|[.:,]|\s*[-–—]\s|\s*\n|\s+\()")
_LEADING_WORD = re.compile(r"([A-Z])\s+\S")
_OPTION_FORM = re.compile(r"(?:(?<![\w'’])\(([A-Z])\)|(?<![\w'’(])([A-Z])\)|" + _WORDS
                          + r"\s+([A-Z])(?![\w'’]))")
# Capital letters that are English words when a word follows: "A chart", "I think".
_WORD_LETTERS = frozenset("AI")
_PROMPT_OPTION = re.compile(r"^[(\[]?([A-Z])[).:\]]\s+(.+?)\s*$", re.M)


def extract_choice(answer: str, letters: str = "ABCD",
                   choices: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """The letter the answer picks (or None) and how it was read.

    ``letters`` are the allowed option letters; ``choices`` maps them to the option texts, so an
    answer that restates an option instead of naming its letter still counts. A bare letter
    outside ``letters`` is returned as read (the caller decides); two letters offered as
    alternatives give ``(None, "ambiguous: ...")``.
    """
    text = _MARKUP.sub("", answer).strip().strip("\"'“”").strip()
    if not text:
        return None, "empty answer"
    bare = _BARE.fullmatch(text)
    if bare:
        return bare.group(1), "bare letter"
    found = _phrase(text, letters)
    if found is not None:
        return found
    pair = _alternatives(text, letters)
    if pair:
        return None, f"ambiguous: names {pair[0]} and {pair[1]}"
    lead = _LEADING.match(text)
    if lead and lead.group(1) in letters:
        return lead.group(1), "leading letter"
    lead = _LEADING_WORD.match(text)
    if lead and lead.group(1) in letters and lead.group(1) not in _WORD_LETTERS:
        return lead.group(1), "leading letter"
    if choices:
        by_text = _option_text(text, choices)
        if by_text is not None:
            return by_text
    seen = sorted({a or b or c for a, b, c in _OPTION_FORM.findall(text)} & set(letters))
    if len(seen) == 1:
        return seen[0], "letter in option form"
    if len(seen) > 1:
        return None, f"ambiguous: names {' and '.join(seen)}"
    return None, "no letter found"


def choice(answer: str, reference: str | Sequence[str], *,
           choices: Mapping[str, str] | None = None, letters: str | None = None) -> Score:
    """Score a multiple-choice answer against the reference letter(s): 1.0 when the extracted
    letter is one of them.

    The allowed letters are ``letters`` if given, else the keys of ``choices``, else A through
    the later of D and the reference (A–D for a reference of B, A–F for F).
    """
    refs = [reference] if isinstance(reference, str) else list(reference)
    refs = [r.strip().upper() for r in refs]
    if not refs or not all(re.fullmatch(r"[A-Z]", r) for r in refs):
        raise ValueError(f"a choice reference is a letter A-Z, got {reference!r}")
    if letters is None:
        letters = "".join(sorted(choices)) if choices else _span(max([*refs, "D"]))
    letter, how = extract_choice(answer, letters, choices)
    shown = "/".join(refs)
    if letter is None:
        return Score(0.0, f"{how}; reference {shown}")
    if letter not in letters:
        return Score(0.0, f"extracted {letter} ({how}), not one of {letters}; reference {shown}")
    return Score(float(letter in refs), f"extracted {letter} ({how}), reference {shown}")


def prompt_options(prompt: str) -> dict[str, str]:
    """The options of the prompt's last question, read from lines like ``"B) house"``.

    Few-shot prompts repeat the option block per example; the last run of lines lettered A, B,
    C, ... is the question being asked.
    """
    runs: list[dict[str, str]] = []
    for m in _PROMPT_OPTION.finditer(prompt):
        letter, text = m.group(1), m.group(2)
        if letter == "A" or not runs:
            runs.append({})
        expected = chr(ord("A") + len(runs[-1]))
        if letter == expected:
            runs[-1][letter] = text
    return runs[-1] if runs and len(runs[-1]) >= 2 else {}


def _span(last: str) -> str:
    return "".join(chr(c) for c in range(ord("A"), ord(last) + 1))


def _phrase(text: str, letters: str) -> tuple[str | None, str] | None:
    """The first answer phrase that names an allowed letter: the first, as harnesses do, since
    a model continuing a few-shot prompt writes its own answer before inventing new questions."""
    for m in _PHRASE.finditer(text):
        first, second = m.group(1), m.group(2)
        if first not in letters:
            continue
        if second and second in letters and second != first:
            return None, f"ambiguous: names {first} and {second}"
        return first, "answer phrase"
    return None


def _alternatives(text: str, letters: str) -> tuple[str, str] | None:
    for m in _ALTERNATIVES.finditer(text):
        a, b = m.group(1), m.group(2)
        if a != b and a in letters and b in letters:
            return a, b
    return None


def _option_text(text: str, choices: Mapping[str, str]) -> tuple[str | None, str] | None:
    """The option whose text the answer equals, or the only one whose text it contains (an
    answer restating the question names several)."""
    said = normalize(text)
    options = {k: normalize(v) for k, v in choices.items() if normalize(v)}
    equal = [k for k, v in options.items() if said == v]
    if len(equal) == 1:
        return equal[0], "option text"
    inside = [k for k, v in options.items()
              if re.search(rf"(?<!\w){re.escape(v)}(?!\w)", said)]
    # "iron oxide" also contains option "iron": the longer text is the one named
    inside = sorted(k for k in inside
                    if not any(o != k and options[k] in options[o] for o in inside))
    if len(inside) == 1:
        return inside[0], "contains option text"
    if len(inside) > 1:
        return None, f"ambiguous: contains the texts of {' and '.join(inside)}"
    return None
