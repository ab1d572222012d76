"""PII redaction: emails, phone numbers and payment card numbers replaced by typed placeholders.

``Redactor(kinds, region=...)`` turns ``"mail ada@example.com or call (415) 555-0132"`` into
``"mail [EMAIL] or call [PHONE]"``. The traffic log applies it on its writer thread, to the
prompt, the answer, the tool calls and feedback comments (``traffic.redact``).

What counts (``tests/data/pii_cases.jsonl`` holds the labelled cases, hard negatives included):

- ``[EMAIL]``: ``local@domain.tld`` with dot-atoms in the local part (plus-addressing, ``%``),
  one or more domain labels and a TLD of two or more letters. ``user@localhost``, an ssh
  login ``deploy@buildbox`` and a decorator ``@dataclass`` are not emails; a git remote
  ``git@github.com:org/repo`` and ``x@self.weights`` (a matrix product in Python without
  spaces) are, as no TLD list tells ``.weights`` from ``.dev``.
- ``[CARD]``: 13-19 digits, contiguous or in groups of two or more digits separated by one
  space or dash, passing the Luhn check, and not part of a longer number (a decimal, more
  digit groups). One run of random digits in ten passes Luhn, so a 16-digit order number can
  be redacted; a number one digit off cannot.
- ``[PHONE]``: what Google's libphonenumber (the ``phonenumbers`` port) finds at ``VALID``
  leniency -- a number valid in its country, international with ``+`` or national in the
  ``region`` (default US) -- minus three kinds of match it makes in code and data: digits glued
  to a decimal point (``3.14159265358`` holds the valid ``14159265358``), an unformatted digit
  run that is not exactly a national number (``12345678901`` is ``+1 234-567-8901`` to the
  library, an order number to a reader; ``4155550132`` stays a phone) and a date followed by a
  number (``2024-01-15 10 people``: ``+1 202-401-1510``). Invalid numbers (``123-456-7890``,
  ``555-0132`` without an area code), dates, versions, IPs and prices are not phones. The
  library misses a number beside a stray one (``(415) 555-0132 7 days a week``), so such runs
  are retried without their end tokens; still missed: a number inside a longer space-separated
  run of numbers (more than eight), and in region GB a US number without its ``+1``.

Cost (benchmarks/redaction.py, one core): a text with fewer than six digits and no ``@`` --
most prompts -- costs about a microsecond (ASCII; ~10 µs for 2 KB of other text); a prompt
with a phone number ~60-150 µs. The phone
matcher is pure Python, ~20-200 µs per numeric candidate it examines; on a whole 2 KB code
snippet full of numbers it took 6.6 ms, too slow for a writer thread at ~2,000 rows/s with
prompts like that. So it reads only short windows around runs of six or more digits (the
shortest valid international number, e.g. ``+49 30 1234``), and texts with fewer digits skip
it; over 53,560 public prompts and answers the mean is 6 µs a text, p99 54 µs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

Kind = Literal["email", "phone", "card"]
KINDS: tuple[Kind, ...] = ("email", "phone", "card")
PLACEHOLDERS: dict[Kind, str] = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]"}

_EMAIL = re.compile(
    r"(?<![\w.%+-])"  # a token's start: the lookbehind fails fast inside a long word
    r"[\w%+-]+(?:\.[\w%+-]+)*"  # local part: dot-atoms
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+"  # domain labels
    r"[^\W\d_]{2,63}(?![\w-])"  # a TLD of letters
)
# Digit groups: two or more digits each, one space or dash between them. A match must not be
# glued to a word, a decimal point or more digits (checked in _cards: as lookarounds they would
# run at every position of every text, 3x the cost of this scan).
_CARD = re.compile(r"\d{2,19}(?:[ -]\d{2,19})*")
# Where a phone number may be: 6+ digits with at most four punctuation characters between them.
_PHONE_RUN = re.compile(r"\d(?:[\s().\-/\u2010-\u2015\u2212\uff0d]{0,4}\d)+")
_MIN_PHONE_DIGITS = 6
_DIGIT = re.compile(r"\d")
# Around a run: before it "(+" and one more character (is the number glued to a word?), after
# it an extension (" ext. 1234"); more context only feeds the matcher more candidates.
_CONTEXT_BEFORE, _CONTEXT_AFTER = 3, 16
_WINDOW, _OVERLAP = 256, 64
_DATE_START = re.compile(r"(?:19|20)\d\d([-./ ]?)[01]\d\1[0-3]\d(?!\d)")
_TOKEN = re.compile(r"\S*\d\S*")
_MAX_TOKENS = 8  # "+33 1 42 68 53 00" and two strays; longer runs are tables, not retried
_MIN_RETRY_DIGITS = 8  # what is left must look like most phone numbers, not like "3.14159"


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a string of digits (what every payment card number passes)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def known_region(region: str) -> bool:
    """Whether libphonenumber knows the two-letter region code (``US``, ``GB``, ``DE``...)."""
    import phonenumbers  # only a config that redacts pays for the import

    return region in phonenumbers.SUPPORTED_REGIONS


class Redactor:
    """Replaces the chosen kinds of PII in texts with ``[EMAIL]``, ``[PHONE]``, ``[CARD]``.

    Thread-safe (no state after ``__init__``). ``region``: where a phone number written
    without ``+`` and a country code is assumed to be."""

    def __init__(self, kinds: Iterable[Kind] = KINDS, *, region: str = "US"):
        wanted = set(kinds)
        self.kinds = tuple(k for k in KINDS if k in wanted)
        self.region = region
        if "phone" in self.kinds and not known_region(region):
            raise ValueError(f"unknown phone region {region!r}")
        # (finder, placeholder, the fewest digits a match holds): emails first (an address
        # may hold digits), then cards (a card's digits may hold a valid phone number); the
        # placeholders hold neither digits nor '@'.
        stages: dict[Kind, tuple[Callable[[str], list[tuple[int, int]]], str, int]] = {
            "email": (_emails, PLACEHOLDERS["email"], 0),
            "card": (_cards, PLACEHOLDERS["card"], 13),
            "phone": (self._phones, PLACEHOLDERS["phone"], _MIN_PHONE_DIGITS),
        }
        self._stages = [stages[k] for k in ("email", "card", "phone") if k in wanted]

    def redact(self, text: str) -> str:
        """The text with every match replaced by its kind's placeholder."""
        digits = _digit_count(text)
        for find, placeholder, min_digits in self._stages:
            if digits < min_digits:
                continue
            spans = find(text)
            if spans:
                text = _replace(text, spans, placeholder)
        return text

    def redact_json(self, text: str) -> str:
        """A JSON document (tool calls) with the PII in its string and integer values
        replaced; a string value that is itself a JSON document (a call's ``arguments``) is
        redacted as one, so both stay valid JSON. Not JSON: redacted as text. Unchanged
        documents come back as they were, byte for byte."""
        try:
            doc = json.loads(text)
        except ValueError:
            return self.redact(text)
        out = self._walk(doc)
        return text if out == doc else json.dumps(out, ensure_ascii=False)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip()[:1] in ("{", "["):
                return self.redact_json(value)
            return self.redact(value)
        if isinstance(value, int) and not isinstance(value, bool):
            # {"phone": 4155550132}: a number is PII as much as the same digits in a string.
            s = str(value)
            out = self.redact(s)
            return value if out == s else out
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        if isinstance(value, dict):
            return {k: self._walk(v) for k, v in value.items()}
        return value

    def _phones(self, text: str) -> list[tuple[int, int]]:
        runs = [m for m in _PHONE_RUN.finditer(text)
                if sum(ch.isdigit() for ch in m.group()) >= _MIN_PHONE_DIGITS]
        spans: list[tuple[int, int]] = []
        for lo, hi in _windows(runs):
            spans += self._matches(text, lo, hi)
        for run in runs:
            if not any(start < run.end() and end > run.start() for start, end in spans):
                spans += self._trimmed(text, run)
        return spans

    def _trimmed(self, text: str, run: re.Match[str]) -> list[tuple[int, int]]:
        """The matcher misses a number beside a stray one in the same run of digits: "(415)
        555-0132 7 days a week", "Room 12 415 555 0132". Retry such a run without one or two
        of its space-separated tokens of digits at either end (fewest dropped first)."""
        tokens = [m.span() for m in _TOKEN.finditer(run.group())]
        k = len(tokens)
        if not 2 <= k <= _MAX_TOKENS:
            return []
        base = run.start()
        for dropped in range(1, 3):
            for front in range(dropped + 1):
                back = dropped - front
                if front + back >= k:
                    continue
                a, b = base + tokens[front][0], base + tokens[k - 1 - back][1]
                if sum(ch.isdigit() for ch in text[a:b]) < _MIN_RETRY_DIGITS:
                    continue
                # The window ends where a token was cut, and keeps the context otherwise.
                lo = a if front else max(0, run.start() - _CONTEXT_BEFORE)
                hi = b if back else run.end() + _CONTEXT_AFTER
                found = self._matches(text, lo, hi)
                if found:
                    return found
        return []

    def _matches(self, text: str, lo: int, hi: int) -> list[tuple[int, int]]:
        """The numbers libphonenumber finds in ``text[lo:hi]``, minus three kinds of match."""
        import phonenumbers

        spans = []
        for m in phonenumbers.PhoneNumberMatcher(text[lo:hi], self.region,
                                                 leniency=phonenumbers.Leniency.VALID):
            start, end = lo + m.start, lo + m.end
            # 3.14159265358 holds a valid number, 14159265358; 10.0.1234567 another.
            if (_continues_number(text[max(0, start - 2):start][::-1], ".,")
                    or _continues_number(text[end:end + 2], ".,")):
                continue
            raw = m.raw_string
            if raw.isdigit() and len(raw) != len(str(m.number.national_number)):
                continue  # an unformatted run longer than a national number: an id
            if _DATE_START.match(raw):
                continue  # "2024-01-15 10 people" is +1 202-401-1510 to the library
            spans.append((start, end))
        return spans


