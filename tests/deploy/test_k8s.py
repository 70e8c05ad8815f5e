"""deploy/k8s: rendered offline by `kubectl kustomize`, every resource valid against the Kubernetes schemas."""

from __future__ import annotations

import copy
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from tests.deploy.deployment import K8S_DIR, SERVICE_PORTS, require_tool
from tests.deploy.settings_fields import env_names

# The oldest Kubernetes the manifests target, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29.0", latest_version())
SECRET_NAME = "driftloop-secrets"
NAMESPACE = "driftloop"


@pytest.fixture(scope="module")
def resources() -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl", "kubernetes-client")
    result = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_validates_against_the_schemas(resources: list[dict[str, Any]], version: str) -> None:
    for resource in resources:
        # strict: unknown fields are errors too; a kind without a schema raises SchemaNotFoundError
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_validator_rejects_a_broken_resource(resources: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(find(resources, "Deployment", "inference"))
    container(broken)["readinessProbe"]["httpGet"]["pathh"] = "/health/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_everything_lands_in_the_namespace(resources: list[dict[str, Any]]) -> None:
    find(resources, "Namespace", NAMESPACE)
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == NAMESPACE, resource["metadata"]["name"]


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_each_service_has_a_deployment_with_probes_and_resources(resources: list[dict[str, Any]], name: str) -> None:
    deployment = find(resources, "Deployment", name)
    pod = deployment["spec"]["template"]
    main = container(deployment)
    assert main["args"] == ["serve", name]
    assert main["image"].partition(":")[0].rpartition("/")[2] == "driftloop"
    port = SERVICE_PORTS[name]
    assert main["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    env = {item["name"]: item for item in main["env"]}
    assert env["DRIFTLOOP_PORT"]["value"] == str(port)
    assert main["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert main["startupProbe"]["httpGet"]["path"] == "/health/live"
    for kind in ("requests", "limits"):
        assert set(main["resources"][kind]) == {"cpu", "memory"}, f"{name}: {kind}"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_each_service_has_a_service_that_selects_its_pods(resources: list[dict[str, Any]], name: str) -> None:
    service = find(resources, "Service", name)
    pod_labels = find(resources, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": SERVICE_PORTS[name], "targetPort": "http", "protocol": "TCP"}
    ]


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_settings_come_from_the_configmap_and_the_secret(resources: list[dict[str, Any]], name: str) -> None:
    config = find(resources, "ConfigMap", "driftloop-config")
    main = container(find(resources, "Deployment", name))
    assert main["envFrom"] == [{"configMapRef": {"name": "driftloop-config"}}]
    variables = set(config["data"]) | {item["name"] for item in main["env"]}
    unknown = {v for v in variables if v.startswith("DRIFTLOOP_")} - env_names(name)
    assert not unknown, f"{name}: variables its settings do not read: {sorted(unknown)}"
    assert config["data"]["DRIFTLOOP_KAFKA_IDEMPOTENCE"] == "true"
    secret_refs = {
        item["name"]: item["valueFrom"]["secretKeyRef"]["name"] for item in main["env"] if "valueFrom" in item
    }
    assert secret_refs == {
        "DRIFTLOOP_STORE_ACCESS_KEY": SECRET_NAME,
        "DRIFTLOOP_STORE_SECRET_KEY": SECRET_NAME,
    }
    assert not any("SECRET" in key or "ACCESS_KEY" in key for key in config["data"]), "secrets in the ConfigMap"


def test_no_secret_values_are_rendered(resources: list[dict[str, Any]]) -> None:
    assert not [r for r in resources if r["kind"] == "Secret"], "the operator creates the Secret (README.md)"


def test_hpa_scales_the_inference_deployment(resources: list[dict[str, Any]]) -> None:
    hpas = [r for r in resources if r["kind"] == "HorizontalPodAutoscaler"]
    assert len(hpas) == 1
    (hpa,) = hpas
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "inference"}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    # the HPA owns the count: a replicas field would be reset by every `kubectl apply`
    assert "replicas" not in find(resources, "Deployment", "inference")["spec"]
    assert "resources" in container(find(resources, "Deployment", "inference"))  # CPU utilisation needs requests
