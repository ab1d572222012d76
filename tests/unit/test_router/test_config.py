import pytest

from router.catalog import Catalog
from router.config import DEFAULT_CONFIG, ConfigError, load_config
from router.providers import check_providers

GOOD = """
version: 1
models:
  - {name: big, stands_in_for: a, input_price: 10, output_price: 30, context_window: 8000,
     capabilities: [tools, vision], aliases: [big-2024]}
  - {name: small, stands_in_for: b, input_price: 0.1, output_price: 0.2, context_window: 4000}
routes:
  - {name: auto, policy: {mode: tradeoff, willingness_to_pay: 0.01}}
  - {name: pair, candidates: [big, small], policy: {mode: strong_share, strong_share: 0.25}}
"""


def _write(tmp_path, text):
    path = tmp_path / "cf.yaml"
    path.write_text(text)
    return path


def test_the_shipped_default_config_is_valid():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.default_route == "auto"
    assert all(m.stands_in_for for m in cfg.models if "embeddings" not in m.capabilities)


def test_a_good_config_decodes_and_resolves_paths_next_to_the_file(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD))
    assert [r.name for r in cfg.routes] == ["auto", "pair"]
    assert cfg.routes[1].policy.strong_share == 0.25
    assert cfg.resolve("models/x") == tmp_path / "models/x"
    catalog = Catalog(cfg.models)
    assert catalog.get("big-2024").name == "big"
    assert Catalog.cost_usd(catalog.get("big"), 1000, 100) == pytest.approx(0.013)
    with pytest.raises(KeyError, match="unknown model 'gpt5'"):
        catalog.get("gpt5")


@pytest.mark.parametrize("edit,message", [
    (("input_price: 10", "input_price: ten"), "models[0].input_price: Expected `float"),
    (("input_price: 10", "input_price: -1"), "models[0].input_price: Expected `float` >= 0.0"),
    (("[tools, vision]", "[tools, telepathy]"), "models[0].capabilities[1]: unknown capability"),
    (("candidates: [big, small]", "candidates: [big, gpt5]"),
     "routes[1].candidates[1]: unknown model 'gpt5'"),
    (("strong_share: 0.25", "strong_share: 3"), "strong_share must be in [0, 1]"),
    (("mode: tradeoff", "mode: cheapest"), "Invalid enum value 'cheapest'"),
    (("version: 1", "version: 1\nbogus: 2"), "unknown field `bogus`"),
    (("name: small", "name: big-2024"), "'big-2024' already used"),
    (("context_window: 4000}", "context_window: 4000, fallbacks: [big, gpt5]}"),
     "models[1].fallbacks[1]: unknown model 'gpt5'"),
    (("context_window: 4000}", "context_window: 4000, fallbacks: [small]}"),
     "models[1].fallbacks[0]: a model cannot fall back to itself"),
    (("strong_share: 0.25}}", "strong_share: 0.25}, fallbacks: [big, tiny]}"),
     "routes[1].fallbacks[1]: unknown model 'tiny'"),
])
def test_every_error_names_its_path(tmp_path, edit, message):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, GOOD.replace(*edit)))
    assert message in str(err.value)
    assert str(tmp_path / "cf.yaml") in str(err.value)


def test_unreadable_and_malformed_files_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "models: [unclosed"))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(_write(tmp_path, "- a list"))


@pytest.mark.parametrize("section,message", [
    ("redis: {url: 'http://cache:6379'}", "redis.url: must start with redis://, rediss://, "
                                          "unix:// (got http://)"),
    ("redis: {url: 'localhost:6379'}", "redis.url: must start with"),
    ("redis: {url: 'redis://127.0.0.1:6379'}\ncache: {enabled: true, snapshot_path: c.snap}",
     "cache.snapshot_path: with redis.url the cache lives in Redis"),
])
def test_a_redis_url_is_checked_and_excludes_local_snapshots(tmp_path, section, message):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, GOOD + section))
    assert message in str(err.value)
    cfg = load_config(_write(tmp_path, GOOD + "redis: {url: 'rediss://:pw@cache:6380/1'}"))
    assert cfg.redis.prefix == "contextforge:" and not load_config(
        _write(tmp_path, GOOD)).redis.url  # the embedded default needs no Redis


@pytest.mark.parametrize("section,message", [
    ("server: {trusted_proxies: [127.0.0.1, proxy.internal]}",
     "server: trusted_proxies[1]: 'proxy.internal' is not an IP address or CIDR network"),
    ("server: {trusted_proxies: [10.0.0.1/8]}",
     "trusted_proxies[0]: '10.0.0.1/8' has host bits set: write 10.0.0.0/8 for the network"),
    ("server: {proxy_header: x-real-ip}", "server.proxy_header: Invalid enum value"),
    ("governance: {networks: {acme: [203.0.113.0/24, 300.1.2.3]}}",
     "governance: networks.acme[1]: '300.1.2.3' is not an IP address"),
    ("server: {tls: {cert_path: c.pem}}", "server.tls: Object missing required field `key_path`"),
])
def test_network_settings_are_checked_at_load(tmp_path, section, message):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, GOOD + section))
    assert message in str(err.value)
    cfg = load_config(_write(tmp_path, GOOD + "server: {trusted_proxies: [127.0.0.1, '::1', "
                             "10.0.0.0/8]}\ngovernance: {networks: {acme: [2001:db8::/32]}}"))
    assert cfg.server.trusted_proxies[2] == "10.0.0.0/8"
    assert cfg.governance.networks == {"acme": ["2001:db8::/32"]}


