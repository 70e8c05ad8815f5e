"""``driftloop up`` starts the local stack, prints its endpoints and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from services.stack import pid_alive
from shared.broker import EmbeddedBroker, api_versions_ok, free_port

pytestmark = pytest.mark.integration


ANY_SERVICE_PORT = ["--inference-port", "0", "--ingest-port", "0", "--monitor-port", "0", "--trainer-port", "0"]


def driftloop(*args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    extra = ANY_SERVICE_PORT if args and args[0] == "up" and "--help" not in args else []
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,  # type: ignore[call-overload]
    )


def wait_for_endpoints(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"up exited early: {proc.communicate()[1].decode()}")
        try:
            endpoints = dict(json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            endpoints = {}
        if endpoints.get("pid") == proc.pid:
            return endpoints
        time.sleep(0.05)
    raise AssertionError("no endpoints.json")


def test_up_starts_prints_endpoints_and_stops_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "x"
    port = free_port()
    proc = driftloop("up", "--data-dir", str(data_dir), "--kafka-port", str(port))
    try:
        endpoints = wait_for_endpoints(data_dir / "endpoints.json", proc)
        assert endpoints["kafka_bootstrap"] == f"127.0.0.1:{port}"
        assert endpoints["pid"] == proc.pid
        assert api_versions_ok("127.0.0.1", port)
        assert Path(str(endpoints["store"]["root"])).is_dir()  # type: ignore[index]

        second = driftloop("up", "--data-dir", str(data_dir), "--kafka-port", str(free_port()))
        _, err = second.communicate(timeout=30)
        assert second.returncode == 1
        assert "already running" in err.decode()
        assert api_versions_ok("127.0.0.1", port), "the refused second stack must not disturb the first"

        children = _children(proc.pid)
        assert children, "the broker runs as a child process"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
        text = stderr.decode()
        assert proc.returncode == 0, text
        assert f"127.0.0.1:{port}" in text  # the endpoints table
        assert "local stack stopped" in text
        assert not (data_dir / "endpoints.json").exists()
        assert not any(pid_alive(pid) for pid in children), "no process may be left behind"
        assert not api_versions_ok("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_stale_endpoints_file_is_replaced(tmp_path: Path) -> None:
    tmp_path.joinpath("endpoints.json").write_text(json.dumps({"pid": 2**22 + 12345, "kafka_bootstrap": "x:1"}))
    port = free_port()
    proc = driftloop("up", "--data-dir", str(tmp_path), "--kafka-port", str(port))
    try:
        endpoints = wait_for_endpoints(tmp_path / "endpoints.json", proc)
        assert endpoints["kafka_bootstrap"] == f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_busy_kafka_port_is_a_clear_error(tmp_path: Path, broker: object) -> None:
    port = int(str(broker.port))
    proc = driftloop("up", "--data-dir", str(tmp_path), "--kafka-port", str(port))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "already has a Kafka broker; choose another port" in err.decode()


def test_serve_monitor_alone_until_sigterm(tmp_path: Path, broker: EmbeddedBroker) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DRIFTLOOP_KAFKA_BOOTSTRAP": broker.bootstrap,
        "DRIFTLOOP_KAFKA_IDEMPOTENCE": "false",
        "DRIFTLOOP_STORE_KIND": "file",
        "DRIFTLOOP_STORE_ROOT": str(tmp_path / "store"),
        "DRIFTLOOP_DATA_DIR": str(tmp_path),
        "DRIFTLOOP_PORT": str(port),
    }
    proc = driftloop("serve", "monitor", env=env)
    try:
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and not ready:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as response:
                    ready = response.status == 200
            except OSError:
                time.sleep(0.2)
        assert ready, "the monitor becomes ready against the broker"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/unknown/status", timeout=5)
        assert missing.value.code == 404 and "driftloop specs apply" in missing.value.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]


def test_help_describes_commands() -> None:
    proc = driftloop("up", "--help")
    out, _ = proc.communicate(timeout=30)
    text = out.decode()
    for flag in ("--data-dir", "--kafka-port", "--inference-port", "--ingest-port", "--monitor-port", "--trainer-port"):
        assert flag in text


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]
