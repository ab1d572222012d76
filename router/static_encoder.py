"""A static (token-lookup) routing encoder: a numpy table and MiniLM's tokenizer, nothing more.

``training.distill_static`` builds the folder (``table.npy``, ``tokenizer.json``,
``encoder.json`` with ``kind: static``). A text's vector is the mean of its tokens' rows,
L2-normalised: about a twentieth of a millisecond for a short prompt, against ~10 ms for the
MiniLM transformer. It offers what routing needs of ``router.embedding.Encoder`` (``id``,
``dim``, ``sha256``, ``max_tokens``, ``count_tokens``, ``tokenize``, ``encode``,
``encode_routing``, ``check_layers``), so the engine, ``MicroBatcher``, the embedding cache
and training take either.

It is for routing only: its vectors separate tasks and kinds of questions about as well as
MiniLM's (benchmarks/README.md) but are much worse at telling paraphrases apart, so
``/v1/embeddings`` and the semantic cache keep the transformer.

Tokens are MiniLM's WordPiece ids, without ``[CLS]``/``[SEP]`` (the table was distilled from
single tokens) and without ``[UNK]`` (it stands for anything, so it says nothing). A text longer
than ``max_tokens`` keeps its head and tail, as ``Encoder`` does; ``count_tokens`` never cuts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
from tokenizers import Tokenizer

from router.embedding import DEFAULT_HEAD_TOKENS, TokenCounting, truncate_middle

KIND = "static"


class StaticManifest(msgspec.Struct, frozen=True):
    """``encoder.json`` of a static encoder, as ``training.distill_static`` writes it."""

    id: str
    kind: str
    dim: int
    max_seq_length: int
    sha256: dict[str, str]  # "table", "tokenizer"
    source: str = ""
    source_sha256: str | None = None
    distill: dict[str, object] = {}


class StaticEncoderError(ValueError):
    """A static encoder folder is incomplete or its files are not what its manifest says."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StaticEncoder(TokenCounting):
    """Mean of per-token rows of a distilled table; thread-safe (read-only arrays)."""

    kind = KIND

    def __init__(self, table: np.ndarray, tokenizer: Tokenizer, manifest: StaticManifest, *,
                 sha256: str, head_tokens: int = DEFAULT_HEAD_TOKENS):
        if table.ndim != 2 or table.shape[1] != manifest.dim:
            raise StaticEncoderError(f"encoder {manifest.id!r}: table shape {table.shape}, "
                                     f"manifest dim {manifest.dim}")
        if tokenizer.get_vocab_size() > len(table):
            raise StaticEncoderError(f"encoder {manifest.id!r}: {len(table)} table rows for "
                                     f"{tokenizer.get_vocab_size()} tokenizer ids")
        self._table = table
        self._tokenizer = tokenizer
        self._manifest = manifest
        self._sha256 = sha256
        self._head = head_tokens
        self._unk = tokenizer.token_to_id("[UNK]")

    @classmethod
    def load(cls, path: str | Path, *, head_tokens: int = DEFAULT_HEAD_TOKENS) -> StaticEncoder:
        """Load a folder written by ``training.distill_static``.

        Both files are hashed and checked against the manifest (~15 MB, a few tens of ms): the
        table is rebuilt on every machine, and a router must never read a table other than the
        one its ``EncoderRef.sha256`` names (``RoutingEngine.from_config`` compares the two).
        """
        path = Path(path)
        manifest_file = path / "encoder.json"
        if not manifest_file.exists():
            raise FileNotFoundError(f"{path}: no encoder.json; build it with `contextforge setup "
                                    "--config FILE` or `python -m training.distill_static`")
        try:
            manifest = msgspec.json.decode(manifest_file.read_bytes(), type=StaticManifest)
        except msgspec.ValidationError as exc:
            raise StaticEncoderError(f"{manifest_file}: {exc}") from exc
        if manifest.kind != KIND:
            raise StaticEncoderError(f"{manifest_file}: kind {manifest.kind!r}, not {KIND!r}")
        raw = {}
        for key, name in (("table", "table.npy"), ("tokenizer", "tokenizer.json")):
            try:
                raw[key] = (path / name).read_bytes()
            except OSError as exc:
                raise StaticEncoderError(f"{path / name}: cannot read: {exc.strerror}; rebuild "
                                         "it with `contextforge setup`") from exc
            if _sha256(raw[key]) != manifest.sha256.get(key):
                raise StaticEncoderError(
                    f"{path / name}: sha256 differs from encoder.json's; the folder was changed "
                    "after it was built: rebuild it with `python -m training.distill_static`")
        table = np.load(path / "table.npy", allow_pickle=False)
        tokenizer = Tokenizer.from_str(raw["tokenizer"].decode())
        tokenizer.no_truncation()  # the file truncates to 128; we cut ourselves, counts never
        tokenizer.no_padding()
        return cls(table, tokenizer, manifest, sha256=manifest.sha256["table"],
                   head_tokens=head_tokens)

    @property
    def id(self) -> str:
        return self._manifest.id

    @property
    def dim(self) -> int:
        return self._manifest.dim

    @property
    def sha256(self) -> str:
        """sha256 of ``table.npy``: what a router trained on this encoder records."""
        return self._sha256

    @property
    def max_tokens(self) -> int:
        """Tokens read per text (a longer text keeps its head and tail)."""
        return self._manifest.max_seq_length

    def check_layers(self, layers: Sequence[int]) -> None:
        """Raise ValueError unless ``layers`` is empty: a table has no inner layers."""
        if list(layers):
            raise ValueError(f"encoder {self.id!r} is static (a token table): it has no inner "
                             f"layers, not {list(layers)}; train with `--layers none`")

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """The table rows each text reads: its ids without ``[UNK]``, head-and-tail cut."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [truncate_middle([i for i in e.ids if i != self._unk], self.max_tokens,
                                self._head) for e in encodings]

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32 unit rows (zero rows for texts with no known token)."""
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts; use encode_one for one text")
        ids = self.tokenize(texts)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        filled = np.flatnonzero(lengths)
        if len(filled):
            flat = np.fromiter((i for seq in ids for i in seq), dtype=np.int64,
                               count=int(lengths.sum()))
            rows = self._table[flat].astype(np.float32)
            starts = np.concatenate([[0], np.cumsum(lengths[filled])[:-1]])
            # A mean's scale does not survive normalisation: the sum is enough.
            out[filled] = np.add.reduceat(rows, starts, axis=0)
            norms = np.linalg.norm(out[filled], axis=1, keepdims=True)
            out[filled] /= np.maximum(norms, 1e-12)
        return out

    def encode_routing(self, texts: Sequence[str], layers: Sequence[int] = (),
                       batch_size: int = 64) -> np.ndarray:
        """``encode``: a static encoder has no inner layers to append (``layers`` must be
        empty)."""
        self.check_layers(layers)
        return self.encode(texts, batch_size)

    def encode_one(self, text: str) -> np.ndarray:
        """(dim,) float32 unit vector of one text."""
        return self.encode([text])[0]
