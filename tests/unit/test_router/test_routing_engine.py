"""RoutingEngine on a fake encoder and a fake router: the decision logic alone, in microseconds,
with predictions the test chooses."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from router.config import Config, ConfigError, ModelEntry, RouteEntry
from router.engine import PINNED, RoutingEngine, UnknownTarget
from router.policy import NoEligibleModel, PolicySpec
from router.requirements import Requirements


class FakeEncoder:
    id, dim, max_tokens = "fake-encoder", 4, 256

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def encode_routing(self, texts, layers=()):
        self.encoded += list(texts)
        return np.ones((len(texts), self.dim), np.float32)


class FakeRouter:
    """Predicts a fixed quality per data model, whatever the prompt."""

    layers = ()
    calibration = None

    def __init__(self, quality: dict[str, float]):
        self.models = list(quality)
        self.quality = np.array(list(quality.values()))
        self.spec = SimpleNamespace(name="fake-router")

    def routing_texts(self, prompts):
        return list(prompts)

    def predict(self, embeddings, prompts=None):
        return np.tile(self.quality, (len(embeddings), 1))


def model(name: str, stand_in: str, price: float, window: int = 1000, caps=()) -> ModelEntry:
    return ModelEntry(name=name, input_price=price, output_price=price, context_window=window,
                      stands_in_for=stand_in, capabilities=list(caps),
                      expected_output_tokens=100)


@pytest.fixture()
def engine() -> RoutingEngine:
    cfg = Config(models=[model("big", "strong", 10.0, caps=["tools"]),
                         model("small", "weak", 0.1, window=200)],
                 routes=[RouteEntry(name="auto", policy=PolicySpec(willingness_to_pay=1e6)),
                         RouteEntry(name="cheap", policy=PolicySpec(willingness_to_pay=1e-9),
                                    max_prompt_tokens=50)])
    return RoutingEngine(cfg, FakeEncoder(), FakeRouter({"strong": 0.9, "weak": 0.5}))


def test_routes_pick_by_policy_and_explain_every_candidate(engine):
    rich = engine.decide("q", route="auto")
    poor = engine.decide("q", route="cheap")
    assert (rich.model, poor.model) == ("big", "small")
    assert {c.model: c.predicted_quality for c in rich.candidates} == {"big": 0.9, "small": 0.5}
    assert engine.encoder.encoded == ["q", "q"]  # embedded when no embedding was given


def test_requirements_exclude_with_the_shared_reasons(engine):
    d = engine.select("cheap", "q", needs=Requirements(frozenset({"tools"}), None),
                      input_tokens=10)
    assert d.model == "big"
    why = {c.model: c.excluded_because for c in d.candidates}
    assert why == {"big": None, "small": "it lacks tools"}
    with pytest.raises(NoEligibleModel, match="needs tools and 5000 input"):
        engine.select("auto", "q", needs=Requirements(frozenset({"tools"}), None),
                      input_tokens=5000)


def test_pinned_models_take_the_same_path(engine):
    d = engine.select("small", "q", needs=Requirements(frozenset(), 50), input_tokens=100)
    assert (d.route, d.mode, d.model) == (PINNED, "pinned", "small")
    assert engine.encoder.encoded == []  # a pinned request is never embedded
    with pytest.raises(NoEligibleModel, match="exceed its context window 200"):
        engine.select("small", "q", needs=Requirements(frozenset(), 150), input_tokens=100)


def test_targets_auto_routes_models_and_unknowns(engine):
    assert engine.target("auto") == "auto" and engine.target("big") == "big"
    with pytest.raises(UnknownTarget, match="gpt-7"):
        engine.target("gpt-7")


def test_prompt_limits_per_route_and_server(engine):
    assert engine.prompt_limit("cheap") == 50
    assert engine.prompt_limit("auto") == engine.config.server.max_prompt_tokens
    assert engine.prompt_limit("big") == engine.config.server.max_prompt_tokens


def test_a_stand_in_the_router_does_not_know_is_a_config_error():
    cfg = Config(models=[model("x", "unknown-data-model", 1.0)],
                 routes=[RouteEntry(name="auto", candidates=["x"])])
    with pytest.raises(ConfigError, match=r"models\[0\]\.stands_in_for: .*'unknown-data"):
        RoutingEngine(cfg, FakeEncoder(), FakeRouter({"strong": 0.9}))
    # A model with neither a column nor a stand-in cannot be a route's candidate, and a route
    # with no candidates at all is refused.
    plain = ModelEntry(name="x", input_price=1, output_price=1, context_window=100)
    cfg = Config(models=[plain], routes=[RouteEntry(name="auto", candidates=["x"])])
    with pytest.raises(ConfigError, match=r"routes\[0\]\.candidates\[0\]"):
        RoutingEngine(cfg, FakeEncoder(), FakeRouter({"strong": 0.9}))
    cfg = Config(models=[plain], routes=[RouteEntry(name="auto")])
    with pytest.raises(ConfigError, match=r"routes\[0\]: route 'auto' has no candidates"):
        RoutingEngine(cfg, FakeEncoder(), FakeRouter({"strong": 0.9}))


def test_a_model_the_router_learned_uses_its_own_column_not_its_stand_in():
    # After retraining on traffic, the router has a column named by the catalog model itself:
    # that column predicts it, and the decision no longer shows a stand-in.
    router = FakeRouter({"strong": 0.9, "weak": 0.4, "x": 0.7})
    cfg = Config(models=[model("x", "strong", 1.0), model("y", "strong", 1.0)],
                 routes=[RouteEntry(name="auto")])
    d = RoutingEngine(cfg, FakeEncoder(), router).decide("hello")
    by = {c.model: c for c in d.candidates}
    assert (by["x"].predicted_quality, by["x"].stands_in_for) == (0.7, None)
    assert (by["y"].predicted_quality, by["y"].stands_in_for) == (0.9, "strong")


def test_arms_are_a_stable_hash_of_route_and_key_in_the_given_share():
    from router.engine import arm_of

    keys = [f"user-{i}" for i in range(4000)]
    b = [arm_of("auto", k, 0.2) == "b" for k in keys]
    assert abs(sum(b) / len(keys) - 0.2) < 0.02
    assert b == [arm_of("auto", k, 0.2) == "b" for k in keys]  # stable
    other = [arm_of("quality-first", k, 0.2) == "b" for k in keys]
    assert other != b  # routes split independently
    assert {arm_of("auto", k, 0.0) for k in keys} == {"a"}
    assert {arm_of("auto", k, 1.0) for k in keys} == {"b"}
