"""What PII redaction (``traffic.redact``, router/redact.py) costs per text and per logged row.

    python benchmarks/redaction.py [--rows 20000] [--json FILE]

Texts: public prompts and answers shipped in datasets/ (MT-Bench questions, GSM8K prompts,
RouterBench's 5-shot prompts and its models' answers), as they are and with one sentence of
PII appended (an email, an international phone number and a card number). Each set is redacted
once to warm up, then timed text by text: mean and p99 in microseconds. ``changed`` counts the
texts without appended PII that redaction changed anyway (long runs of numbers in answers:
a bare 10-digit number valid in the US, a Luhn-valid 13-19 digit one).

Then three texts made of numbers (the worst cases found), timed once each. Then the traffic
log's writer: ``--rows`` rows (a RouterBench prompt and answer each, no
embedding) written to a fresh SQLite log with and without a redactor; rows/s from the first
write to the last commit. The writer redacts, so this is its ceiling on one core.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.redact import Redactor  # noqa: E402
from router.traffic import TrafficLog, TrafficRecord  # noqa: E402
from training.data import load  # noqa: E402

PII = " Reach me at ada.lovelace@example.com or +44 20 7946 0958; card 4111 1111 1111 1111."
REDACTED = " Reach me at [EMAIL] or [PHONE]; card [CARD]."


def text_sets() -> dict[str, list[str]]:
    with gzip.open(ROOT / "datasets/routellm/mt_bench/question.jsonl.gz", "rt") as f:
        mt_bench = [json.loads(line)["turns"][0] for line in f]
    routerbench = load("routerbench")
    answers = [a for texts in routerbench.meta["responses"].values() for a in texts[::11]]
    return {
        "mt_bench prompts": mt_bench,
        "gsm8k prompts": list(load("routellm-gsm8k").prompts[:2000]),
        "routerbench prompts (5-shot)": list(routerbench.prompts[::4]),
        "routerbench answers": answers,
    }


def time_texts(redactor: Redactor, texts: list[str], pii: bool) -> dict[str, float]:
    """Cost per text; ``changed``: texts changed (without PII: false positives); ``missed``:
    texts whose appended PII sentence did not come out as ``REDACTED``."""
    for t in texts:
        redactor.redact(t)
    costs, changed, missed = [], 0, 0
    for t in texts:
        t0 = time.perf_counter()
        out = redactor.redact(t)
        costs.append(time.perf_counter() - t0)
        changed += out != t
        missed += pii and not out.endswith(REDACTED)
    costs.sort()
    return {"n": len(texts), "chars": round(statistics.mean(map(len, texts))),
            "mean_us": 1e6 * statistics.mean(costs),
            "p99_us": 1e6 * costs[int(0.99 * (len(costs) - 1))], "max_us": 1e6 * costs[-1],
            "changed": changed, "missed": missed}


def worst_cases(redactor: Redactor) -> dict[str, dict[str, float]]:
    """Texts made of numbers: seconds for one, and the placeholders put in."""
    rng = random.Random(0)
    texts = {
        "150 KB of random space-separated numbers": " ".join(
            str(rng.randint(0, 10 ** rng.randint(1, 12))) for _ in range(20_000)),
        "2,000-row CSV, an email and a phone a row": "\n".join(
            f"{i},Ada Lovelace,ada{i}@example.com,+1 415 555 {i % 10_000:04d}"
            for i in range(2000)),
        "2 KB code snippet full of numbers": ("def f(x):\n    return x * 1024 + 3.14159 - 2024"
                                              "\n# version 1.2.3, ts 1705312800\n") * 25,
    }
    out = {}
    for name, text in texts.items():
        t0 = time.perf_counter()
        redacted = redactor.redact(text)
        out[name] = {"chars": len(text), "s": time.perf_counter() - t0,
                     **{k: redacted.count(f"[{k.upper()}]") for k in ("email", "phone", "card")}}
    return out


def writer_rows_per_s(rows: int, redactor: Redactor | None, pii: str = "") -> float:
    routerbench = load("routerbench")
    prompts = routerbench.prompts
    answers = next(iter(routerbench.meta["responses"].values()))
    with tempfile.TemporaryDirectory() as tmp:
        log = TrafficLog(f"sqlite:///{tmp}/t.sqlite3", redactor=redactor)
        try:
            records = [TrafficRecord(id=f"r{i}", ts=float(i), status=200,
                                     prompt=prompts[i % len(prompts)] + pii,
                                     answer=answers[i % len(answers)]) for i in range(rows)]
            t0 = time.perf_counter()
            for r in records:
                log.write(r)
            log.flush(timeout=600)
            return rows / (time.perf_counter() - t0)
        finally:
            log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    redactor = Redactor(["email", "phone", "card"])
    results: dict[str, dict] = {}
    print(f"{'texts':34} {'n':>5} {'chars':>5} {'mean µs':>8} {'p99 µs':>8} {'max µs':>8} "
          f"{'changed':>7} {'missed':>6}")
    for name, texts in text_sets().items():
        for label, batch, pii in ((name, texts, False),
                                  (f"{name} + PII", [t + PII for t in texts], True)):
            r = results[label] = time_texts(redactor, batch, pii)
            print(f"{label:34} {r['n']:5d} {r['chars']:5d} {r['mean_us']:8.1f} "
                  f"{r['p99_us']:8.1f} {r['max_us']:8.0f} {r['changed']:7d} {r['missed']:6d}")
    for name, r in worst_cases(redactor).items():
        results[name] = r
        print(f"{name}: {r['chars']:,} chars, {r['s'] * 1e3:,.1f} ms, "
              f"{r['email']} emails, {r['phone']} phones, {r['card']} cards")
    writer = results["writer_rows_per_s"] = {
        "off": writer_rows_per_s(args.rows, None),
        "on": writer_rows_per_s(args.rows, redactor),
        "on, PII in every prompt": writer_rows_per_s(args.rows, redactor, PII),
    }
    print(f"traffic-log writer, {args.rows} rows: " + ", ".join(
        f"{v:,.0f} rows/s redaction {k}" for k, v in writer.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
