"""docker-compose.yml: validated by `docker-compose config`, healthy start order, no secret in the file."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deployment import COMPOSE_FILE, DEPLOY, ROOT, SERVICE_PORTS, require_tool
from tests.deploy.settings_fields import env_names

# Variables the file requires (${VAR:?...}): the secrets. Test values, not credentials.
REQUIRED = {
    "MINIO_ROOT_USER": "test-root-user",
    "MINIO_ROOT_PASSWORD": "test-root-password-value",
    "DRIFTLOOP_STORE_ACCESS_KEY": "test-access-key",
    "DRIFTLOOP_STORE_SECRET_KEY": "test-secret-key-value",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana-password",
}
ONE_SHOT = {"kafka-init", "minio-init"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|ROOT_USER", re.IGNORECASE)
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?([^}]*)\}")
REFERENCE_NAMES = sorted({m.group(1) for m in REFERENCE.finditer(COMPOSE_FILE.read_text())})


def run_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with exactly ``env`` for the file's variables (an empty --env-file, so a
    developer's .env changes nothing)."""
    docker_compose = require_tool("docker-compose", "docker-compose")
    clean = {k: v for k, v in os.environ.items() if k not in REFERENCE_NAMES}
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    return subprocess.run(
        [docker_compose, "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = run_config(tmp_path_factory.mktemp("compose"), **REQUIRED)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = yaml.safe_load(result.stdout)
    return data


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def test_config_validates_and_interpolates(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    expected = {"kafka", "kafka-init", "minio", "minio-init", "prometheus", "grafana", *SERVICE_PORTS}
    assert expected <= set(services)
    assert services["inference"]["environment"]["DRIFTLOOP_STORE_SECRET_KEY"] == REQUIRED["DRIFTLOOP_STORE_SECRET_KEY"]


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_config_refuses_to_start_without_each_secret(tmp_path: Path, missing: str) -> None:
    result = run_config(tmp_path, **{k: v for k, v in REQUIRED.items() if k != missing})
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


def test_every_long_running_service_has_a_healthcheck(rendered: dict[str, Any]) -> None:
    for name, service in rendered["services"].items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name} is a one-shot: it must not restart"
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_start_order_waits_for_health(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert condition.get("condition") == expected, f"{name} -> {dependency}: {condition}"
    for name in SERVICE_PORTS:
        assert set(services[name]["depends_on"]) == {"kafka", "kafka-init", "minio", "minio-init"}, name
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}


def test_the_four_services_run_the_one_image(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    images = {services[name]["image"] for name in SERVICE_PORTS}
    assert len(images) == 1
    for name, port in SERVICE_PORTS.items():
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert Path(service["build"]["context"]).resolve() == ROOT
        assert service["command"] == ["serve", name]
        env = service["environment"]
        assert str(env["DRIFTLOOP_PORT"]) == str(port)
        assert env["DRIFTLOOP_HTTP_HOST"] == "0.0.0.0"
        assert env["DRIFTLOOP_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["DRIFTLOOP_KAFKA_IDEMPOTENCE"] == "true", "Apache Kafka: idempotent producer on"
        assert env["DRIFTLOOP_STORE_KIND"] == "minio" and env["DRIFTLOOP_STORE_ENDPOINT"] == "minio:9000"
        assert any(str(port) in p if isinstance(p, str) else p.get("target") == port for p in service["ports"])


def test_service_settings_are_real_setting_names(rendered: dict[str, Any]) -> None:
    for name in SERVICE_PORTS:
        env = rendered["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("DRIFTLOOP_")} - env_names(name)
        assert not unknown, f"{name} sets variables its settings do not read: {sorted(unknown)}"


def test_no_secret_is_written_in_the_file(raw: dict[str, Any]) -> None:
    def environments(node: Any) -> list[dict[str, Any]]:
        found = []
        if isinstance(node, dict):
            if isinstance(node.get("environment"), dict):
                found.append(node["environment"])
            for value in node.values():
                found += environments(value)
        return found

    checked = 0
    for env in environments(raw):
        for key, value in env.items():
            if SECRET_NAME.search(key):
                match = REFERENCE.fullmatch(str(value))
                assert match and match.group(2) == ":?", f"{key} must be ${{VAR:?...}}, not {value!r}"
                checked += 1
    assert checked >= 5
    for value in REQUIRED.values():
        assert value not in COMPOSE_FILE.read_text()


def test_env_example_documents_every_variable() -> None:
    example = (DEPLOY / ".env.example").read_text()
    documented = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    missing = set(REFERENCE_NAMES) - documented
    assert not missing, f"deploy/.env.example does not document {sorted(missing)}"
    for name in REQUIRED:
        assert re.search(rf"^{name}=change-me", example, re.MULTILINE), f"{name}: a placeholder, not a value"


def test_kafka_is_kraft_single_node_and_images_are_pinned(raw: dict[str, Any]) -> None:
    services = raw["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name, service in services.items():
        if "image" in service and name not in SERVICE_PORTS:
            tag = service["image"].rpartition(":")[2]
            assert ":" in service["image"] and tag not in ("", "latest"), f"{name}: pin the image tag"
