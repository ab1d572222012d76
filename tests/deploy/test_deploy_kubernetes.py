"""deploy/k8s: manifests valid against Kubernetes' schemas (kubernetes-validate, offline, strict),
checkov clean, wired together (kustomization, selectors, probes, Secret references), and a
gateway config that builds an engine with exactly the environment the Deployment gives."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from router.errors import ConfigError
from tests.deploy.conftest import DEPLOY, yaml_documents
from tests.deploy.gateway_config import image_paths, validate

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest the manifests use features of (preStop sleep)
SECRET = "contextforge-secrets"


def kustomization() -> dict[str, Any]:
    return yaml_documents(K8S / "kustomization.yaml")[0]


def manifests() -> dict[str, dict[str, Any]]:
    """Every resource kustomize applies, by kind."""
    out = {}
    for name in kustomization()["resources"]:
        for doc in yaml_documents(K8S / name):
            assert doc["kind"] not in out, f"two {doc['kind']}s"
            out[doc["kind"]] = doc
    return out


def gateway(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_every_manifest_is_valid_against_the_kubernetes_schemas():
    for kind, doc in manifests().items():
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_the_schema_check_rejects_a_misspelt_field():
    broken = copy.deepcopy(manifests()["Deployment"])
    container = gateway(broken)
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_checkov_passes_the_manifests(checkov_reports):
    report = checkov_reports["kubernetes"]
    assert report["summary"]["resource_count"] >= 7 and report["summary"]["parsing_errors"] == 0
    failed = [(c["check_id"], c["check_name"], c["resource"])
              for c in report["results"]["failed_checks"]]
    assert failed == []


def test_kustomization_names_files_that_exist():
    k = kustomization()
    files = [*k["resources"], *(f for g in k["configMapGenerator"] for f in g["files"])]
    assert [f for f in files if not (K8S / f).is_file()] == []
    assert {p.name for p in K8S.glob("*.yaml")} == {"kustomization.yaml", *files}


def test_the_pieces_point_at_each_other():
    m = manifests()
    deployment, pod = m["Deployment"], m["Deployment"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert m["Service"]["spec"]["selector"].items() <= labels.items()
    assert m["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert m["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    target = m["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    metric = m["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["resource"]
    assert metric["name"] == "cpu"
    assert m["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    assert pod["spec"]["serviceAccountName"] == m["ServiceAccount"]["metadata"]["name"]
    port = gateway(deployment)["ports"][0]
    assert m["Service"]["spec"]["ports"][0]["targetPort"] in (port["name"], port["containerPort"])
    generated = {g["name"] for g in kustomization()["configMapGenerator"]}
    mounted = {v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v}
    assert mounted == generated


def test_probes_and_the_container_hardening():
    container = gateway(manifests()["Deployment"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "cpu" in container["resources"]["requests"]  # the autoscaler's utilisation needs it
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True and security["allowPrivilegeEscalation"] is False
    # With a read-only root, the gateway's writable places must be mounted.
    mounts = {v["mountPath"] for v in container["volumeMounts"]}
    assert {"/app/var", "/tmp"} <= mounts


def test_secrets_come_only_from_the_secret():
    env = gateway(manifests()["Deployment"])["env"]
    literal = [e["name"] for e in env if "value" in e]
    assert literal == [], f"literal values for {literal}: use secretKeyRef"
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env} == {SECRET}


def test_the_config_builds_with_exactly_the_deployments_environment(tmp_path, monkeypatch):
    container = gateway(manifests()["Deployment"])
    config = K8S / kustomization()["configMapGenerator"][0]["files"][0]
    mount = next(v["mountPath"] for v in container["volumeMounts"] if v["name"] == "config")
    assert container["args"][container["args"].index("--config") + 1] == \
        f"{mount}/{config.name}"
    engine = validate(config, {e["name"] for e in container["env"]}, tmp_path, monkeypatch)
    assert engine.config.redis.url and engine.config.limits.backend == "redis"
    assert engine.config.traffic.dsn.startswith("postgresql://")
    assert engine.config.governance.dsn.startswith("postgresql://")
    # Relative paths would resolve under the config's mount: every one is absolute.
    assert image_paths(config.read_text()), "the config names its files under /app"


def test_a_provider_key_the_deployment_does_not_give_fails(tmp_path, monkeypatch):
    container = gateway(manifests()["Deployment"])
    env = {e["name"] for e in container["env"]} - {"ANTHROPIC_API_KEY"}
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        validate(K8S / "contextforge.yaml", env, tmp_path, monkeypatch)


def test_config_paths_exist_in_the_image_tree():
    from tests.deploy.conftest import ROOT

    for path in image_paths((K8S / "contextforge.yaml").read_text()):
        local = ROOT / Path(path).relative_to("/app")
        assert local.exists() or local.parts[len(ROOT.parts)] == "var", path
