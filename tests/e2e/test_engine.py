"""The routing engine on the shipped config and default router."""

import numpy as np
import pytest

from router.config import ConfigError
from router.engine import RoutingEngine
from router.policy import NoEligibleModel, PolicySpec
from training.data import load


@pytest.fixture(scope="module")
def held_out_prompts():
    test = load("routerbench").split("test")
    idx = np.random.default_rng(0).choice(len(test), 150, replace=False)
    return [test.prompts[i] for i in idx]


def test_strong_share_route_sends_about_its_calibrated_share(engine, held_out_prompts):
    """Calibrated on out-of-fold training predictions; checked on held-out prompts."""
    picks = [engine.decide(p, route="gpt4o-30").model for p in held_out_prompts]
    share = picks.count("gpt-4o") / len(picks)
    assert set(picks) <= {"gpt-4o", "gpt-4o-mini"}
    assert 0.15 <= share <= 0.45, share


def test_willingness_to_pay_moves_the_choice_along_the_price_axis(engine, held_out_prompts):
    p = held_out_prompts[0]
    rich = engine.decide(p, policy=PolicySpec(willingness_to_pay=1e6))
    poor = engine.decide(p, policy=PolicySpec(willingness_to_pay=1e-9))
    costs = {c.model: c.estimated_cost_usd for c in rich.candidates}
    quality = {c.model: c.predicted_quality for c in rich.candidates}
    assert quality[rich.model] == max(quality.values())
    assert costs[poor.model] == min(costs.values())


def test_allowed_models_and_no_eligible_model(engine):
    d = engine.decide("hello", allowed={"claude-3-haiku", "gpt-4o-mini"})
    assert d.model in {"claude-3-haiku", "gpt-4o-mini"}
    with pytest.raises(NoEligibleModel):
        engine.decide("hello", allowed=set())


def test_decisions_are_deterministic_and_batch_consistent(engine, held_out_prompts):
    p = held_out_prompts[1]
    a, b = engine.decide(p), engine.decide(p)
    assert a.model == b.model and a.candidates == b.candidates


def test_input_tokens_price_and_fit_the_whole_conversation(engine):
    """A short routing prompt inside a long conversation: costs and context windows follow
    the conversation's tokens, not the prompt's."""
    short = engine.decide("Summarise the above.")
    long = engine.decide("Summarise the above.", input_tokens=6000)
    by_model = {c.model: c for c in long.candidates}
    assert by_model["command"].eligible is False  # 4,096-token context window
    assert "context window" in by_model["command"].excluded_because
    assert {c.model: c.eligible for c in short.candidates}["command"] is True
    for c in short.candidates:
        assert by_model[c.model].estimated_cost_usd > c.estimated_cost_usd


def test_the_shipped_router_reads_inner_layers_and_an_older_encoder_is_refused(engine,
                                                                                 tmp_path):
    import json
    import shutil

    import msgspec

    assert engine.router.layers and engine.embed("hi").shape == (
        engine.encoder.dim * (1 + len(engine.router.layers)),)
    # An encoder folder exported before the layer outputs existed: manifest without "layers".
    old = tmp_path / "enc"
    shutil.copytree(engine.config.resolve(engine.config.encoder.path), old)
    manifest = json.loads((old / "encoder.json").read_text())
    del manifest["layers"]
    (old / "encoder.json").write_text(json.dumps(manifest))
    cfg = msgspec.structs.replace(engine.config, encoder=msgspec.structs.replace(
        engine.config.encoder, path=str(old)))
    with pytest.raises(ConfigError, match="re-export"):
        RoutingEngine.from_config(cfg)
