"""Shared pieces of the deployment-file tests: paths, the Debian tools they need, the services.

The tools (docker-compose, kubectl) come from Debian; deploy/install-tools.sh installs them.
A test that needs a missing tool skips with the reason, unless DRIFTLOOP_REQUIRE_DEPLOY_TOOLS
is set (CI sets it), in which case it fails: a missing tool must never pass silently there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "driftloop.json"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"

# The four services of the one image, and the HTTP port each listens on.
SERVICE_PORTS = {"inference": 8000, "ingest": 8001, "monitor": 8002, "trainer": 8003}

REQUIRE_TOOLS_VAR = "DRIFTLOOP_REQUIRE_DEPLOY_TOOLS"


def tools_required() -> bool:
    """True when the environment asks for a missing tool to fail the test instead of skipping it."""
    return os.environ.get(REQUIRE_TOOLS_VAR, "").strip().lower() not in ("", "0", "false", "no")


def require_tool(command: str, debian_package: str) -> str:
    """Path of ``command``; skip (or fail, under DRIFTLOOP_REQUIRE_DEPLOY_TOOLS) when it is missing."""
    path = shutil.which(command)
    if path:
        return path
    reason = f"{command} not found (Debian package {debian_package}; run deploy/install-tools.sh)"
    if tools_required():
        pytest.fail(f"{reason}, and {REQUIRE_TOOLS_VAR} is set", pytrace=False)
    pytest.skip(reason)
