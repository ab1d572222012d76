"""eval.pack and eval.build_pack: reference recovery, the pack format, the shipped pack."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections import Counter

import pytest

from eval.build_pack import (
    candidates,
    parse_choices,
    recover_reference,
    stratified,
    strict_letter,
)
from eval.pack import (
    DATA_DIR,
    PackError,
    PackReference,
    PackRow,
    PackSource,
    answered_as,
    compare_recorded,
    read_pack,
    recorded_outcomes,
    resolve_pack,
    source_models,
    write_pack,
)
from router.config import Config, Deployment, ModelEntry, SimulatedSettings

QUESTION = ("Which is a metal?\nA) wood\nB) iron\nC) glass\nPrint only a single choice from "
            '"A" or "B" or "C".\nAnswer:')
SHOT = "Which is a gas?\nA) air\nB) rock\nC) milk\nAnswer:\nA"


def test_strict_letters():
    for text in ("B", " B\n", "(B)", "B)", "B.", "( B )"):
        assert strict_letter(text) == "B", text
    for text in ("b", "B is right", "I do", "", "BC", "D ("):
        assert strict_letter(text) is None, text


def test_choices_come_from_the_final_question_only():
    assert parse_choices(f"{SHOT}\n\n{QUESTION}") == {"A": "wood", "B": "iron", "C": "glass"}
    assert parse_choices("no options here") == {}


def test_reference_recovery_rules():
    choices = {"A": "x", "B": "y", "C": "z"}

    def recover(**models):
        outcomes = {m: v for m, (v, _) in models.items()}
        answers = {m: a for m, (_, a) in models.items()}
        return recover_reference(outcomes, answers, choices)

    assert recover(m1=(1.0, "B"), m2=(1.0, "B)\n"), m3=(0.0, "A"), m4=(1.0, "I think B")) \
        == ("B", "")
    assert recover(m1=(1.0, "The answer is B"), m2=(0.0, "A")) == (
        None, "no strict correct answer")
    assert recover(m1=(1.0, "B"), m2=(1.0, "C")) == (None, "strict correct answers disagree")
    assert recover(m1=(1.0, "B"), m2=(0.0, "B")) == (
        None, "a strict incorrect answer names the reference")
    assert recover(m1=(1.0, "E")) == (None, "reference is not one of the choices")


def write_csv(path, rows):
    header = ["", "sample_id", "prompt", "eval_name", "m1", "m2", "m1|model_response",
              "m2|model_response"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for i, (sid, prompt, s1, s2, a1, a2) in enumerate(rows):
        w.writerow([i, sid, repr([prompt]), "arc-challenge", s1, s2, repr([a1]), repr([a2])])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(buf.getvalue().encode()))


@pytest.fixture()
def tiny_data(tmp_path):
    q = [QUESTION.replace("metal", f"metal ({i})") for i in range(6)]
    write_csv(tmp_path / "routerbench" / "arc_challenge_train.csv.gz", [
        ("s0", q[0], "1.0", "0.0", "B", "A\n"),  # kept: B
        ("s1", q[1], "1.0", "1.0", "B", "C"),  # correct answers disagree
        ("s2", q[2], "1.0", "0.0", "B", "B"),  # an incorrect answer names the reference
        ("s3", q[3], "1.0", "", "C", ""),  # m2 has no outcome
        ("s4", q[4], "0.0", "1.0", "I do", "(A)"),  # kept: A
        ("s5", q[5], "1.0", "0.0", "B is it", "C"),  # no strict correct answer
    ])
    # The same question in a test file: its recorded answers would be ambiguous.
    write_csv(tmp_path / "routerbench" / "arc_challenge_test.csv.gz", [
        ("t0", q[4], "1.0", "1.0", "A", "A")])
    return tmp_path


def test_building_from_a_tiny_csv_applies_every_rule(tiny_data):
    built = candidates([("routerbench/arc_challenge_train.csv.gz", "arc_challenge")],
                       tiny_data)
    [row] = built.candidates["arc_challenge"]
    assert row.id == "arc_challenge/s0" and row.task == "arc_challenge"
    assert row.reference == PackReference(kind="choice", answer="B",
                                          choices={"A": "wood", "B": "iron", "C": "glass"})
    assert row.source == PackSource("routerbench/arc_challenge_train.csv.gz", "s0")
    assert row.prompt.startswith("Which is a metal (0)?")
    assert built.dropped == Counter({
        "arc_challenge: strict correct answers disagree": 1,
        "arc_challenge: a strict incorrect answer names the reference": 1,
        "arc_challenge: a model has no recorded outcome": 1,
        "arc_challenge: prompt or sample id occurs more than once in the data": 1,
        "arc_challenge: no strict correct answer": 1})
    outcomes = recorded_outcomes([row], ["m1", "m2", "m3"], tiny_data)
    assert outcomes == {("arc_challenge/s0", "m1"): 1.0, ("arc_challenge/s0", "m2"): 0.0}
    assert source_models([row], tiny_data) == {"m1", "m2"}


def _row(i: int, task: str) -> PackRow:
    return PackRow(id=f"{task}/{i}", task=task, prompt=f"q{i}",
                   reference=PackReference(kind="choice", answer="A", choices={"A": "a"}))


def test_stratified_sampling_is_seeded_interleaved_and_keeps_data_order():
    by_task = {"a": [_row(i, "a") for i in range(50)], "b": [_row(i, "b") for i in range(8)]}
    rows = stratified(by_task, per_task=10, seed=3)
    assert Counter(r.task for r in rows) == {"a": 10, "b": 8}
    assert [r.task for r in rows[:6]] == ["a", "b"] * 3  # any prefix covers both tasks
    ids = [int(r.id.split("/")[1]) for r in rows if r.task == "a"]
    assert ids == sorted(ids)
    assert stratified(by_task, per_task=10, seed=3) == rows
    assert stratified(by_task, per_task=10, seed=4) != rows


def test_pack_round_trip_is_byte_stable_and_errors_name_the_line(tmp_path):
    rows = [_row(i, "t") for i in range(3)]
    a, b = write_pack(tmp_path / "a.jsonl.gz", rows), write_pack(tmp_path / "b.jsonl.gz", rows)
    assert a.read_bytes() == b.read_bytes()
    assert read_pack(a) == rows
    plain = tmp_path / "p.jsonl"
    plain.write_text(json.dumps({"id": "x", "task": "t", "prompt": "p",
                                 "reference": {"kind": "choice", "answer": "A"}}) + "\n\n"
                     + json.dumps({"id": "x", "task": "t", "prompt": "q",
                                   "reference": {"kind": "choice", "answer": "B"}}) + "\n")
    with pytest.raises(PackError, match=r"p.jsonl:3: id 'x' repeats line 1"):
        read_pack(plain)
    plain.write_text('{"id": "x", "task": "t", "prompt": "p", "reference": {"kind": "essay"}}\n')
    with pytest.raises(PackError, match=r"p.jsonl:1: .*kind"):
        read_pack(plain)
    with pytest.raises(PackError, match=r"no such pack file.*starter"):
        read_pack(tmp_path / "missing.jsonl")


def test_compare_recorded_lists_each_disagreement_with_its_reason(tiny_data):
    [row] = candidates([("routerbench/arc_challenge_train.csv.gz", "arc_challenge")],
                       tiny_data).candidates["arc_challenge"]

    class Scored:
        def __init__(self, model, score, detail=""):
            self.pack_id, self.model, self.score, self.detail = row.id, model, score, detail

    got = compare_recorded([Scored("big", 1.0), Scored("small", 1.0, "answered 'B'"),
                            Scored("other", 0.0)], [row], {"big": "m1", "small": "m2"},
                           tiny_data)
    assert (got.compared, got.agreed, got.not_compared) == (2, 1, 1)
    [d] = got.disagreements
    assert (d.model, d.data_model, d.recorded, d.score, d.detail) == (
        "small", "m2", 0.0, 1.0, "answered 'B'")


def test_answered_as_resolves_as_the_gateway_does():
    def model(name, stands_in_for=None, *deployments):
        return ModelEntry(name=name, input_price=1, output_price=1, context_window=1000,
                          stands_in_for=stands_in_for, deployments=list(deployments))

    sim = Deployment(provider="simulated")
    config = Config(models=[
        model("m1"),  # a data model's own name, default (simulated) deployment
        model("big", "m1", Deployment(provider="simulated",
                                      simulated=SimulatedSettings(answers_as="m2"))),
        model("plain", "m2", sim),  # its stand-in
        model("real", "m1", Deployment(provider="openai", api_key="k")),  # not recorded
        model("mixed", "m1", sim, Deployment(provider="simulated",
                                             simulated=SimulatedSettings(answers_as="m2"))),
        model("new"),  # nothing recorded
    ])
    names = ["m1", "big", "plain", "real", "mixed", "new"]
    assert answered_as(config, names, {"m1", "m2"}) == {"m1": "m1", "big": "m2",
                                                         "plain": "m2"}


# --- the shipped pack ------------------------------------------------------------------------


def test_the_shipped_starter_pack():
    path = resolve_pack("starter")
    rows = read_pack("starter")
    assert 250 <= len(rows) <= 350
    assert Counter(r.task for r in rows) == {"arc_challenge": 150, "winogrande": 150}
    assert Counter(r.task for r in rows[:20]) == {"arc_challenge": 10, "winogrande": 10}
    assert all(r.source and r.source.file.endswith("_train.csv.gz") for r in rows)
    assert all(r.reference.kind == "choice" and r.reference.answer in r.reference.choices
               for r in rows)
    assert len({r.prompt for r in rows}) == len(rows)
    manifest = json.loads((DATA_DIR / "manifest.json").read_text())
    [entry] = [e for e in manifest["files"] if e["path"] == "packs/starter.jsonl.gz"]
    assert entry["rows"] == len(rows)
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "MBPP" in entry["note"]


def test_the_shipped_pack_is_what_the_builder_makes(tmp_path):
    from eval.build_pack import main

    main(["--out", str(tmp_path / "starter.jsonl.gz")])
    assert (tmp_path / "starter.jsonl.gz").read_bytes() == resolve_pack("starter").read_bytes()
