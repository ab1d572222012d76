"""training.data: built-in datasets, user JSONL/CSV files, pairs, and the datasets manifest."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from training.builtin_data import DATA_DIR, count_tokens, load_prices
from training.data import DataError, Pairs, load, load_pairs

PRICES = {"big": {"input": 10.0, "output": 30.0}, "small": {"input": 0.5, "output": 1.0}}


def _check_table(table, n: int, n_models: int) -> None:
    assert len(table) == n == len(table.prompts)
    assert len(table.models) == n_models == len(set(table.models))
    scores = table.scores[~np.isnan(table.scores)]
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    assert np.isfinite(table.costs).all() and (table.costs > 0).all()
    assert all(isinstance(p, str) and p for p in table.prompts)
    assert table.meta["description"] and table.meta["cost_note"]


# --- built-in datasets ---------------------------------------------------------------------


def test_routerbench():
    t = load("routerbench")
    _check_table(t, 3178, 11)
    assert t.cost_source == "real"
    assert Counter(t.splits.tolist()) == {"train": 2225, "test": 953}
    assert Counter(zip(t.tasks.tolist(), t.splits.tolist(), strict=True)) == {
        ("arc_challenge", "train"): 1039,
        ("arc_challenge", "test"): 445,
        ("mbpp", "train"): 299,
        ("mbpp", "test"): 128,
        ("winogrande", "train"): 887,
        ("winogrande", "test"): 380,
    }
    assert set(np.unique(t.scores[~np.isnan(t.scores)])) == {0.0, 1.0}
    assert int(np.isnan(t.scores).sum()) == 154  # empty cells of 8 ARC questions split in two
    assert not any(p.startswith("['") for p in t.prompts)  # list literals parsed
    assert set(t.meta["responses"]) == set(t.models)
    assert all(len(r) == len(t) for r in t.meta["responses"].values())
    assert t.models == sorted(t.models) and "gpt-4-1106-preview" in t.models


def test_routerdc():
    t = load("routerdc")
    _check_table(t, 18060, 7)
    assert t.cost_source == "estimated"
    assert Counter(zip(t.tasks.tolist(), t.splits.tolist(), strict=True)) == {
        ("mmlu", "train"): 2000,
        ("mmlu", "test"): 4213,
        ("gsm8k", "train"): 1000,
        ("gsm8k", "test"): 1319,
        ("cmmlu", "train"): 2000,
        ("cmmlu", "test"): 3475,
        ("arc_challenge", "train"): 820,
        ("arc_challenge", "test"): 352,
        ("humaneval", "train"): 115,
        ("humaneval", "test"): 49,
        ("math_prealgebra", "ood"): 871,
        ("mbpp", "ood"): 500,
        ("ceval", "ood"): 1346,
    }
    raw = t.meta["raw_scores"]
    assert raw.shape == t.scores.shape
    binary = np.isin(t.tasks, ["mmlu", "cmmlu", "arc_challenge", "ceval", "math_prealgebra"])
    np.testing.assert_array_equal(t.scores[binary], (raw[binary] > 0).astype(float))
    np.testing.assert_array_equal(t.scores[~binary], raw[~binary])
    assert len(np.unique(t.scores[~binary])) > 2  # pass rates kept


def test_routellm_mmlu():
    t = load("routellm-mmlu")
    _check_table(t, 14037, 2)  # 14,042 less 5 contaminated
    assert t.meta["n_excluded"] == 5
    assert Counter(t.splits.tolist()) == {"train": 1500, "test": 12537}
    assert len(set(t.tasks.tolist())) == 57 and "abstract_algebra" in t.tasks
    assert t.models == ["gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"]
    assert set(np.unique(t.scores)) == {0.0, 1.0}
    assert (t.costs[:, 0] > 10 * t.costs[:, 1]).all()  # GPT-4 costs far more than Mixtral


def test_routellm_gsm8k():
    t = load("routellm-gsm8k")
    _check_table(t, 1307, 2)  # 1,319 less 12 contaminated
    assert t.meta["n_excluded"] == 12
    assert set(t.splits.tolist()) == {""} and set(t.tasks.tolist()) == {"gsm8k"}
    assert all(len(t.meta["responses"][m]) == 1307 for m in t.models)


def test_builtins_cached_and_read_only():
    t = load("routerbench")
    assert load("routerbench") is t
    with pytest.raises(ValueError, match="read-only"):
        t.scores[0, 0] = 0.5
    train = t.split("train")  # selections are copies, free to change
    train.scores[0, 0] = 0.5


def test_wrong_kind_of_builtin():
    with pytest.raises(DataError, match="load_pairs"):
        load("qqp")
    with pytest.raises(DataError, match="use load"):
        load_pairs("routerbench")


def test_qqp_pairs():
    p = load_pairs("qqp")
    assert isinstance(p, Pairs) and len(p) == 80854 == len(p.text_b)
    assert p.labels.dtype == np.int8 and int(p.labels.sum()) == 30141
    assert Counter(p.splits.tolist()) == {"train": 64684, "test": 16170}
    assert len(p.split("test")) == 16170


# --- manifest ------------------------------------------------------------------------------


def test_manifest_sha256_and_rows_listed():
    manifest = json.loads((DATA_DIR / "manifest.json").read_text())
    listed = {e["path"] for e in manifest["files"]}
    on_disk = {
        p.relative_to(DATA_DIR).as_posix()
        for p in DATA_DIR.rglob("*")
        if p.is_file() and p.name not in ("manifest.json", "README.md")
    }
    assert listed == on_disk
    for entry in manifest["files"]:
        data = (DATA_DIR / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
        assert entry["source"]["repository"] and entry["license"]


def test_prices_cover_estimated_builtins():
    prices = load_prices()
    for name in ("routerdc", "routellm-mmlu", "routellm-gsm8k"):
        assert set(load(name).models) <= set(prices)
    assert prices["gpt-4-1106-preview"]["input"] == 10.0


# --- user files ----------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_user_jsonl_pivot_and_costs(tmp_path):
    f = _write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "q1", "model": "small", "score": 1, "cost": 0.001, "split": "train"},
            {
                "prompt": "q1",
                "model": "big",
                "score": 0.5,
                "input_tokens": 100,
                "output_tokens": 50,
            },
            {"prompt": "a longer second question", "model": "big", "score": 0.0, "task": "math"},
        ],
    )
    t = load(f, prices=PRICES)
    assert t.prompts == ["q1", "a longer second question"]
    assert t.models == ["big", "small"]
    np.testing.assert_array_equal(t.scores, [[0.5, 1.0], [0.0, np.nan]])
    assert t.splits.tolist() == ["train", ""] and t.tasks.tolist() == ["", "math"]
    assert t.cost_source == "mixed"
    assert t.costs[0, 1] == 0.001  # given
    assert t.costs[0, 0] == pytest.approx((100 * 10 + 50 * 30) / 1e6)  # from token counts
    n_in = int(count_tokens(["a longer second question"])[0])
    assert t.costs[1, 0] == pytest.approx((n_in * 10 + 200 * 30) / 1e6)  # default output length
    assert np.isnan(t.costs[1, 1])


def test_user_csv_real_costs(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text(
        'prompt,model,score,cost\n"two\nlines",m1,0.25,0.01\n"two\nlines",m2,1,0.02\nq2,m1,0,0\n'
    )
    t = load(str(f))
    assert t.prompts == ["two\nlines", "q2"] and t.models == ["m1", "m2"]
    assert t.cost_source == "real"
    np.testing.assert_array_equal(t.scores, [[0.25, 1.0], [0.0, np.nan]])
    np.testing.assert_array_equal(t.costs, [[0.01, 0.02], [0.0, np.nan]])
    assert set(t.splits.tolist()) == {""}


def test_user_estimated_with_builtin_prices(tmp_path):
    f = _write_jsonl(
        tmp_path / "d.jsonl",
        [{"prompt": "q", "model": "gpt-4-1106-preview", "score": 1, "input_tokens": 1000}],
    )
    t = load(f)
    assert t.cost_source == "estimated"
    assert t.costs[0, 0] == pytest.approx((1000 * 10 + 200 * 30) / 1e6)


GOOD = {"prompt": "p", "model": "m", "score": 0.5}


@pytest.mark.parametrize(
    ("bad", "field", "text"),
    [
        ({"score": 1.5}, "score", "expected a number in [0, 1], got 1.5"),
        ({"score": "0.5"}, "score", 'expected a number in [0, 1], got "0.5"'),
        ({"score": True}, "score", "expected a number in [0, 1], got true"),
        ({"score": None}, "score", "missing required field"),
        ({"prompt": ""}, "prompt", "expected a non-empty string"),
        ({"model": 3}, "model", "expected a string, got 3"),
        ({"cost": -1}, "cost", "expected a cost in USD >= 0, got -1"),
        ({"input_tokens": 2.5}, "input_tokens", "expected a non-negative integer, got 2.5"),
        ({"output_tokens": -3}, "output_tokens", "expected a non-negative integer, got -3"),
        ({"split": 1}, "split", "expected a string, got 1"),
        ({"task": ["x"]}, "task", "expected a string"),
    ],
)
def test_user_jsonl_bad_field(tmp_path, bad, field, text):
    row = {**GOOD, "prompt": "other", **bad}
    f = _write_jsonl(tmp_path / "my.jsonl", [GOOD, "", {k: v for k, v in row.items()}])
    with pytest.raises(DataError) as e:
        load(f, prices=PRICES)
    assert str(e.value).startswith(f"{f}:3: field '{field}': {text}")


def test_user_jsonl_missing_field(tmp_path):
    f = _write_jsonl(tmp_path / "my.jsonl", [GOOD, {"prompt": "x", "model": "m"}])
    with pytest.raises(DataError, match=r"my\.jsonl:2: field 'score': missing required field"):
        load(f, prices=PRICES)


def test_user_jsonl_duplicate_pair_and_conflicts(tmp_path):
    f = _write_jsonl(tmp_path / "a.jsonl", [GOOD, {**GOOD, "score": 1}])
    with pytest.raises(DataError, match=r"a\.jsonl:2: field 'model': .*\(line 1\)"):
        load(f, prices=PRICES)
    f = _write_jsonl(
        tmp_path / "b.jsonl", [{**GOOD, "split": "train"}, {**GOOD, "model": "n", "split": "test"}]
    )
    with pytest.raises(DataError, match=r"b\.jsonl:2: field 'split': 'test' differs"):
        load(f, prices=PRICES)


def test_user_file_errors(tmp_path):
    bad_json = _write_jsonl(tmp_path / "j.jsonl", [GOOD, '{"prompt": "x",'])
    with pytest.raises(DataError, match=r"j\.jsonl:2: invalid JSON"):
        load(bad_json)
    not_object = _write_jsonl(tmp_path / "o.jsonl", ["[1, 2]"])
    with pytest.raises(DataError, match=r"o\.jsonl:1: expected a JSON object"):
        load(not_object)
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="empty file"):
        load(empty)
    header_only = tmp_path / "h.csv"
    header_only.write_text("prompt,model,score\n")
    with pytest.raises(DataError, match="empty file"):
        load(header_only)
    with pytest.raises(DataError, match=r"unknown file type '\.txt'"):
        load(tmp_path / "d.txt")
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="unknown file type"):
        load("not-a-dataset")


def test_user_csv_errors(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("prompt,model\nq,m\n")
    with pytest.raises(DataError, match=r"c\.csv:1: field 'score': missing required column"):
        load(f)
    f.write_text('prompt,model,score\nq,m,1\n"multi\nline",m,abc\n')
    with pytest.raises(DataError, match=r"c\.csv:3: field 'score': .* got \"abc\""):
        load(f)
    f.write_text("prompt,model,score\nq,m,1\nr,m,nan\n")
    with pytest.raises(DataError, match=r"c\.csv:3: field 'score': .* got nan"):
        load(f)
    f.write_text("prompt,model,score\nq,m,1,extra\n")
    with pytest.raises(DataError, match=r"c\.csv:2: 4 fields"):
        load(f)
    f.write_text("prompt,model,score\nq,,1\n")
    with pytest.raises(DataError, match=r"c\.csv:2: field 'model': missing required field"):
        load(f)


def test_user_missing_price(tmp_path):
    f = _write_jsonl(
        tmp_path / "p.jsonl", [{**GOOD, "cost": 0.1}, {**GOOD, "model": "unpriced-model"}]
    )
    with pytest.raises(DataError, match=r"p\.jsonl:2: field 'cost': .*'unpriced-model'.*add"):
        load(f, prices=PRICES)


def test_user_pairs(tmp_path):
    f = _write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"text_a": "how old are you", "text_b": "what is your age", "label": 1},
            {"text_a": "a", "text_b": "b", "label": 0},
        ],
    )
    p = load_pairs(f)
    assert p.text_a == ["how old are you", "a"] and p.labels.tolist() == [1, 0]
    assert p.splits.tolist() == ["", ""]
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"text_a": "a", "text_b": "b", "label": 2}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'label': expected 0 or 1, got 2"):
        load_pairs(bad)
