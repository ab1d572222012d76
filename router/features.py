"""Surface features: what a prompt's length and make-up say that its embedding does not.

Mean pooling makes an embedding blind to length: a two-step and an eight-step word problem land
side by side, yet the longer one is the one a small model gets wrong. A router therefore reads,
beside the embedding, a few counts of the routing text (the prompt without its boilerplate) and
of the whole prompt. They are standardised with the training rows' mean and deviation and scaled
by ``weight``, so that, beside a unit-norm 384-d embedding, they inform the fit without swamping
it. Counting words and characters rather than tokens keeps them free of any tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec
import numpy as np

NAMES = ("log_words", "log_prompt_chars", "log_numbers", "log_lines", "non_ascii_share")
DEFAULT_WEIGHT = 0.3

_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def raw_features(prompts: Sequence[str], routing_texts: Sequence[str]) -> np.ndarray:
    """(n, len(NAMES)) unscaled features of each prompt and its routing text."""
    out = np.empty((len(prompts), len(NAMES)), dtype=np.float64)
    for i, (prompt, text) in enumerate(zip(prompts, routing_texts, strict=True)):
        non_ascii = sum(ord(ch) > 127 for ch in text)
        out[i] = (
            np.log1p(len(_WORD.findall(text))),
            np.log1p(len(prompt)),
            np.log1p(len(_NUMBER.findall(text))),
            np.log1p(text.count("\n") + 1),
            non_ascii / max(len(text), 1),
        )
    return out


class SurfaceScaler(msgspec.Struct, frozen=True):
    """How a router standardises its surface features (stored in ``router.json``)."""

    names: list[str]
    mean: list[float]
    std: list[float]
    weight: float = DEFAULT_WEIGHT

    @classmethod
    def fit(cls, prompts: Sequence[str], routing_texts: Sequence[str],
            weight: float = DEFAULT_WEIGHT) -> SurfaceScaler:
        """Mean and deviation of the training prompts' features."""
        f = raw_features(prompts, routing_texts)
        std = f.std(axis=0)
        # A feature constant on the training rows carries nothing; dividing by 1 keeps it 0.
        std = np.where(std > 1e-9, std, 1.0)
        return cls(list(NAMES), f.mean(axis=0).tolist(), std.tolist(), weight)

    def transform(self, prompts: Sequence[str], routing_texts: Sequence[str]) -> np.ndarray:
        """(n, len(names)) float32 standardised, weighted features."""
        if tuple(self.names) != NAMES:
            raise ValueError(f"surface features {self.names} are not this release's {list(NAMES)}")
        f = raw_features(prompts, routing_texts)
        return (self.weight * (f - self.mean) / self.std).astype(np.float32)

    def join(self, embeddings: np.ndarray, prompts: Sequence[str],
             routing_texts: Sequence[str]) -> np.ndarray:
        """Embeddings with the scaled features appended: what the predictor reads."""
        x = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        return np.hstack([x, self.transform(prompts, routing_texts)])
