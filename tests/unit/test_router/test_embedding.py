import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from router.embedding import Encoder, MicroBatcher, truncate_middle
from training import export_encoder as export

LONG = (
    "You are a meticulous assistant for a law firm. Read the following contract clause and "
    "answer the question. The tenant shall keep the premises in good repair, shall not make "
    "alterations without the landlord's written consent, shall permit the landlord to enter "
    "at reasonable times upon notice, and shall yield up the premises at the end of the term "
    "in the same condition as at its commencement, fair wear and tear excepted. Question: may "
    "the tenant repaint the kitchen without asking?"
)
TEXTS = [
    "What is the capital of Australia?",
    "Write a Python function that reverses a linked list in place.",
    "The trophy doesn't fit in the suitcase because it is too big. What is too big?",
    "Explain the difference between TCP and UDP to a network engineer.",
    "¿Cuál es la raíz cuadrada de 144?",
    "x",
    "A patient presents with chest pain radiating to the left arm and shortness of breath.",
    "def add(a, b):\n    return a + b\n# what does this do?",
    "Summarise the causes of the First World War in three sentences.",
    LONG,
]


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(export.default_source(), device="cpu")


@pytest.fixture(scope="module")
def int8(encoder_dir):
    return Encoder.load(encoder_dir, quantized=True)


def test_fp32_matches_sentence_transformers(encoder, reference):
    assert 64 < encoder.count_tokens(LONG) < encoder.max_tokens - 2  # long, but not truncated
    ours = encoder.encode(TEXTS)
    theirs = reference.encode(TEXTS, normalize_embeddings=True)
    assert ours.shape == (len(TEXTS), encoder.dim) == (len(TEXTS), 384)
    assert ours.dtype == np.float32
    assert (ours * theirs).sum(axis=1).min() >= 0.999


def test_int8_stays_close_to_fp32(encoder, int8):
    assert int8.sha256 != encoder.sha256 and int8.id == encoder.id
    assert (int8.encode(TEXTS) * encoder.encode(TEXTS)).sum(axis=1).min() >= 0.97


def test_rows_are_unit_norm_and_batches_keep_order(encoder):
    batched = encoder.encode(TEXTS, batch_size=3)  # lengths are mixed: sorting must be undone
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    singles = np.stack([encoder.encode_one(t) for t in TEXTS])
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        encoder.encode("one string is not a batch")


def test_routing_features_append_normalised_layer_means(encoder, reference):
    import torch

    layers = [2, 4, 6]
    x = encoder.encode_routing(TEXTS, layers, batch_size=3)
    assert x.shape == (len(TEXTS), 4 * 384) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, :384], encoder.encode(TEXTS), atol=1e-5)
    blocks = x[:, 384:].reshape(len(TEXTS), 3, 384)
    np.testing.assert_allclose(np.linalg.norm(blocks, axis=2), 1.0, atol=1e-5)
    # The sentence embedding is the normalised mean of the last layer: the same vector.
    assert (blocks[:, 2] * x[:, :384]).sum(axis=1).min() > 0.9999
    # Layer 2 against torch's own hidden states, token ids as the encoder cut them.
    model = reference[0].auto_model
    for text, row in zip(TEXTS, blocks[:, 0], strict=True):
        ids = torch.tensor([encoder.tokenize([text])[0]])
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                           output_hidden_states=True).hidden_states[2][0].mean(0).numpy()
        assert float(row @ hidden / np.linalg.norm(hidden)) > 0.999
    with pytest.raises(ValueError, match=r"layers 0\.\.6"):
        encoder.encode_routing(TEXTS[:1], [7])


def test_truncate_middle_keeps_head_and_tail():
    ids = list(range(10))
    assert truncate_middle(ids, 10, head=3) == ids
    assert truncate_middle(ids, 6, head=3) == [0, 1, 2, 7, 8, 9]
    assert truncate_middle(ids, 3, head=3) == [0, 1, 2]
    assert truncate_middle(ids, 2, head=5) == [0, 1]


def test_long_prompts_keep_instruction_and_question(encoder):
    long = "You are a careful tax adviser. " + "Filler exemplar text. " * 300 + "Question: why?"
    full = encoder.tokenize([long])[0]
    bare = encoder.tokenize(["You are a careful tax adviser."])[0]
    cls, sep = bare[0], bare[-1]
    raw_count = encoder.count_tokens(long)
    assert raw_count > 1000 and len(full) == encoder.max_tokens == 256
    assert full[0] == cls and full[-1] == sep
    assert full[1:8] == bare[1:-1]  # the instruction survives at the start
    question = encoder.tokenize(["Question: why?"])[0][1:-1]
    assert full[-1 - len(question) : -1] == question  # and the question at the end
    short = encoder.tokenize(["What is 2 + 2?"])[0]
    assert len(short) == encoder.count_tokens("What is 2 + 2?") + 2
    vector = encoder.encode_one(long)
    assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)


class CountingEncoder:
    """An encoder wrapper that counts calls (each is one onnxruntime run for these sizes)."""

    def __init__(self, inner, fail: bool = False):
        self.inner, self.fail, self.calls = inner, fail, 0

    def encode(self, texts, batch_size=64):
        self.calls += 1
        if self.fail:
            raise RuntimeError("onnxruntime failed")
        return self.inner.encode(texts, batch_size=batch_size)


