import math

import msgspec
import numpy as np
import pytest

from router.artifact import CostModel, DataRef, EncoderRef, RouterSpec, load_router, save_router
from router.features import NAMES, SurfaceScaler, raw_features
from training.estimators import LinearRouter


def test_raw_features_count_words_numbers_lines_and_script():
    prompt = "Few-shot exemplar.\n\nJane has 3 apples and buys 12.5 more.\nHow many?"
    text = "Jane has 3 apples and buys 12.5 more.\nHow many?"
    f = raw_features([prompt], [text])[0]
    # words: Jane has 3 apples and buys 12 5 more How many -> \w+ splits "12.5" into two
    assert f[0] == pytest.approx(math.log1p(11))
    assert f[1] == pytest.approx(math.log1p(len(prompt)))
    assert f[2] == pytest.approx(math.log1p(2))  # "3" and "12.5"
    assert f[3] == pytest.approx(math.log1p(2))
    assert f[4] == 0.0
    assert raw_features(["漢字ab"], ["漢字ab"])[0, 4] == pytest.approx(0.5)


def test_scaler_standardises_on_the_training_rows_and_weights_the_result():
    prompts = ["a", "a b c", "a b c d e f g 1 2 3", "x\ny\nz"]
    s = SurfaceScaler.fit(prompts, prompts, weight=0.5)
    z = s.transform(prompts, prompts)
    assert z.shape == (4, len(NAMES)) and z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-6)
    varying = np.array(s.std) != 1.0
    np.testing.assert_allclose(z.std(axis=0)[varying], 0.5, rtol=1e-5)
    # non_ascii_share is 0 on every row: kept at 0, not divided by zero
    assert not varying[NAMES.index("non_ascii_share")]
    assert np.all(z[:, NAMES.index("non_ascii_share")] == 0)
    joined = s.join(np.ones((4, 3)), prompts, prompts)
    assert joined.shape == (4, 3 + len(NAMES))


def test_a_scaler_from_another_release_is_refused():
    s = SurfaceScaler(names=["log_words"], mean=[0.0], std=[1.0])
    with pytest.raises(ValueError, match="surface features"):
        s.transform(["a"], ["a"])


def test_a_router_with_surface_features_round_trips_and_needs_the_prompts(tmp_path):
    # The label depends only on length, which an embedding of constant vectors cannot see.
    rng = np.random.default_rng(0)
    prompts = [" ".join(["w"] * int(n)) for n in rng.integers(1, 60, size=400)]
    y = np.array([[float(len(p.split()) > 30), float(len(p.split()) <= 30)] for p in prompts])
    emb = np.tile(np.eye(4, dtype=np.float32)[0], (400, 1))
    scaler = SurfaceScaler.fit(prompts, prompts)
    est = LinearRouter().fit(scaler.join(emb, prompts, prompts), y)
    spec = RouterSpec(
        name="s", kind="linear", models=["long", "short"], params={},
        encoder=EncoderRef(id="enc", sha256="0" * 64),
        data=DataRef(name="synthetic", sha256="1" * 64, rows=400, splits=["train"]),
        cost_model=CostModel(intercept=[0.0, 0.0], per_input_token=[0.0, 0.0]),
        surface=scaler)
    save_router(tmp_path / "r", spec, est.predictor_)
    loaded = load_router(tmp_path / "r")
    assert msgspec.json.decode((tmp_path / "r" / "router.json").read_bytes())["surface"][
        "names"] == list(NAMES)
    q = loaded.predict(emb[:2], ["w " * 50, "w w"])
    assert q[0, 0] > 0.8 and q[1, 1] > 0.8
    with pytest.raises(ValueError, match="pass the 2 prompts"):
        loaded.predict(emb[:2])
