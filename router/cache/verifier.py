"""The semantic tier's hit decision: does a new query ask what a cached entry's query asked?

Cosine similarity alone cannot decide it: on held-out QQP a cosine threshold low enough to
catch half of the true paraphrases also lets through pairs that differ in one number, one
negation or the order of two places. So each top candidate the vector index returns is checked
by a small model over the pair: the cosine and lexical features that catch those differences
(:func:`pair_features`) and the two vectors' elementwise product and difference, read by a
boosted tree ensemble (:class:`Trees`) that ``training.cache_verifier`` fitted, with a hit
threshold calibrated to a target false-hit rate on out-of-fold predictions of the training
part — on the non-duplicate pairs a lookup would meet (one question the other's nearest).

Serving reads only numpy here (and the vectors the encoder already made for the lookup): the
artifact is a small npz file, ``models/cache/verifier.npz``.

A stronger decider reads the two texts together: a :class:`CrossEncoder` (MiniLM fine-tuned on
pairs by ``training.cache_cross_encoder``, run with onnxruntime and tokenizers, never torch),
whose logit is the score, or one more input beside the features (``Verifier.inputs``). Its
artifact is a folder, ``models/cache/cross_encoder/`` (``verifier.npz``, ``model.int8.onnx``,
``tokenizer.json``), built rather than committed; ``Verifier.load()`` prefers it when present.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MAX_PAIR_TOKENS = 64
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "models" / "cache" / "verifier.npz"
# Built by ``training.cache_cross_encoder`` and ``training.cache_verifier --cross-encoder``
# (not committed: the ONNX weights are 23 MB); loaded instead of DEFAULT_PATH when present.
CROSS_ENCODER_PATH = DEFAULT_PATH.parent / "cross_encoder" / "verifier.npz"

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


def pair_matrix(text_a: Sequence[str], text_b: Sequence[str], vec_a: np.ndarray,
                vec_b: np.ndarray) -> np.ndarray:
    """What the model reads: the :data:`FEATURES`, then the vectors' elementwise product and
    absolute difference (which dimensions agree, not only how many)."""
    vec_a, vec_b = np.asarray(vec_a, dtype=np.float64), np.asarray(vec_b, dtype=np.float64)
    cosines = np.einsum("ij,ij->i", vec_a, vec_b)
    return np.hstack([features_matrix(text_a, text_b, cosines), vec_a * vec_b,
                      np.abs(vec_a - vec_b)])


@dataclass(frozen=True, eq=False)
class Trees:
    """A boosted tree ensemble as flat node arrays (all trees' nodes end to end; ``left`` and
    ``right`` are absolute indices, ``-1`` at leaves). A row goes left when its feature is
    ``<= threshold``. The raw score is ``baseline`` plus the leaf value reached in each tree."""

    roots: np.ndarray  # (trees,) int
    feature: np.ndarray  # (nodes,) int
    threshold: np.ndarray  # (nodes,) float
    left: np.ndarray  # (nodes,) int
    right: np.ndarray  # (nodes,) int
    value: np.ndarray  # (nodes,) float
    baseline: float

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The ensemble's raw score (a logit) of each row of ``x``."""
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        rows = np.arange(len(x))[:, None]
        while True:
            inner = self.left[node] >= 0
            if not inner.any():
                break
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        return self.baseline + self.value[node].sum(axis=1)


def pair_tokenizer(path: str | Path, max_length: int = MAX_PAIR_TOKENS) -> Tokenizer:
    """The encoder's WordPiece tokenizer set up for pairs: ``[CLS] a [SEP] b [SEP]`` with token
    types 0 and 1, the longer text truncated first to ``max_length`` tokens in all, no padding."""
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length, strategy="longest_first")
    return tok


class CrossEncoder:
    """A pair classifier exported to ONNX (``training.cache_cross_encoder``): both texts read
    together, one logit out (higher: more likely the same question). onnxruntime only."""

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer, name: str = ""):
        self._session = session
        self._tokenizer = tokenizer
        self.name = name

    @classmethod
    def load(cls, folder: str | Path, *, quantized: bool = True, threads: int = 1) -> CrossEncoder:
        """``folder/model.int8.onnx`` (or ``model.onnx``) and ``folder/tokenizer.json``."""
        folder = Path(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        name = "model.int8.onnx" if quantized else "model.onnx"
        session = ort.InferenceSession(str(folder / name), options,
                                       providers=["CPUExecutionProvider"])
        return cls(session, pair_tokenizer(folder / "tokenizer.json"), name)

    def logits(self, text_a: Sequence[str], text_b: Sequence[str],
               batch_size: int = 64) -> np.ndarray:
        """The logit of each pair ``(text_a[i], text_b[i])`` (float64)."""
        pairs = list(zip(text_a, text_b, strict=True))
        out = np.empty(len(pairs))
        order = np.argsort([len(a) + len(b) for a, b in pairs], kind="stable")
        for s in range(0, len(pairs), batch_size):
            idx = order[s:s + batch_size]
            enc = self._tokenizer.encode_batch([pairs[i] for i in idx])
            width = max(len(e.ids) for e in enc)
            ids = np.zeros((len(enc), width), dtype=np.int64)
            types, mask = np.zeros_like(ids), np.zeros_like(ids)
            for r, e in enumerate(enc):
                n = len(e.ids)
                ids[r, :n], types[r, :n], mask[r, :n] = e.ids, e.type_ids, 1
            (logit,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                                "token_type_ids": types})
            out[idx] = logit
        return out


