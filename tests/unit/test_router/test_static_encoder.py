"""The static (token-table) routing encoder: loading, manifest checks, tokens, vectors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from router.embedding import Encoder
from router.encoders import encoder_kind, load_encoder
from router.static_encoder import StaticEncoder, StaticEncoderError
from tests.static_tables import build_tiny_static

TEXTS = ["What is the capital of Australia?", "Write a Python function that reverses a list.",
         "¿Cuál es la raíz cuadrada de 144?", "x", "def add(a, b):\n    return a + b"]


def test_loads_by_kind_with_its_manifest(tiny_static):
    enc = load_encoder(tiny_static)
    assert isinstance(enc, StaticEncoder) and encoder_kind(tiny_static) == "static"
    manifest = json.loads((tiny_static / "encoder.json").read_text())
    assert (enc.id, enc.kind, enc.dim, enc.max_tokens) == ("tiny-static", "static", 8, 512)
    assert enc.sha256 == manifest["sha256"]["table"]
    with pytest.raises(ValueError, match="load_encoder"):
        Encoder.load(tiny_static)  # the ONNX loader says where to go instead


def test_a_vector_is_the_normalised_mean_of_its_tokens_rows(tiny_static):
    enc = load_encoder(tiny_static)
    table = np.load(tiny_static / "table.npy").astype(np.float32)
    x = enc.encode(TEXTS, batch_size=2)
    assert x.shape == (len(TEXTS), 8) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    for text, row in zip(TEXTS, x, strict=True):
        (ids,) = enc.tokenize([text])
        assert ids and 101 not in ids and 102 not in ids  # no [CLS] / [SEP]
        mean = table[ids].mean(axis=0)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(np.stack([enc.encode_one(t) for t in TEXTS]), x, atol=1e-6)
    assert enc.encode([]).shape == (0, 8)
    with pytest.raises(TypeError):
        enc.encode("one string is not a batch")


def test_unknown_tokens_and_empty_texts_give_zero_rows(tiny_static):
    enc = load_encoder(tiny_static)
    unk = "\u2603\u2603"  # not in MiniLM's vocabulary: [UNK]
    assert enc.count_tokens(unk) > 0 and enc.tokenize([unk, ""]) == [[], []]
    x = enc.encode([unk, "", "hello"])
    assert not x[0].any() and not x[1].any() and x[2].any()


def test_long_texts_keep_head_and_tail_but_counts_are_never_cut(tmp_path):
    enc = load_encoder(build_tiny_static(tmp_path / "s", max_seq_length=40))
    words = [f"w{i}" for i in range(200)]
    text = " ".join(words)
    full = enc._tokenizer.encode(text, add_special_tokens=False).ids
    assert enc.count_tokens(text) == len(full) > 40
    (ids,) = enc.tokenize([text])
    assert len(ids) == enc.max_tokens == 40
    assert ids == full[:32] + full[-8:]  # DEFAULT_HEAD_TOKENS, then the tail


def test_no_inner_layers(tiny_static):
    enc = load_encoder(tiny_static)
    np.testing.assert_array_equal(enc.encode_routing(TEXTS), enc.encode(TEXTS))
    with pytest.raises(ValueError, match="no inner layers"):
        enc.encode_routing(TEXTS, [2, 3, 4])


@pytest.mark.parametrize("damage, error", [
    (lambda d: (d / "table.npy").write_bytes((d / "table.npy").read_bytes()[:-2] + b"\0\0"),
     "sha256 differs"),
    (lambda d: (d / "tokenizer.json").unlink(), "cannot read"),
    (lambda d: (d / "encoder.json").write_text(
        (d / "encoder.json").read_text().replace('"dim": 8', '"dim": 9')), "table shape"),
    (lambda d: (d / "encoder.json").write_text(
        (d / "encoder.json").read_text().replace('"kind": "static"', '"kind": "table"')),
     "unknown encoder kind 'table'"),
])
def test_a_damaged_folder_is_refused(tiny_static, damage, error):
    damage(tiny_static)
    with pytest.raises(ValueError, match=error):
        load_encoder(tiny_static)


def test_a_missing_folder_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="contextforge setup"):
        load_encoder(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="distill_static"):
        StaticEncoder.load(tmp_path / "nothing")
    with pytest.raises(StaticEncoderError):
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "encoder.json").write_text('{"id": "x"}')
        StaticEncoder.load(bad)


def test_serving_a_static_encoder_imports_neither_torch_nor_model2vec(tiny_static):
    code = (
        "import sys\n"
        "import router.engine, router.encoders, router.static_encoder, router.embedding\n"
        f"enc = router.encoders.load_encoder({str(tiny_static)!r})\n"
        "enc.encode(['hello there'])\n"
        "print(sorted(m for m in ('torch', 'model2vec', 'transformers', 'sentence_transformers')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
