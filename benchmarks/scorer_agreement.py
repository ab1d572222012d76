"""How often the ``choice`` (and ``numeric``) scorers agree with recorded 0/1 outcomes.

    python benchmarks/scorer_agreement.py [--split train|test] [--examples 5] [--json FILE]

RouterBench ships, per prompt of ARC-Challenge and Winogrande, 11 models' real answers and a
0/1 correctness, but not the reference letter. The reference is recovered as the letter that
``extract_choice`` reads from the answers of the models that scored 1.0 (the majority when they
disagree); prompts no model answered correctly have no recoverable reference and are skipped.
Every (prompt, model) answer with a recorded outcome is then scored with ``choice`` against
that reference and the prompt's own options, and compared with the recorded outcome.
The extractor was tuned on the ``train`` split only; ``--split test`` is the held-out check.

The same is done for ``numeric`` on RouteLLM's GSM8K answers (Mixtral-8x7B and GPT-4, correct or
not; the reference is the number read from a correct answer). That file has no split and was
looked at while writing the extractor, so its figure is a sanity check, not a held-out one.
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.scoring import (  # noqa: E402
    choice,
    extract_choice,
    extract_number,
    numeric,
    prompt_options,
)

DATA = ROOT / "datasets" / "routerbench"
GSM8K = ROOT / "datasets" / "routellm" / "gsm8k" / "gsm8k_responses.csv.gz"
TASKS = ("arc_challenge", "winograde")
csv.field_size_limit(sys.maxsize)  # cells hold whole 5-shot prompts


def _rows(task: str, split: str) -> tuple[list[str], list[dict[str, str]]]:
    with gzip.open(DATA / f"{task}_{split}.csv.gz", "rt", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    suffix = "|model_response"
    models = [c[: -len(suffix)] for c in reader.fieldnames or [] if c.endswith(suffix)]
    return models, rows


def _first(cell: str) -> str:
    """The answer text of a response cell (a Python list literal holding one string)."""
    value = ast.literal_eval(cell)
    return value[0] if isinstance(value, list) and value else str(value)


def _reference(answers: dict[str, str], outcomes: dict[str, float], letters: str,
               options: dict[str, str]) -> tuple[str | None, bool]:
    """The majority letter of the correct models' answers, and whether they all agreed."""
    votes = Counter()
    for model, outcome in outcomes.items():
        if outcome == 1.0:
            letter, _ = extract_choice(answers[model], letters, options)
            if letter is not None and letter in letters:
                votes[letter] += 1
    if not votes:
        return None, True
    (best, _), *rest = votes.most_common()
    return best, not rest


def measure(task: str, split: str, examples: int) -> dict:
    """Agreement of ``choice`` with the recorded outcomes of one task's split."""
    models, rows = _rows(task, split)
    n = agree = baseline = no_ref = split_votes = 0
    wrong: Counter[str] = Counter()  # "recorded -> scored"
    shown: list[dict] = []
    for row in rows:
        prompt = _first(row["prompt"])
        options = prompt_options(prompt)
        letters = "".join(options) or "ABCD"
        answers = {m: _first(row[f"{m}|model_response"]) for m in models}
        outcomes = {m: float(row[m]) for m in models if row[m] != ""}
        ref, unanimous = _reference(answers, outcomes, letters, options)
        if ref is None:
            no_ref += 1
            continue
        split_votes += not unanimous
        for model, outcome in outcomes.items():
            score = choice(answers[model], ref, choices=options, letters=letters)
            n += 1
            baseline += float(answers[model].strip() == ref) == outcome
            if score.value == outcome:
                agree += 1
                continue
            wrong[f"{outcome:.0f}->{score.value:.0f}"] += 1
            if len(shown) < examples:
                shown.append({"sample_id": row["sample_id"], "model": model,
                              "answer": answers[model][:120], "recorded": outcome,
                              "scored": score.value, "detail": score.detail})
    return {"task": task, "split": split, "prompts": len(rows), "no_reference": no_ref,
            "split_votes": split_votes, "n": n, "agreement": agree / n if n else None,
            "baseline_exact_letter": baseline / n if n else None,
            "disagreements": dict(wrong), "examples": shown}


def measure_numeric(examples: int) -> dict:
    """Agreement of ``numeric`` with RouteLLM's recorded GSM8K outcomes."""
    with gzip.open(GSM8K, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    models = [c[: -len("_response")] for c in rows[0] if c.endswith("_response")]
    n = agree = no_ref = 0
    wrong: Counter[str] = Counter()
    shown: list[dict] = []
    for i, row in enumerate(rows):
        outcomes = {m: float(row[m] == "True") for m in models}
        refs = [got for m in models if outcomes[m]
                and (got := extract_number(row[f"{m}_response"])[0]) is not None]
        if not refs:
            no_ref += 1
            continue
        for model, outcome in outcomes.items():
            score = numeric(row[f"{model}_response"], repr(refs[0].value))
            n += 1
            if score.value == outcome:
                agree += 1
                continue
            wrong[f"{outcome:.0f}->{score.value:.0f}"] += 1
            if len(shown) < examples:
                shown.append({"row": i, "model": model,
                              "answer_end": row[f"{model}_response"][-120:],
                              "recorded": outcome, "scored": score.value,
                              "detail": score.detail})
    return {"task": "gsm8k", "split": "all", "prompts": len(rows), "no_reference": no_ref,
            "n": n, "agreement": agree / n if n else None, "disagreements": dict(wrong),
            "examples": shown}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="train", choices=("train", "test"))
    ap.add_argument("--examples", type=int, default=5, help="disagreements listed per task")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()

    results = [measure(task, args.split, args.examples) for task in TASKS]
    gsm8k = measure_numeric(args.examples)
    print("choice")
    print(f"{'task':<15}{'split':<7}{'prompts':>8}{'no ref':>8}{'pairs':>8}"
          f"{'agree':>9}{'exact-letter':>14}  disagreements (recorded->scored)")
    for r in results:
        print(f"{r['task']:<15}{r['split']:<7}{r['prompts']:>8}{r['no_reference']:>8}{r['n']:>8}"
              f"{r['agreement']:>9.2%}{r['baseline_exact_letter']:>14.2%}  {r['disagreements']}")
    for r in results:
        for ex in r["examples"]:
            print(f"  {r['task']} {ex['sample_id']} {ex['model']}: {ex['answer']!r} "
                  f"recorded {ex['recorded']:.0f}, scored {ex['scored']:.0f} ({ex['detail']})")
    print("\nnumeric (RouteLLM GSM8K, no split)")
    print(f"{'task':<15}{'prompts':>8}{'no ref':>8}{'pairs':>8}{'agree':>9}  disagreements")
    print(f"{'gsm8k':<15}{gsm8k['prompts']:>8}{gsm8k['no_reference']:>8}{gsm8k['n']:>8}"
          f"{gsm8k['agreement']:>9.2%}  {gsm8k['disagreements']}")
    for ex in gsm8k["examples"]:
        print(f"  row {ex['row']} {ex['model']}: ...{ex['answer_end']!r} recorded "
              f"{ex['recorded']:.0f}, scored {ex['scored']:.0f} ({ex['detail']})")
    if args.json:
        args.json.write_text(json.dumps({"choice": results, "numeric": gsm8k}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
