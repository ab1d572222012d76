"""Exact and normalised string match (SQuAD's normalisation).

Normalisation follows the SQuAD v1.1 evaluation script: lower case, drop punctuation, drop the
articles *a*, *an*, *the*, collapse whitespace.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from eval.scoring._score import Score

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """SQuAD-style normal form: ``"The  Eiffel-Tower!"`` -> ``"eiffeltower"``."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def match(answer: str, references: str | Sequence[str]) -> Score:
    """1.0 when the answer equals one of the references exactly (ignoring surrounding
    whitespace) or after :func:`normalize`; else 0.0."""
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("match needs at least one reference string")
    stripped = answer.strip()
    for ref in refs:
        if stripped == ref.strip():
            return Score(1.0, f"exact match with {ref!r}")
    norm = normalize(answer)
    for ref in refs:
        if norm == normalize(ref):
            return Score(1.0, f"normalised match with {ref!r}")
    shown = _clip(stripped)
    return Score(0.0, f"{shown!r} matches none of {len(refs)} reference(s)" if len(refs) > 1
                 else f"{shown!r} does not match {refs[0]!r}")


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
