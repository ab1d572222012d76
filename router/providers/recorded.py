"""Recorded answers: what each RouterBench model really answered, keyed by its prompt.

The simulated provider answers a prompt from the shipped data with that data model's real
recorded answer (a deployment's ``simulated.answers_as``, else the catalog model's own name or
its ``stands_in_for``), so a demo
or an offline replay through the gateway shows real answers, and scores, for those prompts.

RouterBench's CSVs hold each prompt and each model's answer as Python list literals (one item
per turn); the key is the prompt's last turn with whitespace collapsed, which is what a client
sends as its last user message.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import logging
from pathlib import Path

log = logging.getLogger("contextforge.providers")

ROUTERBENCH = Path(__file__).resolve().parents[2] / "datasets" / "routerbench"
_SUFFIX = "|model_response"


def prompt_key(text: str) -> str:
    return " ".join(text.split())


def turns(cell: str) -> list[str]:
    """A RouterBench cell: a Python list literal of strings (one per turn)."""
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError):
        return [cell]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


class RecordedAnswers:
    """(data model, prompt) -> the answer that model gave in the data."""

    def __init__(self, answers: dict[str, dict[str, str]] | None = None):
        self._answers = answers or {}
        self._models: set[str] | None = None

    def __len__(self) -> int:
        return len(self._answers)

    @classmethod
    def load(cls, folder: Path = ROUTERBENCH) -> RecordedAnswers:
        """Every ``*.csv.gz`` in ``folder`` (an empty index if there is none)."""
        csv.field_size_limit(1 << 30)
        answers: dict[str, dict[str, str]] = {}
        for path in sorted(folder.glob("*.csv.gz")):
            with gzip.open(path, "rb") as raw:
                rows = csv.DictReader(io.TextIOWrapper(raw, "utf-8", newline=""))
                for row in rows:
                    prompt = turns(row.get("prompt", ""))
                    if not prompt or not prompt[-1].strip():
                        continue
                    per_model = answers.setdefault(prompt_key(prompt[-1]), {})
                    for column, cell in row.items():
                        if column and column.endswith(_SUFFIX) and cell:
                            per_model[column[: -len(_SUFFIX)]] = "\n".join(turns(cell)).strip()
        log.info("recorded answers: %d prompts from %s", len(answers), folder)
        return cls(answers)

    def knows(self, data_model: str) -> bool:
        """Whether any prompt has a recorded answer of ``data_model``."""
        if self._models is None:
            self._models = {m for per in self._answers.values() for m in per}
        return data_model in self._models

    def answer(self, data_model: str | None, prompt: str) -> str | None:
        if data_model is None:
            return None
        return self._answers.get(prompt_key(prompt), {}).get(data_model)
