"""The text a router embeds: the prompt without the boilerplate every prompt shares.

Few-shot prompts repeat the same exemplars in front of every question (RouterBench's ARC prompts
carry five, Winogrande's ten). Embedded whole, they drown the one paragraph that tells prompts
apart, and mean pooling turns every prompt of a task into nearly the same vector. A router
therefore learns, when it is fitted, which paragraphs recur across many training prompts, stores
their hashes in its artifact, and drops them from every prompt it routes afterwards, in training
and in service alike.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SPACE = re.compile(r"\s+")


def paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs (blocks separated by a blank line), stripped."""
    return [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]


def paragraph_key(paragraph: str) -> str:
    """A short stable hash of a paragraph with its white space folded."""
    folded = _SPACE.sub(" ", paragraph).strip().encode()
    return hashlib.blake2b(folded, digest_size=8).hexdigest()


def learn_boilerplate(
    prompts: Iterable[str], *, min_share: float = 0.02, min_count: int = 5
) -> frozenset[str]:
    """Keys of paragraphs found in at least ``min_share`` of the prompts (and ``min_count``).

    Both bounds guard against calling a duplicated question boilerplate: data sets hold a few
    exact repeats, exemplars recur in hundreds of prompts.
    """
    counts: Counter[str] = Counter()
    n = 0
    for prompt in prompts:
        n += 1
        counts.update({paragraph_key(p) for p in paragraphs(prompt)})
    floor = max(min_count, min_share * n)
    return frozenset(key for key, c in counts.items() if c >= floor)


def routing_text(prompt: str, boilerplate: frozenset[str] | set[str]) -> str:
    """The prompt with its boilerplate paragraphs removed.

    When every paragraph is boilerplate the last one is kept, so the result is never empty for a
    non-empty prompt.
    """
    if not boilerplate:
        return prompt
    parts = paragraphs(prompt)
    kept = [p for p in parts if paragraph_key(p) not in boilerplate]
    if not kept:
        kept = parts[-1:]
    return "\n\n".join(kept)