def test_micro_batcher_shares_calls_and_matches_encode(encoder):
    texts = [f"{t} ({i})" for i, t in enumerate(TEXTS * 2)]
    counting = CountingEncoder(encoder)

    async def run():
        async with MicroBatcher(counting, max_wait_ms=20) as batcher:
            return await asyncio.gather(*(batcher.encode(t) for t in texts))

    vectors = np.stack(asyncio.run(run()))
    assert len(texts) == 20 and 1 <= counting.calls < 20
    np.testing.assert_allclose(vectors, encoder.encode(texts), atol=1e-5)


def test_micro_batcher_with_layers_returns_routing_features(encoder):
    async def run():
        async with MicroBatcher(encoder, max_wait_ms=20, layers=(2, 3)) as batcher:
            return await asyncio.gather(*(batcher.encode(t) for t in TEXTS))

    vectors = np.stack(asyncio.run(run()))
    np.testing.assert_allclose(vectors, encoder.encode_routing(TEXTS, (2, 3)), atol=1e-5)


def test_micro_batcher_error_reaches_every_waiter_and_it_recovers(encoder):
    counting = CountingEncoder(encoder, fail=True)

    async def run():
        async with MicroBatcher(counting, max_wait_ms=20) as batcher:
            failed = await asyncio.gather(
                *(batcher.encode(t) for t in TEXTS[:4]), return_exceptions=True
            )
            counting.fail = False
            return failed, await batcher.encode(TEXTS[0])

    failed, after = asyncio.run(run())
    assert all(isinstance(r, RuntimeError) and "onnxruntime" in str(r) for r in failed)
    np.testing.assert_allclose(after, encoder.encode_one(TEXTS[0]), atol=1e-5)


def test_micro_batcher_needs_a_loop_and_refuses_work_after_close(encoder):
    with pytest.raises(RuntimeError):
        MicroBatcher(encoder)

    async def run():
        batcher = MicroBatcher(encoder, max_batch=2)
        pending = [asyncio.ensure_future(batcher.encode(t)) for t in TEXTS[:5]]
        await asyncio.sleep(0)  # queued before close: close must still answer them
        await batcher.close()
        await batcher.close()
        with pytest.raises(RuntimeError, match="closed"):
            await batcher.encode("late")
        return await asyncio.gather(*pending)

    assert len(asyncio.run(run())) == 5


def test_serving_path_never_imports_torch(encoder_dir):
    code = (
        "import sys\n"
        "from router.embedding import Encoder\n"
        f"e = Encoder.load({str(encoder_dir)!r}, quantized=True)\n"
        "assert e.encode(['hi there']).shape == (1, e.dim)\n"
        "heavy = {'torch', 'transformers', 'sentence_transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_folder_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="contextforge setup"):
        Encoder.load(tmp_path)


def _fake_steps(monkeypatch, fail_at: str | None = None):
    """Swap the torch export and quantization for file writes, so export runs in milliseconds."""

    def fp32(source, path):
        path.write_bytes(b"fp32")
        if fail_at == "fp32":
            raise RuntimeError("interrupted")
        return {"dim": 384, "max_seq_length": 256, "layers": 7}

    def int8(src, dst):
        dst.write_bytes(b"int8")
        if fail_at == "int8":
            raise KeyboardInterrupt

    monkeypatch.setattr(export, "_export_fp32", fp32)
    monkeypatch.setattr(export, "_quantize_int8", int8)


@pytest.mark.parametrize("fail_at", ["fp32", "int8"])
def test_interrupted_export_leaves_nothing(tmp_path, monkeypatch, fail_at):
    _fake_steps(monkeypatch, fail_at)
    with pytest.raises((RuntimeError, KeyboardInterrupt)):
        export.export_encoder(out_dir=tmp_path / "enc")
    assert list(tmp_path.iterdir()) == []


def test_export_replaces_a_folder_whole_and_ensure_skips_done_work(tmp_path, monkeypatch):
    _fake_steps(monkeypatch)
    out = tmp_path / "enc"
    out.mkdir()
    (out / "stale.onnx").write_text("old")
    assert export.export_encoder(out_dir=out) == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]
    assert sorted(p.name for p in out.iterdir()) == [
        "encoder.json",
        "model.int8.onnx",
        "model.onnx",
        "tokenizer.json",
    ]
    manifest = json.loads((out / "encoder.json").read_text())
    assert manifest["id"] == "all-MiniLM-L6-v2" and manifest["dim"] == 384
    assert manifest["source_sha256"].startswith("53aa5117")
    monkeypatch.setattr(export, "export_encoder", lambda *a, **k: pytest.fail("re-exported"))
    assert export.ensure_encoder(out) == out


def test_ensure_re_exports_an_encoder_from_before_the_layer_outputs(tmp_path, monkeypatch):
    out = tmp_path / "enc"
    out.mkdir()
    (out / "encoder.json").write_text(json.dumps({"id": "all-MiniLM-L6-v2", "dim": 384}))
    calls = []
    monkeypatch.setattr(export, "export_encoder", lambda *a: calls.append(a) or out)
    assert export.ensure_encoder(out) == out and len(calls) == 1
