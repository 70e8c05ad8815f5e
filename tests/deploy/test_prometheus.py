"""deploy/prometheus/prometheus.yml scrapes /metrics of every service on its compose name and port."""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.deployment import COMPOSE_FILE, PROMETHEUS_CONFIG, SERVICE_PORTS


def scrape_targets(job: dict[str, Any]) -> set[str]:
    targets = {t for static in job.get("static_configs", []) for t in static["targets"]}
    for dns in job.get("dns_sd_configs", []):
        assert dns.get("type", "SRV") == "A", "A records: compose DNS has no SRV"
        targets |= {f"{name}:{dns['port']}" for name in dns["names"]}
    return targets


def test_every_service_is_scraped_on_its_port() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name, port in SERVICE_PORTS.items():
        assert name in jobs, f"no scrape job for {name}"
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
        assert scrape_targets(jobs[name]) == {f"{name}:{port}"}
        assert str(compose[name]["environment"]["DRIFTLOOP_PORT"]) == str(port)


def test_compose_mounts_this_config() -> None:
    prometheus = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["prometheus"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
