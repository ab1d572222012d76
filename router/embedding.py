"""Prompt embeddings at run time: onnxruntime + tokenizers, no torch.

``Encoder.load(folder)`` reads what ``training.export_encoder`` wrote. ``encode`` returns
L2-normalised float32 rows (the graph pools and normalises). ``MicroBatcher`` lets concurrent
async callers share one onnxruntime call.

Long prompts. The model reads at most ``max_seq_length`` (256) tokens. Plain truncation keeps
the head, which for a long chat or a few-shot prompt is the oldest turn or the first exemplar.
What decides a route is the task instruction (usually at the start: the system prompt) and the
actual question (at the end: the last user turn). So a long prompt keeps its first
``head_tokens`` tokens and fills the rest of the budget from its end, dropping the middle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


class Encoder:
    """A sentence encoder exported to ONNX; thread-safe (onnxruntime sessions are)."""

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer, meta: dict,
                 sha256: str, head_tokens: int = 32):
        self.session = session
        self.tokenizer = tokenizer
        self.meta = meta
        self.sha256 = sha256
        self.head_tokens = head_tokens
        self._inputs = {i.name for i in session.get_inputs()}
        self._cls = tokenizer.token_to_id("[CLS]")
        self._sep = tokenizer.token_to_id("[SEP]")
        self.calls = 0  # onnxruntime runs so far: lets tests and metrics see batching work

    @classmethod
    def load(cls, path: str | Path, *, quantized: bool = False, threads: int = 2,
             head_tokens: int = 32) -> Encoder:
        """Load ``path/model.onnx`` (or ``model.int8.onnx`` when ``quantized``)."""
        path = Path(path)
        meta_file = path / "encoder.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{path}: no encoder.json; build it with `contextforge setup`"
                                    " or `python -m training.export_encoder`")
        meta = json.loads(meta_file.read_text())
        variant = "int8" if quantized else "fp32"
        model = path / ("model.int8.onnx" if quantized else "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        sha = meta.get("sha256", {}).get(variant) or hashlib.sha256(model.read_bytes()).hexdigest()
        return cls(session, tokenizer, meta, sha, head_tokens)

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def max_tokens(self) -> int:
        return int(self.meta.get("max_seq_length", 256))

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` without special tokens or truncation."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Model input ids per text: [CLS] head ... tail [SEP], within ``max_tokens``."""
        budget = self.max_tokens - 2
        head = min(self.head_tokens, budget)
        out = []
        for enc in self.tokenizer.encode_batch(list(texts), add_special_tokens=False):
            ids = enc.ids
            if len(ids) > budget:
                ids = ids[:head] + ids[len(ids) - (budget - head):]
            out.append([self._cls, *ids, self._sep])
        return out

    def _run(self, ids: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = x
            mask[i, : len(x)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        self.calls += 1
        return self.session.run(None, feed)[0]

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32 unit rows. Texts are batched by length so padding stays small."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        ids = self.token_ids(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for start in range(0, len(ids), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self._run([ids[i] for i in chunk])
        return out

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


class MicroBatcher:
    """Concurrent ``await encode(text)`` calls arriving within ``max_wait_ms`` share one run.

    The onnxruntime call happens on one worker thread so the event loop never blocks; create
    the batcher inside a running loop and ``close()`` it (or use ``async with``) when done.
    """

    def __init__(self, encoder: Encoder, *, max_wait_ms: float = 2.0, max_batch: int = 32):
        self.encoder = encoder
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[str, asyncio.Future]] = asyncio.Queue()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="encoder")
        self._task = asyncio.get_running_loop().create_task(self._loop())
        self._lock = threading.Lock()

    async def encode(self, text: str) -> np.ndarray:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((text, fut))
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            texts = [t for t, _ in batch]
            try:
                vectors = await loop.run_in_executor(self._pool, self.encoder.encode, texts)
            except Exception as exc:  # every waiter of this batch sees the failure
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), vec in zip(batch, vectors, strict=True):
                if not fut.done():
                    fut.set_result(vec)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._pool.shutdown(wait=False)

    async def __aenter__(self) -> MicroBatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
