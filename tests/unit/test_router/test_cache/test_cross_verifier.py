"""The verifier reading a cross-encoder (onnxruntime), on a tiny hand-made ONNX graph."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from router.cache import verifier as verifier_module
from router.cache.verifier import FEATURES, CrossEncoder, Trees, Verifier

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "how", "do", "i", "learn", "python", "fast", "?"]


def _write_cross_encoder(folder):
    """A fake cross-encoder: its logit is the number of tokens of the pair's second text (the
    token-type-1 positions, its [SEP] included) — enough to check inputs and batching."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(folder / "tokenizer.json"))
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    nodes = [helper.make_node("Mul", ["token_type_ids", "attention_mask"], ["kept"]),
             helper.make_node("Cast", ["kept"], ["kept_f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["kept_f", "axes"], ["logit"], keepdims=0)]
    graph = helper.make_graph(
        nodes, "fake", inputs,
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["batch"])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for name in ("model.onnx", "model.int8.onnx"):
        onnx.save(model, str(folder / name))
    return folder


def _vectors(n):
    v = np.random.default_rng(0).normal(size=(n, 384))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_cross_encoder_logits_follow_each_pair_across_padded_batches(tmp_path):
    ce = CrossEncoder.load(_write_cross_encoder(tmp_path / "ce"))
    a = ["how do i learn python", "python ?", "how"]
    b = ["learn python fast ?", "python", "how do i learn python fast ?"]
    assert ce.logits(a, b, batch_size=2).tolist() == [5.0, 2.0, 8.0]


def test_cross_encoder_verifier_round_trip_and_decision(tmp_path):
    _write_cross_encoder(tmp_path / "ce")
    v = Verifier(trees=None, threshold=4.0, target_false_hit_rate=0.01, cosine_threshold=0.9,
                 inputs="cross_encoder", cross_encoder_dir="ce")
    loaded = Verifier.load(v.save(tmp_path / "verifier.npz"))
    assert loaded.trees is None and loaded.cross_encoder is not None
    vec = _vectors(2)
    hits = loaded.decide(["how", "how"], ["learn python fast", "python"], vec, vec)
    assert hits.tolist() == [True, False]


def test_stacked_verifier_reads_the_features_then_the_logit(tmp_path):
    _write_cross_encoder(tmp_path / "ce")
    # One split on the logit (the column after the features): above 3 is +1, else -1.
    trees = Trees(roots=np.array([0]), feature=np.array([len(FEATURES), 0, 0]),
                  threshold=np.array([3.0, 0.0, 0.0]), left=np.array([1, -1, -1]),
                  right=np.array([2, -1, -1]), value=np.array([0.0, -1.0, 1.0]), baseline=0.0)
    v = Verifier(trees=trees, threshold=0.0, target_false_hit_rate=0.01, cosine_threshold=0.9,
                 inputs="features+cross_encoder", cross_encoder_dir="ce")
    loaded = Verifier.load(v.save(tmp_path / "verifier.npz"))
    vec = _vectors(2)
    assert loaded.score(["how", "how"], ["learn python fast", "python"], vec, vec).tolist() == [
        1.0, -1.0]


def test_default_load_prefers_the_built_cross_encoder_verifier(tmp_path, monkeypatch):
    _write_cross_encoder(tmp_path / "cross_encoder")
    built = Verifier(trees=None, threshold=4.0, target_false_hit_rate=0.01,
                     cosine_threshold=0.5, inputs="cross_encoder", cross_encoder_dir=".")
    built.save(tmp_path / "cross_encoder" / "verifier.npz")
    old = Verifier(trees=Trees(roots=np.array([0]), feature=np.array([0]),
                               threshold=np.array([0.0]), left=np.array([-1]),
                               right=np.array([-1]), value=np.array([1.0]), baseline=0.0),
                   threshold=0.0, target_false_hit_rate=0.01, cosine_threshold=0.9)
    default = old.save(tmp_path / "verifier.npz")
    monkeypatch.setattr(verifier_module, "CROSS_ENCODER_PATH",
                        tmp_path / "cross_encoder" / "verifier.npz")
    monkeypatch.setattr(verifier_module, "DEFAULT_PATH", default)
    # The default argument was bound at definition: pass the (patched) default path itself.
    assert Verifier.load(default).inputs == "cross_encoder"
    (tmp_path / "cross_encoder" / "verifier.npz").unlink()
    assert Verifier.load(default).inputs == "features+vectors"


def test_a_verifier_needing_a_cross_encoder_refuses_to_score_without_it():
    v = Verifier(trees=None, threshold=0.0, target_false_hit_rate=0.01, cosine_threshold=0.9,
                 inputs="cross_encoder")
    vec = _vectors(1)
    with pytest.raises(ValueError, match="no cross-encoder"):
        v.score(["a"], ["b"], vec, vec)