def _emails(text: str) -> list[tuple[int, int]]:
    if "@" not in text:
        return []
    return [m.span() for m in _EMAIL.finditer(text)]


def _cards(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _CARD.finditer(text):
        start, end = m.span()
        before, after = text[max(0, start - 2):start][::-1], text[end:end + 2]
        if (_word(before[:1]) or _word(after[:1])
                or _continues_number(before, ".,- ") or _continues_number(after, ".,- ")):
            continue
        digits = m.group().replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            spans.append(m.span())
    return spans


def _digit_count(text: str) -> int:
    """How many digits the text holds: for ASCII, ten C-level counts (~1 µs for 2 KB, a tenth
    of a regex scan); other text may hold full-width or other Unicode digits."""
    if text.isascii():
        return sum(text.count(d) for d in "0123456789")
    return len(_DIGIT.findall(text))


def _word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _continues_number(side: str, separators: str) -> bool:
    """The two characters beside a match (nearest first) continue a number: ``.5``, `` 7``."""
    return len(side) == 2 and side[0] in separators and side[1].isdigit()


def _windows(runs: list[re.Match[str]]) -> list[tuple[int, int]]:
    """Windows of context around the runs of digits, merged while short. The matcher copies
    the rest of its text for every candidate, so no window grows past ``_WINDOW`` characters:
    a longer run (a table of numbers) is cut into pieces that overlap by more than any phone
    number is long."""
    windows: list[tuple[int, int]] = []
    for m in runs:
        lo, hi = max(0, m.start() - _CONTEXT_BEFORE), m.end() + _CONTEXT_AFTER
        if windows and lo <= windows[-1][1] and hi - windows[-1][0] <= _WINDOW:
            windows[-1] = (windows[-1][0], hi)
            continue
        while hi - lo > _WINDOW:
            windows.append((lo, lo + _WINDOW))
            lo += _WINDOW - _OVERLAP
        windows.append((lo, hi))
    return windows


def _replace(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
    """``text`` with each span replaced; overlapping spans (two windows found the same number,
    or parts of it) are replaced by their union."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    parts, last = [], 0
    for start, end in merged:
        parts += (text[last:start], placeholder)
        last = end
    parts.append(text[last:])
    return "".join(parts)
