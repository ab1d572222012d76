"""Build the shipped starter pack from RouterBench's *train* files (run once; output committed).

    python -m eval.build_pack            # writes datasets/packs/starter.jsonl.gz, prints counts

RouterBench has no answer column, so each prompt's reference letter is recovered from the
models' own answers: the models that scored 1 and answered *strictly* a single letter (after
stripping whitespace, surrounding parentheses and a trailing ``)`` or ``.``) must all name the
same letter, one of the question's choices, and no model that scored 0 with a strict letter
may name it. Prompts failing a rule are dropped with a reason (:class:`Dropped`), as are
prompts with an unscored model, and prompts whose text or sample id occurs more than once in
the shipped data (the simulated provider looks recorded answers up by prompt text, so a
repeated text could answer with another row's outcome).

MBPP is left out: its rows carry no tests and its prompts do not name the function MBPP's tests
call, so no reference scorer could reproduce its outcomes.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import numpy as np

from eval.pack import (
    DATA_DIR,
    PACKS_DIR,
    RESPONSE_SUFFIX,
    PackReference,
    PackRow,
    PackSource,
    routerbench_rows,
    write_pack,
)
from router.providers.recorded import prompt_key, turns

# (file under datasets/, task) of the train files a pack samples; the stems are RouterBench's.
SOURCES = (("routerbench/arc_challenge_train.csv.gz", "arc_challenge"),
           ("routerbench/winograde_train.csv.gz", "winogrande"))
PER_TASK = 150
SEED = 0
_CHOICE_LINE = re.compile(r"^([A-Z])\) ?(.*)$")


def strict_letter(answer: str) -> str | None:
    """The letter an answer names when it is nothing else: ``"B"``, ``" (C) "``, ``"D."``."""
    text = answer.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    text = text.removesuffix(")").removesuffix(".").strip()
    return text if len(text) == 1 and "A" <= text <= "Z" else None


def parse_choices(prompt: str) -> dict[str, str]:
    """The ``A) ...`` lines of the prompt's final question (after its last blank line)."""
    final = prompt.rsplit("\n\n", 1)[-1]
    choices: dict[str, str] = {}
    for line in final.splitlines():
        m = _CHOICE_LINE.match(line.strip())
        if m:
            choices[m.group(1)] = m.group(2).strip()
    return choices


def recover_reference(outcomes: Mapping[str, float], answers: Mapping[str, str],
                      choices: Mapping[str, str]) -> tuple[str | None, str]:
    """(reference letter, "") or (None, why not) from each model's 0/1 outcome and answer."""
    right = {strict_letter(answers.get(m, "")) for m, v in outcomes.items() if v == 1.0}
    right.discard(None)
    if not right:
        return None, "no strict correct answer"
    if len(right) > 1:
        return None, "strict correct answers disagree"
    (letter,) = right
    if letter not in choices:
        return None, "reference is not one of the choices"
    wrong = {strict_letter(answers.get(m, "")) for m, v in outcomes.items() if v == 0.0}
    if letter in wrong:
        return None, "a strict incorrect answer names the reference"
    return letter, ""


@dataclass
class Built:
    """Candidate rows per task and, per reason, how many prompts were dropped."""

    candidates: dict[str, list[PackRow]] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)


def _shipped_keys(data_dir: Path) -> Counter[str]:
    """How often each prompt text occurs across every shipped RouterBench file."""
    keys: Counter[str] = Counter()
    for path in sorted((data_dir / "routerbench").glob("*.csv.gz")):
        for rec in routerbench_rows(path):
            keys[prompt_key(turns(rec.get("prompt", ""))[-1])] += 1
    return keys


def candidates(sources: Iterable[tuple[str, str]] = SOURCES, data_dir: Path = DATA_DIR,
               keys: Counter[str] | None = None) -> Built:
    """Every prompt of ``sources`` that passes the rules, as a pack row, and the drop counts."""
    keys = _shipped_keys(data_dir) if keys is None else keys
    built = Built()
    for file, task in sources:
        records = list(routerbench_rows(data_dir / file))
        ids = Counter(r["sample_id"] for r in records)
        models = sorted(c[: -len(RESPONSE_SUFFIX)] for c in (records[0] if records else ())
                        if c.endswith(RESPONSE_SUFFIX))
        rows = built.candidates.setdefault(task, [])
        for rec in records:
            prompt = turns(rec["prompt"])[-1]
            why = ""
            if any(rec.get(m, "") == "" for m in models):
                why = "a model has no recorded outcome"
            elif keys[prompt_key(prompt)] > 1 or ids[rec["sample_id"]] > 1:
                why = "prompt or sample id occurs more than once in the data"
            choices = parse_choices(prompt)
            letter = None
            if not why and not choices:
                why = "no choices in the final question"
            if not why:
                answers = {m: "\n".join(turns(rec[m + RESPONSE_SUFFIX])) for m in models}
                outcomes = {m: float(rec[m]) for m in models}
                letter, why = recover_reference(outcomes, answers, choices)
            if why:
                built.dropped[f"{task}: {why}"] += 1
                continue
            rows.append(PackRow(
                id=f"{task}/{rec['sample_id']}", task=task, prompt=prompt,
                reference=PackReference(kind="choice", answer=letter, choices=choices),
                source=PackSource(file=file, sample_id=rec["sample_id"])))
    return built


def stratified(by_task: Mapping[str, Sequence[PackRow]], per_task: int = PER_TASK,
               seed: int = SEED) -> list[PackRow]:
    """``per_task`` rows of each task (all of a smaller one), drawn with a seeded generator,
    each task's in data order, the tasks interleaved: any prefix of the pack (``collect
    --limit``, a run the spend cap stopped) covers every task alike."""
    rng = np.random.default_rng(seed)
    drawn = []
    for rows in by_task.values():
        take = np.sort(rng.choice(len(rows), min(per_task, len(rows)), replace=False))
        drawn.append([rows[i] for i in take])
    return [r for group in zip_longest(*drawn) for r in group if r is not None]


def main(argv: list[str] | None = None) -> int:
    """Build the starter pack and print its composition and what the rules dropped."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(PACKS_DIR / "starter.jsonl.gz"))
    p.add_argument("--per-task", type=int, default=PER_TASK)
    args = p.parse_args(argv)
    built = candidates()
    rows = stratified(built.candidates, args.per_task)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_pack(args.out, rows)
    for task, cands in built.candidates.items():
        print(f"{task}: {len(cands)} eligible, {sum(r.task == task for r in rows)} in the pack")
    for why, n in sorted(built.dropped.items()):
        print(f"  dropped {n:4d}  {why}")
    print(f"{args.out}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