_TREE_ARRAYS = ("roots", "feature", "threshold", "left", "right", "value")


def stack_matrix(text_a: Sequence[str], text_b: Sequence[str], vec_a: np.ndarray,
                 vec_b: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """What a stacked model reads: the :data:`FEATURES`, then the cross-encoder's logit."""
    cosines = np.einsum("ij,ij->i", np.asarray(vec_a, dtype=np.float64),
                        np.asarray(vec_b, dtype=np.float64))
    return np.hstack([features_matrix(text_a, text_b, cosines),
                      np.asarray(logits, dtype=np.float64)[:, None]])


# What the verifier's score is: trees over the features and the vectors' product and difference
# (:func:`pair_matrix`), trees over the features and the cross-encoder's logit
# (:func:`stack_matrix`), or the cross-encoder's logit itself.
INPUTS = ("features+vectors", "features+cross_encoder", "cross_encoder")


@dataclass(frozen=True, eq=False)
class Verifier:
    """A fitted pair model and its hit threshold on the model's logit, calibrated to
    ``target_false_hit_rate``. ``cosine_threshold`` is plain cosine calibrated to the same
    target on the same training rows: the baseline the verifier is compared with.

    ``inputs`` (one of :data:`INPUTS`) says what the score is; with a cross-encoder, it is
    stored in the folder ``cross_encoder_dir`` (relative to the npz file) and loaded with it."""

    trees: Trees | None
    threshold: float
    target_false_hit_rate: float
    cosine_threshold: float
    features: tuple[str, ...] = FEATURES
    encoder: str = ""
    dim: int = 0  # the encoder's vector size (0: not checked)
    trained_on: str = ""
    inputs: str = INPUTS[0]
    cross_encoder_dir: str = ""
    cross_encoder: CrossEncoder | None = None

    def score(self, text_a: Sequence[str], text_b: Sequence[str], vec_a: np.ndarray,
              vec_b: np.ndarray) -> np.ndarray:
        """The model's logit for each pair (higher: more likely the same question); ``vec_a``,
        ``vec_b`` are the encoder's L2-normalised vectors of the texts."""
        if tuple(self.features) != FEATURES:
            raise ValueError(f"verifier was fitted on features {self.features}, this code "
                             f"computes {FEATURES}: refit it")
        if self.dim and np.shape(vec_a)[-1] != self.dim:
            raise ValueError(f"verifier was fitted on {self.dim}-d vectors of "
                             f"{self.encoder or 'its encoder'}, got {np.shape(vec_a)[-1]}-d")
        if self.inputs == INPUTS[0]:
            return self.trees.raw(pair_matrix(text_a, text_b, vec_a, vec_b))
        if self.cross_encoder is None:
            raise ValueError(f"verifier reads {self.inputs!r} but has no cross-encoder loaded")
        logits = self.cross_encoder.logits(text_a, text_b)
        if self.inputs == INPUTS[2]:
            return logits
        return self.trees.raw(stack_matrix(text_a, text_b, vec_a, vec_b, logits))

    def decide(self, text_a: Sequence[str], text_b: Sequence[str], vec_a: np.ndarray,
               vec_b: np.ndarray) -> np.ndarray:
        """True where the pair is a hit: its logit reaches the calibrated threshold."""
        return self.score(text_a, text_b, vec_a, vec_b) >= self.threshold

    def save(self, path: str | Path) -> Path:
        """Write the verifier to ``path`` (npz: the node arrays and a JSON ``meta``); a
        cross-encoder is not copied: it is expected in ``cross_encoder_dir`` beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"threshold": self.threshold, "target_false_hit_rate": self.target_false_hit_rate,
                "cosine_threshold": self.cosine_threshold, "features": list(self.features),
                "encoder": self.encoder, "dim": self.dim, "trained_on": self.trained_on,
                "inputs": self.inputs, "cross_encoder_dir": self.cross_encoder_dir}
        arrays = {}
        if (t := self.trees) is not None:
            meta["baseline"] = t.baseline
            arrays = {"roots": t.roots.astype(np.int32), "feature": t.feature.astype(np.int32),
                      "threshold": t.threshold.astype(np.float64),
                      "left": t.left.astype(np.int32), "right": t.right.astype(np.int32),
                      "value": t.value.astype(np.float64)}
        with path.open("wb") as f:
            np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH, *, threads: int = 1) -> Verifier:
        """Read a verifier written by :meth:`save`, and its cross-encoder if it has one
        (``threads``: onnxruntime's pool for it). The default is the shipped one: the
        cross-encoder verifier (:data:`CROSS_ENCODER_PATH`) when it has been built, else
        ``models/cache/verifier.npz``."""
        path = Path(path)
        if path == DEFAULT_PATH and CROSS_ENCODER_PATH.exists():
            path = CROSS_ENCODER_PATH
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            baseline = meta.pop("baseline", None)
            trees = (Trees(**{k: npz[k] for k in _TREE_ARRAYS}, baseline=baseline)
                     if baseline is not None else None)
        meta["features"] = tuple(meta["features"])
        if meta.get("inputs", INPUTS[0]) not in INPUTS:
            raise ValueError(f"{path}: unknown verifier inputs {meta['inputs']!r}")
        cross = None
        if meta.get("inputs", INPUTS[0]) != INPUTS[0]:
            cross = CrossEncoder.load(path.parent / meta["cross_encoder_dir"], threads=threads)
        return cls(trees=trees, cross_encoder=cross, **meta)
