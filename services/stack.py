"""The local stack behind ``driftloop up``: embedded broker, FileStore, and every service.

Each service runs as its own child process (``driftloop serve NAME``), exactly as it would in
production, pointed at the embedded broker and the FileStore through ``DRIFTLOOP_*``
variables. The stack records where everything listens in ``<data-dir>/endpoints.json`` so
other commands find it, and on SIGTERM/SIGINT stops the services, then the broker, leaving
no process behind.

Logs live under ``<data-dir>/logs/``: one file per service (its stdout and stderr), the
broker's ``kafka.log``, and ``driftloop.log`` for the process running the stack itself (the
bus's and the libraries' lines that ``up`` and ``demo`` keep off the terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared import topics
from shared.broker import EmbeddedBroker, api_versions_ok, free_port
from shared.bus import KafkaOptions, all_topics_with_dlq, ensure_topics
from shared.config import ENDPOINTS_FILE
from shared.errors import ConfigError
from shared.spec import apply_spec
from shared.store import FileStore

log = logging.getLogger(__name__)

SERVICE_NAMES = ("ingest", "trainer", "inference", "monitor")
MLFLOW_SYNC = "mlflow-sync"
"""The optional mirror of runs, versions and aliases to MLflow: started by :meth:`LocalStack.start`
when ``DRIFTLOOP_MLFLOW_TRACKING_URI`` is set (in the environment or the stack's ``service_env``)."""
STACK_LOG = "driftloop.log"
"""The log file, under ``<data-dir>/logs/``, of the process that runs the stack."""
DEFAULT_PORTS = {
    "kafka": 9092,
    "inference": 8000,
    "ingest": 8001,
    "monitor": 8002,
    "trainer": 8003,
    MLFLOW_SYNC: 8004,
}


def pid_alive(pid: int) -> bool:
    """True when a process with that id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class StackConfig:
    """What ``driftloop up`` was asked for."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    partitions: int = 4
    log_level: str = "INFO"
    specs: list[tuple[str, str]] = field(default_factory=list)
    """(source, YAML text) of specs to apply at start."""
    service_env: dict[str, str] = field(default_factory=dict)
    """Extra ``DRIFTLOOP_*`` settings for every service process."""


@dataclass
class ChildService:
    """A service process started by the stack."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


class LocalStack:
    """Starts and stops the embedded stack; usable as a context manager."""

    missing: tuple[str, ...] = ()
    """Always empty: every service is built. Stays only while services/demo.py and
    benchmarks/bench_loop.py still test it; it goes with their checks."""

    def __init__(self, config: StackConfig) -> None:
        config.ports = {name: port or free_port() for name, port in config.ports.items()}  # 0: any free port
        self.config = config
        self.data_dir = config.data_dir.resolve()
        self.store_root = self.data_dir / "store"
        self.log_dir = self.data_dir / "logs"
        self.log_path = self.log_dir / STACK_LOG
        """This process's own log (``services.console.route_stack_logs`` writes it)."""
        self.broker = EmbeddedBroker(port=config.ports["kafka"], log_path=self.log_dir / "kafka.log")
        self.children: list[ChildService] = []

    @property
    def endpoints_path(self) -> Path:
        """``<data-dir>/endpoints.json``."""
        return self.data_dir / ENDPOINTS_FILE

    def _refuse_if_running(self) -> None:
        try:
            existing = json.loads(self.endpoints_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return
        pid = existing.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
            raise ConfigError(
                f"a local stack is already running from {self.data_dir} (pid {pid}); "
                "stop it first or use another --data-dir"
            )
        log.info("removing stale %s left by a stack that is gone", self.endpoints_path)
        self.endpoints_path.unlink(missing_ok=True)

    def start(self) -> dict[str, Any]:
        """Start broker, topics and services; write and return the endpoints."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store_root.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_if_running()
        store = FileStore(self.store_root)
        for source, text in self.config.specs:  # validated before anything starts
            spec, _ = apply_spec(store, text, source=source)
            log.info("spec %s applied from %s", spec.name, source)
        self.broker.start()
        options = KafkaOptions(bootstrap=self.broker.bootstrap, client_id="driftloop-up", idempotence=False)
        asyncio.run(ensure_topics(options, all_topics_with_dlq(), partitions=self.config.partitions))
        for name in self.service_names():
            self.children.append(self._spawn(name))
        endpoints = self.endpoints()
        tmp = self.endpoints_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(endpoints, indent=2))
        os.replace(tmp, self.endpoints_path)
        return endpoints

    def service_names(self) -> tuple[str, ...]:
        """The services this stack runs: the four, and the MLflow mirror when a tracking URI is set."""
        uri = self.config.service_env.get(
            "DRIFTLOOP_MLFLOW_TRACKING_URI", os.environ.get("DRIFTLOOP_MLFLOW_TRACKING_URI")
        )
        return (*SERVICE_NAMES, MLFLOW_SYNC) if uri else SERVICE_NAMES

    def endpoints(self) -> dict[str, Any]:
        """Where everything listens, as written to ``endpoints.json``."""
        return {
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(),
            "kafka_bootstrap": self.broker.bootstrap,
            "kafka_idempotence": False,
            "topics": list(topics.ALL),
            "store": {"kind": "file", "root": str(self.store_root)},
            "services": {c.name: c.url for c in self.children},
            "logs": str(self.log_dir),
        }

    def _spawn(self, name: str) -> ChildService:
        port = self.config.ports.get(name, 0)  # 0: any free port
        env = dict(os.environ)
        env.update(
            {
                "DRIFTLOOP_DATA_DIR": str(self.data_dir),
                "DRIFTLOOP_KAFKA_BOOTSTRAP": self.broker.bootstrap,
                "DRIFTLOOP_KAFKA_IDEMPOTENCE": "false",
                "DRIFTLOOP_KAFKA_PARTITIONS": str(self.config.partitions),
                "DRIFTLOOP_STORE_KIND": "file",
                "DRIFTLOOP_STORE_ROOT": str(self.store_root),
                "DRIFTLOOP_PORT": str(port),
                "DRIFTLOOP_LOG_LEVEL": self.config.log_level,
                # every service shares this machine: a trainer using all cores for OpenMP stalls itself
                "DRIFTLOOP_TRAIN_THREADS": "1",
                **self.config.service_env,
            }
        )
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", name],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the stack, which stops children in order
            )
        return ChildService(name=name, url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)

    def check(self) -> list[str]:
        """Problems seen now: a dead service or an unresponsive broker."""
        problems = [
            f"{c.name} exited with code {c.process.returncode}; see {c.log_path}"
            for c in self.children
            if c.process.poll() is not None
        ]
        if not api_versions_ok(self.broker.host, self.broker.port):
            problems.append("the embedded broker does not answer")
        return problems

    def stop(self, timeout: float = 10.0) -> None:
        """Stop services (SIGTERM, then SIGKILL after ``timeout``), then the broker."""
        for child in self.children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %ss; killing it", child.name, timeout)
                child.process.kill()
                child.process.wait()
        self.children.clear()
        self.broker.stop()
        with contextlib.suppress(FileNotFoundError):
            current = json.loads(self.endpoints_path.read_text())
            if current.get("pid") == os.getpid():
                self.endpoints_path.unlink()

    @contextlib.contextmanager
    def running(self) -> Iterator[dict[str, Any]]:
        """Start the stack for the duration of a ``with`` block."""
        try:
            yield self.start()
        finally:
            self.stop()
