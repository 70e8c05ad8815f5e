"""deploy/Dockerfile, its health probe script and the tool installer."""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.deploy.deployment import DEPLOY, ROOT

DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
HEALTHCHECK_SCRIPT = DEPLOY / "healthcheck.py"


def instructions(keyword: str) -> list[str]:
    """Arguments of every ``keyword`` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.upper().startswith(keyword + " ")]


def test_base_image_is_pinned_python_311_slim() -> None:
    (arg,) = [a for a in instructions("ARG") if a.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim(-\w+)?", arg), arg


def test_installs_the_lock_then_the_package_without_deps() -> None:
    runs = instructions("RUN")
    lock = next(i for i, r in enumerate(runs) if "pip install -r requirements.lock" in r)
    package = next(i for i, r in enumerate(runs) if "pip install --no-deps" in r)
    assert lock < package
    assert " -e " not in runs[package] and "--editable" not in runs[package]


def test_runs_driftloop_as_a_non_root_user_with_a_healthcheck() -> None:
    (user,) = instructions("USER")
    assert user.split(":")[0] not in ("0", "root")
    assert instructions("ENTRYPOINT") == ['["driftloop"]']
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "driftloop-healthcheck" in healthcheck
    env = " ".join(instructions("ENV"))
    assert "DRIFTLOOP_HTTP_HOST=0.0.0.0" in env, "the services bind 127.0.0.1 by default"


def test_copied_sources_exist_and_are_not_docker_ignored() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    }
    for copy in instructions("COPY"):
        if copy.startswith("--from="):
            continue
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert source not in ignored and source.split("/")[0] not in ignored, f"{source} is in .dockerignore"


@pytest.fixture
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    statuses: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], statuses
    finally:
        server.shutdown()
        server.server_close()


def probe(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DRIFTLOOP_PORT": str(port)}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=20
    )


def test_healthcheck_script_follows_the_route(health_server: tuple[int, dict[str, int]]) -> None:
    port, statuses = health_server
    statuses["/health/ready"] = 200
    statuses["/health/live"] = 200
    assert probe(port).returncode == 0
    assert probe(port, "/health/live").returncode == 0
    statuses["/health/ready"] = 503
    not_ready = probe(port)
    assert not_ready.returncode == 1 and "503" in not_ready.stderr


def test_healthcheck_script_fails_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = probe(port)
    assert result.returncode == 1 and "unreachable" in result.stderr


def test_install_tools_script_is_valid_bash() -> None:
    script = DEPLOY / "install-tools.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=10).returncode == 0
    text = script.read_text()
    assert "apt-get update" in text and "docker-compose" in text and "kubernetes-client" in text
