import numpy as np

from training.embed_cache import cache_key, embed_cached


class _FakeEncoder:
    """dim 2; the vector of text t and block b is (len(t), b): rows are easy to check by eye."""

    sha256 = "ab" * 32
    dim = 2

    def __init__(self):
        self.encoded: list[str] = []

    def encode_routing(self, texts, layers=(), batch_size=64):
        self.encoded += list(texts)
        blocks = [0, *(10 + k for k in layers)]
        return np.array([[v for b in blocks for v in (len(t), b)] for t in texts], np.float32)


def test_rows_come_back_in_order_and_only_new_texts_are_encoded(tmp_path):
    enc = _FakeEncoder()
    first = embed_cached(enc, ["a", "bbb", "a"], tmp_path)
    np.testing.assert_array_equal(first, [[1, 0], [3, 0], [1, 0]])
    assert enc.encoded == ["a", "bbb"]  # the repeated text once
    again = embed_cached(enc, ["cc", "bbb"], tmp_path)
    np.testing.assert_array_equal(again, [[2, 0], [3, 0]])
    assert enc.encoded == ["a", "bbb", "cc"]
    (cached,) = tmp_path.iterdir()
    assert cached.stat().st_mode & 0o777 == 0o644  # readable by whoever shares the cache


def test_narrower_layer_sets_are_cut_from_a_wider_file(tmp_path):
    enc = _FakeEncoder()
    wide = embed_cached(enc, ["a", "bb"], tmp_path, layers=(2, 3, 4))
    np.testing.assert_array_equal(wide[1], [2, 0, 2, 12, 2, 13, 2, 14])
    enc.encoded.clear()
    np.testing.assert_array_equal(embed_cached(enc, ["bb", "a"], tmp_path),
                                  [[2, 0], [1, 0]])
    np.testing.assert_array_equal(embed_cached(enc, ["bb", "new"], tmp_path, layers=(4, 2)),
                                  [[2, 0, 2, 14, 2, 12], [3, 0, 3, 14, 3, 12]])
    assert enc.encoded == ["new"]  # only the text no file held
    # A layer the wider file lacks means encoding, not a wrong cut.
    np.testing.assert_array_equal(embed_cached(enc, ["a"], tmp_path, layers=(1,)),
                                  [[1, 0, 1, 11]])
    assert enc.encoded == ["new", "a"]


def test_unreadable_or_foreign_wider_files_mean_encoding_not_errors(tmp_path):
    enc = _FakeEncoder()
    sha = enc.sha256[:16]
    (tmp_path / f"{sha}-l2-l3.npz").write_bytes(b"")  # truncated by a crash
    np.savez(tmp_path / f"{sha}-l2-l4.npz", keys=np.array([cache_key("a")], dtype="S16"),
             vectors=np.zeros((1, 3)))  # the wrong width for two layers
    (tmp_path / f"{sha}-l 2.npz").write_bytes(b"")  # not a name the cache writes
    np.testing.assert_array_equal(embed_cached(enc, ["a"], tmp_path, layers=(2,)),
                                  [[1, 0, 1, 12]])
    assert enc.encoded == ["a"]
