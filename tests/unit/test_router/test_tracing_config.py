"""The config's ``tracing`` section: off by default, every error with its path."""

from __future__ import annotations

import pytest

from router.config import ConfigError, load_config
from router.tracing_config import TracingConfig, export_headers

BASE = """
version: 1
models:
  - {name: small, stands_in_for: b, input_price: 0.1, output_price: 0.2, context_window: 4000}
"""


def _load(tmp_path, tracing: str):
    path = tmp_path / "cf.yaml"
    path.write_text(BASE + "tracing:\n" + tracing)
    return load_config(path)


def test_tracing_is_off_by_default(tmp_path):
    path = tmp_path / "cf.yaml"
    path.write_text(BASE)
    cfg = load_config(path).tracing
    assert cfg == TracingConfig() and cfg.enabled is False and cfg.exporter == "otlp"


def test_a_full_section_decodes(tmp_path, monkeypatch):
    monkeypatch.setenv("HONEYCOMB_KEY", "hc-secret")
    cfg = _load(tmp_path, """
  enabled: true
  exporter: otlp
  endpoint: https://api.honeycomb.io/v1/traces
  headers: {x-honeycomb-dataset: gateway}
  headers_env: {x-honeycomb-team: HONEYCOMB_KEY}
  service_name: cf-eu-1
  sample_ratio: 0.25
""").tracing
    assert (cfg.enabled, cfg.sample_ratio, cfg.service_name) == (True, 0.25, "cf-eu-1")
    assert export_headers(cfg) == {"x-honeycomb-dataset": "gateway",
                                   "x-honeycomb-team": "hc-secret"}


@pytest.mark.parametrize("section,message", [
    ("  sample_ratio: 1.5\n", "tracing.sample_ratio: Expected `float` <= 1.0"),
    ("  exporter: jaeger\n", "tracing.exporter: Invalid enum value 'jaeger'"),
    ("  endpoint: collector:4318\n", "tracing.endpoint: must be an http:// or https:// URL"),
    ("  exporter: console\n  endpoint: http://c:4318/v1/traces\n",
     "tracing.exporter: endpoint and headers are for the otlp exporter, not 'console'"),
    ("  enabled: true\n  headers_env: {authorization: CF_TEST_UNSET_VAR}\n",
     "tracing.headers_env.authorization: $CF_TEST_UNSET_VAR is not set"),
    ("  headers: {'bad header': x}\n", "tracing.headers"),
    ("  sampling: 0.5\n", "unknown field `sampling`"),
    ("  service_name: ''\n", "tracing.service_name"),
])
def test_every_tracing_error_names_its_path(tmp_path, section, message, monkeypatch):
    monkeypatch.delenv("CF_TEST_UNSET_VAR", raising=False)
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, section)
    assert message in str(err.value)


def test_an_unset_header_variable_is_fine_while_tracing_is_off(tmp_path, monkeypatch):
    monkeypatch.delenv("CF_TEST_UNSET_VAR", raising=False)
    cfg = _load(tmp_path, "  headers_env: {authorization: CF_TEST_UNSET_VAR}\n").tracing
    assert cfg.enabled is False
