"""Prompt embeddings at serving time: onnxruntime and tokenizers, never torch.

``Encoder.load(folder)`` reads what ``training.export_encoder`` wrote (``encoder.json``,
``tokenizer.json``, ``model.onnx`` or ``model.int8.onnx``). The graph pools and normalises, so
``encode`` returns L2-normalised float32 rows. ``encode_routing`` appends the mean-pooled hidden
states of chosen inner layers to that embedding: what routers read (see its docstring).
``MicroBatcher`` lets concurrent async callers share one onnxruntime call.

Long prompts. The model reads at most ``max_seq_length`` tokens (256 for MiniLM), special tokens
included. Plain truncation keeps the head, which for a long chat or a few-shot prompt means the
system prompt and the oldest turns or first exemplars, and loses the question. What decides a
route is the task instruction (at the start, in the system prompt) and the actual question (at
the end, in the latest user turn); exemplars and old turns in the middle matter least. So a
prompt that does not fit keeps its first ``head_tokens`` tokens and fills the rest of the budget
from its end: ``[CLS] head ... tail [SEP]``. This is done on token ids, so the budget is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import msgspec
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

DEFAULT_HEAD_TOKENS = 32


class _Manifest(msgspec.Struct, frozen=True):
    """``encoder.json``, as written by ``training.export_encoder``."""

    id: str
    dim: int
    max_seq_length: int
    sha256: dict[str, str]
    source: str = ""
    source_sha256: str | None = None
    layers: int = 0  # hidden-state means the graph outputs (embeddings + each layer); 0: none
    kind: str = "onnx"  # "static": a token table, router.static_encoder


def truncate_middle(ids: Sequence[int], budget: int, head: int = DEFAULT_HEAD_TOKENS) -> list[int]:
    """``ids`` if they fit in ``budget``, else their first ``head`` and last ``budget - head``."""
    if len(ids) <= budget:
        return list(ids)
    head = min(head, budget)
    return [*ids[:head], *ids[len(ids) - (budget - head) :]]


def _special_tokens(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's template puts before and after a single text ([CLS], [SEP])."""
    bare = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a", add_special_tokens=True).ids
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return full[:i], full[i + len(bare) :]
    raise ValueError("tokenizer template does not wrap the text in special tokens")


