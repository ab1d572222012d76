"""The semantic tier's hit decision: does a new query ask what a cached entry's query asked?

Cosine similarity alone cannot decide it: on held-out QQP a cosine threshold low enough to
catch half of the true paraphrases also lets through pairs that differ in one number, one
negation or the order of two places. So the top candidates the vector index returns are each
checked by a tiny model over the pair: the cosine and lexical features that catch those
differences (:func:`pair_features`), scaled and combined by a logistic regression whose weights
``training.cache_verifier`` fitted, and a threshold calibrated to a target false-hit rate on
out-of-fold predictions of the training part.

Serving reads only numpy here (and the vectors the encoder already made): the artifact is a
small JSON file, ``models/cache/verifier.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "models" / "cache" / "verifier.json"

_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|\d+(?:[.,]\d+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAPITALISED = re.compile(r"(?<![.?!]\s)(?<!^)\b[A-Z][A-Za-z0-9]+")


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


NEGATIONS = _wordset(
    "not no never nor none nobody nothing neither without cannot cant dont doesnt didnt isnt "
    "arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt")
QUESTION_WORDS = _wordset("what why how when where who whom whose which")
STOPWORDS = _wordset(
    "a an the of to in on for at by with from and or is are was were be been being do does did "
    "i you he she it we they me my your his her its our their this that these those there as "
    "can could should would will shall may might must have has had about into than then so if "
    "what why how when where who which whom whose")

FEATURES: tuple[str, ...] = (
    "cosine", "cosine_sq", "jaccard", "content_jaccard", "bigram_jaccard", "char3_jaccard",
    "order_agreement", "unshared_content", "number_mismatch", "negation_mismatch",
    "entity_mismatch", "question_word_mismatch", "length_ratio", "cosine_x_jaccard",
)


@dataclass(frozen=True)
class _Text:
    """What the features read of one text, computed once per text."""

    tokens: tuple[str, ...]
    numbers: frozenset[str]
    negations: int
    entities: frozenset[str]
    question_words: frozenset[str]
    char3: frozenset[str]


def _normalise_token(tok: str) -> str:
    return tok.lower().replace("'", "")


def analyse(text: str) -> _Text:
    """Tokens, numbers, negations, capitalised names and question words of ``text``."""
    tokens = tuple(_normalise_token(t) for t in _WORD.findall(text))
    # Sentence-initial capitals and the pronoun I are not names.
    entities = frozenset(m.lower() for m in _CAPITALISED.findall(text.strip()) if m != "I")
    squashed = " ".join(tokens)
    return _Text(
        tokens=tokens,
        numbers=frozenset(n.replace(",", "") for n in _NUMBER.findall(text)),
        negations=sum(t in NEGATIONS for t in tokens),
        entities=entities,
        question_words=frozenset(t for t in tokens if t in QUESTION_WORDS),
        char3=frozenset(squashed[i:i + 3] for i in range(max(len(squashed) - 2, 0))),
    )


def _jaccard(a: set | frozenset, b: set | frozenset) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def _order_agreement(a: Sequence[str], b: Sequence[str]) -> float:
    """Share of pairs of shared words that appear in the same order in both texts (1 when fewer
    than two are shared): "from Paris to Rome" against "from Rome to Paris" scores below 1."""
    first_b: dict[str, int] = {}
    for i, t in enumerate(b):
        first_b.setdefault(t, i)
    seen: set[str] = set()
    ranks = []
    for t in a:
        if t in first_b and t not in seen:
            seen.add(t)
            ranks.append(first_b[t])
    n = len(ranks)
    if n < 2:
        return 1.0
    r = np.asarray(ranks)
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    concordant = int(np.sum((r[None, :] > r[:, None]) & upper))
    return concordant / (n * (n - 1) / 2)


def pair_features(a: _Text, b: _Text, cosine: float) -> np.ndarray:
    """The :data:`FEATURES` of one pair, in that order (float64)."""
    set_a, set_b = set(a.tokens), set(b.tokens)
    content_a, content_b = set_a - STOPWORDS, set_b - STOPWORDS
    jaccard = _jaccard(set_a, set_b)
    bigrams_a = set(zip(a.tokens, a.tokens[1:], strict=False))
    bigrams_b = set(zip(b.tokens, b.tokens[1:], strict=False))
    len_a, len_b = len(a.tokens), len(b.tokens)
    return np.array([
        cosine,
        cosine * cosine,
        jaccard,
        _jaccard(content_a, content_b),
        _jaccard(bigrams_a, bigrams_b),
        _jaccard(a.char3, b.char3),
        _order_agreement(a.tokens, b.tokens),
        np.log1p(len(content_a ^ content_b)),
        float(a.numbers != b.numbers),
        float(a.negations % 2 != b.negations % 2),
        1.0 - _jaccard(a.entities, b.entities),
        float(a.question_words != b.question_words),
        min(len_a, len_b) / max(len_a, len_b, 1),
        cosine * jaccard,
    ])


def features_matrix(text_a: Sequence[str], text_b: Sequence[str],
                    cosines: np.ndarray) -> np.ndarray:
    """``(n, len(FEATURES))`` features of the pairs ``(text_a[i], text_b[i])``."""
    memo: dict[str, _Text] = {}

    def get(text: str) -> _Text:
        if text not in memo:
            memo[text] = analyse(text)
        return memo[text]

    rows = [pair_features(get(a), get(b), float(c))
            for a, b, c in zip(text_a, text_b, cosines, strict=True)]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURES))


@dataclass(frozen=True)
class Verifier:
    """A fitted pair model: standardised :data:`FEATURES`, logistic weights, a hit threshold
    on the logit. ``cosine_threshold`` is plain cosine calibrated to the same target on the same
    training rows: the baseline the verifier is compared with."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float
    target_false_hit_rate: float
    cosine_threshold: float
    encoder: str = ""
    trained_on: str = ""

    def score(self, text_a: Sequence[str], text_b: Sequence[str],
              cosines: np.ndarray) -> np.ndarray:
        """The model's logit for each pair (higher: more likely the same question)."""
        if tuple(self.features) != FEATURES:
            raise ValueError(f"verifier was fitted on features {self.features}, this code "
                             f"computes {FEATURES}: refit it")
        x = features_matrix(text_a, text_b, np.asarray(cosines, dtype=np.float64))
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.coef) + self.intercept

    def decide(self, text_a: Sequence[str], text_b: Sequence[str],
               cosines: np.ndarray) -> np.ndarray:
        """True where the pair is a hit: its logit reaches the calibrated threshold."""
        return self.score(text_a, text_b, cosines) >= self.threshold

    def save(self, path: str | Path) -> Path:
        """Write the verifier as JSON to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> Verifier:
        """Read a verifier written by :meth:`save` (default: the shipped one)."""
        raw = json.loads(Path(path).read_text())
        for key in ("features", "mean", "scale", "coef"):
            raw[key] = tuple(raw[key])
        return cls(**raw)
