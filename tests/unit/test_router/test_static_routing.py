"""Routing on a static encoder: training records it, the engine refuses another table, and
the transformer stays what needs MiniLM's vectors (``engine.text_encoder``)."""

import json
import shutil

import numpy as np
import pytest

from router.artifact import ArtifactError, load_router
from router.config import ConfigError
from router.encoders import load_encoder
from router.engine import RoutingEngine
from tests.static_tables import build_tiny_static, topics_table, two_model_config
from training.fit import train_router


@pytest.fixture()
def trained_copy(static_router, tmp_path):
    folder, out = static_router
    copy = tmp_path / "tiny-static"
    shutil.copytree(folder, copy)
    return copy, out


def test_training_records_the_static_encoder_and_reads_no_layers(static_router):
    folder, out = static_router
    spec = json.loads((out / "router.json").read_text())
    table_sha = json.loads((folder / "encoder.json").read_text())["sha256"]["table"]
    assert spec["encoder"] == {"id": "tiny-static", "sha256": table_sha}
    assert spec["layers"] == []
    with np.load(out / "weights.npz") as w:
        assert w["x"].shape == (80, 8 + 5)  # the table's 8 dimensions, 5 surface features
    with pytest.raises(ValueError, match="no inner layers"):
        train_router(topics_table(), out.parent / "r2", kind="knn",
                     encoder=load_encoder(folder), layers=(2, 3))


def test_engine_routes_on_the_table_and_serves_the_transformer_as_text_encoder(
        tmp_path, static_router, encoder_dir):
    folder, out = static_router
    engine = RoutingEngine.from_config(two_model_config(tmp_path, folder, encoder_dir, out))
    d = engine.decide("Question 99: explain tax law with an example.")
    assert d.encoder == "tiny-static" and d.model in {"big", "small"}
    assert d.input_tokens == engine.encoder.count_tokens(
        "Question 99: explain tax law with an example.")
    assert not engine.text.loaded  # routing alone never loads the transformer
    text = engine.text_encoder
    assert text.kind == "onnx" and text.id == "all-MiniLM-L6-v2" and text.dim == 384
    assert engine.text.loaded
    again = RoutingEngine(engine.config, engine.encoder, engine.router, text=engine.text)
    assert again.text_encoder is text  # engines rebuilt on reconfigure share the loaded one


def test_a_router_trained_on_another_table_is_refused(tmp_path, trained_copy, encoder_dir):
    folder, out = trained_copy
    build_tiny_static(folder, seed=1)  # "this machine's distillation came out different"
    with pytest.raises(ConfigError, match="table sha256"):
        RoutingEngine.from_config(two_model_config(tmp_path, folder, encoder_dir, out))
    with pytest.raises(ArtifactError, match="contextforge setup --retrain"):
        load_router(out).check_encoder(load_encoder(folder))


def test_text_path_must_be_a_built_transformer(tmp_path, static_router):
    folder, out = static_router
    with pytest.raises(ConfigError, match=r"encoder.text_path: .* static encoder"):
        RoutingEngine.from_config(two_model_config(tmp_path, folder, folder, out))
    with pytest.raises(ConfigError, match=r"encoder.text_path: .*contextforge setup"):
        RoutingEngine.from_config(
            two_model_config(tmp_path, folder, tmp_path / "none", out))


def test_an_onnx_router_is_its_own_text_encoder(tmp_path, encoder, encoder_dir, embed_cache):
    out = train_router(topics_table(), tmp_path / "router", kind="knn", encoder=encoder,
                       layers=(), calibrate=False)
    engine = RoutingEngine.from_config(
        two_model_config(tmp_path, encoder_dir, encoder_dir, out))
    assert engine.text.loaded and engine.text_encoder is engine.encoder
