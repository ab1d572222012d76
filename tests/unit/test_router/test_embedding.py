import asyncio
import subprocess
import sys

import numpy as np
import pytest

from router.embedding import Encoder, MicroBatcher

TEXTS = [
    "What is the capital of Australia?",
    "Write a Python function that reverses a linked list in place.",
    "The trophy doesn't fit in the suitcase because it is too big. What is too big?",
    "Explain the difference between TCP and UDP to a network engineer.",
    "¿Cuál es la raíz cuadrada de 144?",
    "x",
    "A patient presents with chest pain radiating to the left arm and shortness of breath.",
    "Translate 'good morning' into Japanese and explain the politeness level.",
    "def add(a, b):\n    return a + b\n# what does this do?",
    "Summarise the causes of the First World War in three sentences.",
]


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    from training.export_encoder import default_source

    return SentenceTransformer(str(default_source()), device="cpu")


def test_fp32_matches_sentence_transformers(encoder, reference):
    ours = encoder.encode(TEXTS)
    theirs = reference.encode(TEXTS, normalize_embeddings=True)
    cos = (ours * theirs).sum(axis=1)
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert cos.min() >= 0.999


def test_int8_stays_close_to_fp32(encoder, encoder_dir):
    q = Encoder.load(encoder_dir, quantized=True)
    assert q.sha256 != encoder.sha256
    assert (q.encode(TEXTS) * encoder.encode(TEXTS)).sum(axis=1).min() >= 0.97


def test_rows_are_unit_norm_and_batching_keeps_order(encoder):
    batched = encoder.encode(TEXTS, batch_size=3)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    singles = np.stack([encoder.encode_one(t) for t in TEXTS])
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_long_prompts_keep_head_and_tail(encoder):
    head = "You are a careful tax adviser."
    tail = "Question: can I deduct my home office?"
    long = f"{head} " + "filler words here " * 300 + tail
    ids = encoder.token_ids([long])[0]
    assert len(ids) == encoder.max_tokens
    text = encoder.tokenizer.decode(ids)
    assert text.startswith("you are a careful tax adviser")
    assert text.endswith("question : can i deduct my home office?")
    assert encoder.count_tokens(long) > encoder.max_tokens


def test_micro_batcher_shares_calls_and_matches_encode(encoder):
    async def run():
        async with MicroBatcher(encoder, max_wait_ms=20, max_batch=64) as mb:
            before = encoder.calls
            out = await asyncio.gather(*(mb.encode(t) for t in TEXTS * 2))
            return np.stack(out), encoder.calls - before

    vectors, calls = asyncio.run(run())
    assert calls < len(TEXTS) * 2
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS * 2), atol=1e-5)


def test_micro_batcher_error_reaches_every_waiter(encoder):
    class Broken:
        def encode(self, texts):
            raise RuntimeError("onnx failed")

    async def run():
        async with MicroBatcher(Broken(), max_wait_ms=20) as mb:  # type: ignore[arg-type]
            return await asyncio.gather(*(mb.encode(t) for t in TEXTS[:3]),
                                        return_exceptions=True)

    results = asyncio.run(run())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_serving_path_never_imports_torch(encoder_dir):
    code = (
        "import sys; from router.embedding import Encoder; "
        f"e = Encoder.load({str(encoder_dir)!r}); e.encode(['hi']); "
        "import router.engine, router.predictors; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_folder_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="contextforge setup"):
        Encoder.load(tmp_path)