def test_tls_files_are_resolved_next_to_the_config_and_must_load(tmp_path, monkeypatch):
    from router.config import check_tls, tls_files
    from router.validate import check
    from tests.tls_certs import self_signed

    self_signed(tmp_path / "tls")
    self_signed(tmp_path / "other")
    self_signed(tmp_path / "locked", password=b"open sesame")

    def tls(section: str):
        return load_config(_write(tmp_path, GOOD + f"server: {{tls: {section}}}"))

    good = tls("{cert_path: tls/cert.pem, key_path: tls/key.pem}")
    assert check_tls(good) == []
    assert tls_files(good) == (tmp_path / "tls/cert.pem", tmp_path / "tls/key.pem", None)
    problems = {
        "{cert_path: tls/nope.pem, key_path: tls/key.pem}": "server.tls.cert_path: no such file",
        "{cert_path: tls/cert.pem, key_path: other/key.pem}":
            "is not the key of the certificate",
        "{cert_path: tls/key.pem, key_path: tls/key.pem}": "holds no PEM certificate",
        "{cert_path: locked/cert.pem, key_path: locked/key.pem}":
            "is encrypted: name the environment variable holding its passphrase",
        "{cert_path: locked/cert.pem, key_path: locked/key.pem, key_password_env: CF_PW}":
            "server.tls.key_password_env: $CF_PW is not set",
    }
    for section, message in problems.items():
        (error,) = check_tls(tls(section))
        assert message in error, section
    with pytest.raises(ConfigError, match="no such file"):  # the pipeline every entry point runs
        check(tls("{cert_path: tls/nope.pem, key_path: tls/key.pem}"))
    locked = tls("{cert_path: locked/cert.pem, key_path: locked/key.pem, key_password_env: CF_PW}")
    monkeypatch.setenv("CF_PW", "wrong")
    assert "the passphrase does not decrypt" in check_tls(locked)[0]
    monkeypatch.setenv("CF_PW", "open sesame")
    assert check_tls(locked) == [] and tls_files(locked)[2] == "open sesame"


def test_traffic_redaction_is_off_by_default_and_its_kinds_and_region_are_checked(tmp_path):
    assert load_config(_write(tmp_path, GOOD)).traffic.redact == ()
    cfg = load_config(_write(tmp_path, GOOD + "traffic: {redact: [email, phone, card], "
                                              "redact_region: GB}"))
    assert (cfg.traffic.redact, cfg.traffic.redact_region) == (("email", "phone", "card"), "GB")
    for section, message in (
            ("traffic: {redact: [email, ssn]}", "traffic.redact[1]: Invalid enum value 'ssn'"),
            ("traffic: {redact: email}", "traffic.redact: Expected `array`, got `str`"),
            ("traffic: {redact: [phone], redact_region: UK}",
             "traffic: redact_region 'UK': not a region code")):
        with pytest.raises(ConfigError) as err:
            load_config(_write(tmp_path, GOOD + section))
        assert message in str(err.value)


DISPATCH = """
dispatch:
  strategy: least_busy
  retry: {max_attempts: 4, backoff_base_ms: 20, backoff_max_ms: 500, deadline_s: 30}
  breaker: {consecutive_failures: 3, failure_rate: 0.4, window_s: 30, min_requests: 10}
  timeouts: {connect_s: 2, stream_idle_s: 20}
  probes: {enabled: true, interval_s: 15}
  tenant_regions: {acme: [eu]}
"""


def test_the_dispatch_section_decodes_and_deployments_refine_it(tmp_path):
    text = GOOD.replace("context_window: 4000}", "context_window: 4000, strategy: lowest_cost,\n"
                        "     deployments: [{provider: simulated, residency: eu, rpm: 60,\n"
                        "                    timeouts: {connect_s: 0.5, total_s: 9}}]}")
    text = text.replace("strong_share: 0.25}}", "strong_share: 0.25},\n"
                        "     regions: [eu], strategy: lowest_latency}")
    cfg = load_config(_write(tmp_path, text + DISPATCH))
    d = cfg.dispatch
    assert d.strategy == "least_busy" and d.retry.max_attempts == 4
    assert d.breaker.failure_rate == 0.4 and d.probes.enabled
    assert d.tenant_regions == {"acme": ["eu"]}
    small = cfg.models[1]
    assert small.strategy == "lowest_cost" and small.deployments[0].residency == "eu"
    own = small.deployments[0].timeouts.over(d.timeouts)
    assert (own.connect_s, own.total_s, own.stream_idle_s, own.first_token_s) == (0.5, 9, 20,
                                                                                  None)
    assert cfg.routes[1].regions == ["eu"] and cfg.routes[1].strategy == "lowest_latency"