class TokenCounting:
    """Token counts over an encoder's own tokenizer (``self._tokenizer``), never truncated:
    what context windows, prices and the prompt cap are checked against."""

    _tokenizer: Tokenizer

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``, without special tokens and without truncation."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def count_tokens_batch(self, texts: list[str]) -> list[int]:
        """``count_tokens`` of each text, in one tokenizer call (parallel, GIL released)."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]


class Encoder(TokenCounting):
    """A sentence encoder exported to ONNX. Thread-safe: onnxruntime sessions are."""

    kind = "onnx"

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        manifest: _Manifest,
        *,
        sha256: str,
        head_tokens: int = DEFAULT_HEAD_TOKENS,
    ):
        self._session = session
        self._tokenizer = tokenizer
        self._manifest = manifest
        self._sha256 = sha256
        self._inputs = {i.name for i in session.get_inputs()}
        self._prefix, self._suffix = _special_tokens(tokenizer)
        self._budget = manifest.max_seq_length - len(self._prefix) - len(self._suffix)
        self._head = head_tokens

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        quantized: bool = False,
        threads: int = 2,
        head_tokens: int = DEFAULT_HEAD_TOKENS,
        spin: bool = False,
    ) -> Encoder:
        """Load an exported encoder folder; ``quantized`` picks ``model.int8.onnx``.

        ``threads`` is onnxruntime's intra-op pool; ``head_tokens`` is how much of a too-long
        prompt's start survives truncation (see the module docstring). ``spin`` lets the pool's
        threads busy-wait for work: about 0.7 ms faster per lone encode on two cores, but the
        spinning thread takes CPU from everything else in the process (a gateway serves about
        20% fewer requests per second with it), so it is off unless encoding is all you do.
        """
        path = Path(path)
        manifest_file = path / "encoder.json"
        if not manifest_file.exists():
            raise FileNotFoundError(
                f"{path}: no encoder.json; build it with `contextforge setup`"
                " or `python -m training.export_encoder`"
            )
        try:
            manifest = msgspec.json.decode(manifest_file.read_bytes(), type=_Manifest)
        except msgspec.ValidationError as exc:
            raise ValueError(f"{manifest_file}: {exc}") from exc
        if manifest.kind != "onnx":
            raise ValueError(f"{path}: a {manifest.kind} encoder, not an ONNX one; load it with "
                             "router.embedding.load_encoder")
        variant, model = ("int8", "model.int8.onnx") if quantized else ("fp32", "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path / model), opts, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        # The exported tokenizer.json pads and truncates to 128; we do both ourselves.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        # The export hashed the file it wrote; hashing 90 MB again would double the load time.
        return cls(
            session, tokenizer, manifest, sha256=manifest.sha256[variant], head_tokens=head_tokens
        )

    @property
    def id(self) -> str:
        return self._manifest.id

    @property
    def dim(self) -> int:
        return self._manifest.dim

    def check_layers(self, layers: Sequence[int]) -> None:
        """Raise ValueError unless ``encode_routing`` can append every one of ``layers``."""
        n = self._manifest.layers
        if any(not 0 <= k < n for k in layers):
            have = f"layers 0..{n - 1}" if n else "no layer outputs (exported before they existed)"
            raise ValueError(f"encoder {self.id!r} has {have}, not {list(layers)}; re-export it "
                             "with `contextforge setup` or `python -m training.export_encoder`")

    @property
    def sha256(self) -> str:
        """sha256 of the ONNX file in use (fp32 or int8), as recorded at export."""
        return self._sha256

    @property
    def max_tokens(self) -> int:
        """Tokens the model reads per text, special tokens included."""
        return self._manifest.max_seq_length

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids the model sees per text: special tokens around the head-and-tail cut."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [
            [*self._prefix, *truncate_middle(e.ids, self._budget, self._head), *self._suffix]
            for e in encodings
        ]

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32 unit rows, in the order of ``texts``."""
        return self.encode_routing(texts, (), batch_size)

    def encode_routing(self, texts: Sequence[str], layers: Sequence[int] = (),
                       batch_size: int = 64) -> np.ndarray:
        """(n, dim * (1 + len(layers))) float32: the sentence embedding, then for each of
        ``layers`` the mean of that layer's hidden states over the text's tokens, L2-normalised.

        Layer 0 is the token embeddings, the last layer is what the sentence embedding pools.
        Inner layers keep more of a prompt's surface form (wording, syntax) that the final,
        semantic layer averages away, and that is part of what makes a prompt hard. With no
        ``layers`` this is ``encode``.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts; use encode_one for one text")
        layers = list(layers)
        self.check_layers(layers)
        ids = self.tokenize(texts)
        out = np.empty((len(ids), self.dim * (1 + len(layers))), dtype=np.float32)
        # Sorted by length, each batch is padded only to its own longest text.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self._run([ids[i] for i in chunk], layers)
        return out

    def encode_one(self, text: str) -> np.ndarray:
        """(dim,) float32 unit vector of one text."""
        return self.encode([text])[0]

    def _run(self, ids: list[list[int]], layers: list[int]) -> np.ndarray:
        input_ids = np.zeros((len(ids), max(map(len, ids))), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        if not layers:
            return self._session.run(["sentence_embedding"], feed)[0]
        emb, means = self._session.run(["sentence_embedding", "layer_means"], feed)
        picked = means[:, layers, :]
        picked /= np.maximum(np.linalg.norm(picked, axis=2, keepdims=True), 1e-12)
        return np.concatenate([emb, picked.reshape(len(ids), -1)], axis=1)


class BatchEncoder(Protocol):
    """What ``MicroBatcher`` needs: ``Encoder`` or anything with the same ``encode``."""

    def encode(self, texts: Sequence[str], batch_size: int = ...) -> np.ndarray: ...

    def encode_routing(self, texts: Sequence[str], layers: Sequence[int] = ...,
                       batch_size: int = ...) -> np.ndarray: ...


_Request = tuple[str, "asyncio.Future[np.ndarray]"]


class MicroBatcher:
    """Batches concurrent ``await encode(text)`` calls into shared onnxruntime calls.

    A batch starts with the first waiting request and takes whatever else arrives within
    ``max_wait_ms``, up to ``max_batch`` texts. It is encoded on one worker thread, so the event
    loop never blocks and calls never contend for onnxruntime's threads; requests that arrive
    meanwhile queue up for the next batch. If encoding fails, every waiter of that batch gets
    the exception. Create it inside a running event loop; ``close()`` (or ``async with``)
    finishes the queued requests and stops it. With ``layers`` it returns what
    ``Encoder.encode_routing`` does (the sentence embedding is the first ``dim`` columns).
    """

    def __init__(self, encoder: BatchEncoder, *, max_batch: int = 32, max_wait_ms: float = 2.0,
                 layers: Sequence[int] = ()):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self._encoder = encoder
        self._layers = tuple(layers)
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000.0
        self._loop = asyncio.get_running_loop()  # raises outside a loop, by design
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self._closed = False
        self._task = self._loop.create_task(self._serve())

    @property
    def encoder(self) -> BatchEncoder:
        """The encoder this batcher runs."""
        return self._encoder

    async def encode(self, text: str) -> np.ndarray:
        """(dim,) float32 unit vector of ``text``, computed in a shared batch."""
        if self._closed:
            raise RuntimeError("MicroBatcher is closed")
        future: asyncio.Future[np.ndarray] = self._loop.create_future()
        self._queue.put_nowait((text, future))
        return await future

    async def close(self) -> None:
        """Encode what is already queued, then stop the worker. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        try:
            await self._task
        finally:
            self._pool.shutdown(wait=False)

    async def __aenter__(self) -> MicroBatcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _serve(self) -> None:
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                return
            batch, stop = await self._collect(first)
            await self._encode_batch(batch)

    async def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """The batch that starts with ``first``, and whether ``close`` was seen."""
        batch = [first]
        deadline = self._loop.time() + self._max_wait
        while len(batch) < self._max_batch:
            if self._queue.empty():
                remaining = deadline - self._loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._layers:
            return self._encoder.encode_routing(texts, self._layers, batch_size=len(texts))
        return self._encoder.encode(texts, batch_size=len(texts))

    async def _encode_batch(self, batch: list[_Request]) -> None:
        live = [(text, fut) for text, fut in batch if not fut.done()]  # skip cancelled callers
        if not live:
            return
        texts = [text for text, _ in live]
        try:
            vectors = await self._loop.run_in_executor(self._pool, self._encode, texts)
            if len(vectors) != len(live):
                raise RuntimeError(f"encoder returned {len(vectors)} rows for {len(live)} texts")
        except Exception as exc:
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), vector in zip(live, vectors, strict=True):
            if not fut.done():
                fut.set_result(vector)
