"""The static encoder's distillation: its numeric pieces here; the built table (slow) below."""

import json

import numpy as np
import pytest

from training.distill_static import pca_scores, rounding_margin, sif_weights, static_name
from training.encoders import ENCODERS_DIR, encoder_folder


def test_sif_weights_discount_frequent_early_tokens():
    w = sif_weights(1000)
    assert w.shape == (1000,) and np.all((w > 0) & (w < 1)) and np.all(np.diff(w) > 0)
    p = (1 / np.arange(2, 5)) / (1 / np.arange(2, 5)).sum()
    np.testing.assert_allclose(sif_weights(3, 0.5), 0.5 / (0.5 + p))


def test_pca_scores_are_ordered_uncorrelated_and_signed():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 6)) * [5, 1, 3, 0.5, 2, 0.1]
    s = pca_scores(x, 3)
    var = s.var(axis=0)
    assert np.all(np.diff(var) < 0)  # largest variance first
    np.testing.assert_allclose(var, [25, 9, 4], rtol=0.2)
    cov = np.cov(s.T)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-9
    peak = np.abs(s).argmax(axis=0)
    assert np.all(s[peak, range(3)] > 0)  # signs fixed, not left to LAPACK
    # hence sign-free of the input
    np.testing.assert_array_equal(pca_scores(-x, 3), pca_scores(x, 3))


def test_rounding_margin_measures_distance_to_a_float16_boundary():
    ulp = float(np.spacing(np.float16(1.5)))  # 2**-10 on both sides of 1.5
    assert rounding_margin(np.array([1.5])) == pytest.approx((ulp / 2) / 1.5)
    assert rounding_margin(np.array([1.5 + ulp / 2])) == 0.0  # a tie: one bit from flipping
    assert rounding_margin(np.array([-1.5 - ulp / 4, 0.0])) == pytest.approx(
        (ulp / 4) / (1.5 + ulp / 4))
    # Below a power of two the float16 grid is twice as fine: the nearer boundary is there.
    assert rounding_margin(np.array([1.0])) == pytest.approx(float(np.spacing(np.float16(1))) / 4)


def test_unknown_encoder_choices_are_clear(tmp_path):
    with pytest.raises(ValueError, match="not minilm, static"):
        encoder_folder("no-such-encoder")


BUILT = ENCODERS_DIR / static_name()


@pytest.mark.slow
@pytest.mark.skipif(not (BUILT / "encoder.json").exists(), reason="static encoder not built")
def test_the_built_table_is_what_its_manifest_says_and_routes_like_minilm(encoder):
    from router.encoders import load_encoder

    static = load_encoder(BUILT)  # hashes both files against the manifest
    manifest = json.loads((BUILT / "encoder.json").read_text())
    assert static.kind == "static" and static.dim == manifest["distill"]["pca_dims"] == 256
    # float64 noise between machines is ~1e-15 relative: far from changing a float16 bit
    assert manifest["distill"]["rounding_margin"] > 1e-12
    texts = ["Which of these is a renewable energy source? A) coal B) wind",
             "Which of the following is a noble gas? A) neon B) iron",
             "def fib(n):\n    # return the n-th Fibonacci number\n",
             "def reverse(xs):\n    # reverse a list in place\n"]
    for t in texts:
        assert static.count_tokens(t) == encoder.count_tokens(t)
    s = static.encode(texts)
    # Like MiniLM, the two quiz questions are closer to each other than to the code prompts.
    assert s[0] @ s[1] > max(s[0] @ s[2], s[0] @ s[3], s[1] @ s[2], s[1] @ s[3])
    assert s[2] @ s[3] > max(s[0] @ s[2], s[1] @ s[3])