def test_the_flat_dispatch_keys_of_earlier_versions_still_work(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD + "dispatch: {max_attempts: 5, backoff_ms: 10, "
                                              "failure_threshold: 2, cooldown_s: 7}"))
    d = cfg.dispatch
    assert (d.retry.max_attempts, d.retry.backoff_base_ms) == (5, 10)
    assert (d.breaker.consecutive_failures, d.breaker.cooldown_s) == (2, 7)
    assert d.max_attempts is None and d.backoff_ms is None


@pytest.mark.parametrize("section,message", [
    ("dispatch: {strategy: fastest}", "dispatch.strategy: Invalid enum value 'fastest'"),
    ("dispatch: {retry: {max_attempts: 0}}", "dispatch.retry.max_attempts: Expected `int` >= 1"),
    ("dispatch: {breaker: {failure_rate: 2}}", "dispatch.breaker.failure_rate: Expected"),
    ("dispatch: {timeouts: {connect_s: 0}}", "dispatch.timeouts.connect_s: Expected `float` > 0"),
    ("dispatch: {tenant_regions: {acme: [EU West]}}", "dispatch.tenant_regions[...][0]: Expected"),
    ("dispatch: {backoff_ms: -1}", "dispatch: backoff_ms: Expected `float` >= 0.0"),
    ("dispatch: {retry: {backoff_base_ms: 100, backoff_max_ms: 10}}",
     "retry.backoff_max_ms must be >= retry.backoff_base_ms"),
    ("dispatch: {fallback_response: {content: ''}}",
     "dispatch.fallback_response.content: Expected `str` of length >= 1"),
    ("dispatch: {content_policy_failover: maybe}", "dispatch.content_policy_failover: Expected"),
])
def test_dispatch_errors_name_their_path(tmp_path, section, message):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, GOOD + section))
    assert message in str(err.value)


def test_fallbacks_decode_by_name_or_alias(tmp_path):
    text = GOOD.replace("context_window: 4000}", "context_window: 4000, fallbacks: [big-2024]}")
    cfg = load_config(_write(tmp_path, text + "dispatch: {fallback_response: {content: Sorry}}"))
    assert cfg.models[1].fallbacks == ["big-2024"]
    assert cfg.dispatch.fallback_response.content == "Sorry"
    assert not cfg.dispatch.content_policy_failover and cfg.routes[0].fallbacks == []


def test_a_deployments_timeouts_error_names_the_deployment(tmp_path):
    text = GOOD.replace("context_window: 4000}", "context_window: 4000,\n"
                        "     deployments: [{provider: simulated, timeouts: {total_s: -3}}]}")
    with pytest.raises(ConfigError, match=r"models\[1\]\.deployments\[0\]\.timeouts\.total_s"):
        load_config(_write(tmp_path, text))


def test_a_required_region_must_have_a_deployment(tmp_path):
    text = GOOD.replace("strong_share: 0.25}}", "strong_share: 0.25}, regions: [eu]}")
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text + "dispatch: {tenant_regions: {acme: [us]}}"))
    assert "routes[1].regions[0]: no deployment is in region 'eu'" in str(err.value)
    assert "dispatch.tenant_regions.acme[0]: no deployment is in region 'us'" in str(err.value)


def test_native_batch_is_off_by_default_and_its_discount_is_checked_with_its_path(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD))
    assert all(not getattr(d, "native_batch", False) for m in cfg.models
               for d in cfg.deployments(m))
    text = GOOD.replace("context_window: 4000}", "context_window: 4000,\n     deployments: "
                        "[{provider: openai, api_key: k, native_batch: true, "
                        "batch_discount: 1.5}]}")
    with pytest.raises(ConfigError, match=r"models\[1\]\.deployments\[0\]\.batch_discount"):
        load_config(_write(tmp_path, text))
    ok = load_config(_write(tmp_path, text.replace("1.5", "0.4")))
    assert ok.models[1].deployments[0].native_batch and \
        ok.models[1].deployments[0].batch_discount == 0.4
    assert ok.batch.native_poll_s == 30.0 and ok.batch.native_collect_s == 60.0
    azure = text.replace("provider: openai,", "provider: azure, endpoint: 'https://x',") \
        .replace("1.5", "0.5")
    with pytest.raises(ConfigError, match=r"models\[1\]\.deployments\[0\]\.native_batch: "
                                          "adapter 'azure' has no setting"):
        check_providers(load_config(_write(tmp_path, azure)))
