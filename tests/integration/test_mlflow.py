"""MLflow alongside: the trainer and the mirror on the real broker, against a real ``mlflow server``.

The server (pinned by requirements-mlflow.lock: SQLite backend and artifacts in a temporary
directory, on a free loopback port) runs from a virtualenv of its own, ``.venv-mlflow/``, made
here on first use (about a minute from PyPI) so MLflow's dependencies never touch the project's.
What reached MLflow is read back with MLflow's own client (``mlflow.MlflowClient``), run in that
virtualenv: runs with their params, metrics, tags and artifacts (the ONNX graph byte for byte),
registered versions, and the ``production`` / ``canary`` aliases as the loop moves them.

Covered: every training run becomes one MLflow run and one model version, and aliases follow
promotions; the same history replayed from the start by a fresh consumer group adds nothing;
with MLflow stopped, the trainer trains, registers and rolls out as usual (nothing waits), the
mirror reports MLflow unreachable, and the run, version and alias appear once MLflow is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.mlflow_sync.app import MlflowSyncService, MlflowSyncSettings
from services.trainer.app import TrainerService, TrainerSettings
from shared import topics
from shared.broker import free_port
from shared.bus import KafkaOptions, Publisher
from shared.datasets import AcceptedRecord, DatasetRepository
from shared.events import DatasetVersionCreated, DeploymentChanged, DriftDetected, TrainingCompleted
from shared.registry import Registry
from shared.spec import apply_spec
from shared.store import FileStore
from tests.deploy.deployment import REQUIRE_TOOLS_VAR, tools_required
from tests.integration.serving import consuming as start
from tests.integration.serving import stop_service as stop
from tests.integration.topic_reading import read_keyed, wait_for

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements-mlflow.lock"
VENV = Path(os.environ.get("DRIFTLOOP_MLFLOW_VENV", ROOT / ".venv-mlflow"))
STAMP = VENV / ".installed"
INSTALL_TIMEOUT_S = 900


def lock_digest() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()


def venv_ready() -> bool:
    return STAMP.exists() and STAMP.read_text().strip() == lock_digest() and (VENV / "bin" / "mlflow").exists()


pytestmark = [pytest.mark.integration, pytest.mark.timeout(120 if venv_ready() else 120 + INSTALL_TIMEOUT_S)]

SPEC = """
name: {name}
features: [{{name: x1}}, {{name: x2}}, {{name: x3}}]
label: {{values: [0, 1]}}
training: {{estimator: LogisticRegression, params: {{C: 0.5}}, holdout: 0.25, seed: 7}}
triggers: {{new_labels: 100000, cooldown: 0s, max_runs_per_hour: 100}}
gate: {{metric: accuracy, min: 0.6, min_delta_vs_champion: -1.0}}
deployment: {{strategy: canary, canary_traffic: 0.2}}
"""
T0 = datetime(2026, 3, 1, tzinfo=UTC)

# Runs inside .venv-mlflow: what MLflow itself says it holds, as JSON on stdout.
CHECK = r"""
import hashlib, json, sys, tempfile
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

uri, experiment, name = sys.argv[1:4]
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
found = client.get_experiment_by_name(experiment)
runs = [] if found is None else client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
out = {"runs": [], "versions": [], "aliases": {}}
for run in runs:
    artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    onnx = None
    if "model.onnx" in artifacts:
        with tempfile.TemporaryDirectory() as tmp:
            with open(client.download_artifacts(run.info.run_id, "model.onnx", tmp), "rb") as f:
                onnx = hashlib.sha256(f.read()).hexdigest()
    out["runs"].append({
        "run_id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
        "params": run.data.params, "metrics": run.data.metrics, "tags": run.data.tags,
        "artifacts": artifacts, "onnx_sha256": onnx,
    })
try:
    registered = client.get_registered_model(name)
except MlflowException:
    registered = None
if registered is not None:
    for v in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)):
        out["versions"].append({"version": v.version, "run_id": v.run_id, "tags": v.tags, "source": v.source})
    for alias in registered.aliases:
        out["aliases"][alias] = client.get_model_version_by_alias(name, alias).version
print(json.dumps(out))
"""


def install_mlflow() -> None:
    """Make .venv-mlflow from requirements-mlflow.lock (once; again only when the lock changes).

    ``--no-compile``: pip's byte-compiling of every installed module took half of the install
    (35 s against 60-65 s); Python compiles what the server imports on its first start instead."""
    started = time.monotonic()
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]
        + ["-r", str(LOCK)],
    ]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if result.returncode != 0:
            reason = f"cannot install the MLflow test server ({' '.join(step[-3:])}): {result.stderr[-1500:]}"
            if tools_required():
                pytest.fail(reason)
            pytest.skip(f"{reason} (set {REQUIRE_TOOLS_VAR} to make this a failure)")
    STAMP.write_text(lock_digest())
    sys.stderr.write(f"made {VENV} in {time.monotonic() - started:.0f}s\n")


@dataclass
class MlflowServer:
    """``mlflow server`` on a loopback port, stopped and started again on the same port and database."""

    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server writes it while it runs
        self.process = subprocess.Popen(
            [
                str(VENV / "bin" / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no job runner: starts and stops faster
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends the server and its workers
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.uri}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"mlflow server did not answer in 60 s: {(self.root / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def state(self, model: str) -> dict[str, Any]:
        """Runs, versions and aliases of ``model`` as MLflow's own client reads them."""
        result = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", CHECK, self.uri, f"driftloop/{model}", model],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        state: dict[str, Any] = json.loads(result.stdout)
        return state


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    if not venv_ready():
        install_mlflow()
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), free_port())
    server.start()
    yield server
    server.stop()


def sea_rows(n: int, start: int = 0, seed: int = 0) -> list[AcceptedRecord]:
    """label = x1 + x2 > 10."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 10, size=(n, 3))
    y = (X[:, 0] + X[:, 1] > 10).astype(int)
    return [
        AcceptedRecord(f"r{start + i}", T0 + timedelta(seconds=start + i), int(y[i]), 1.0, None, None, tuple(X[i]))
        for i in range(n)
    ]


def write_dataset(store: FileStore, model: str, rows: list[AcceptedRecord], known: int | None) -> DatasetVersionCreated:
    manifest = DatasetRepository(store).write_version(model, "h" * 64, ["x1", "x2", "x3"], [0, 1], rows, known)
    assert manifest is not None
    return manifest.announcement()


def trainer_for(options: KafkaOptions, store: FileStore, group: str) -> TrainerService:
    return TrainerService(
        TrainerSettings(
            kafka_bootstrap=options.bootstrap,
            kafka_idempotence=False,
            store_kind="file",
            store_root=store.root,
            port=0,
            group_id=group,
            tick_s=0.1,
            spec_refresh_s=0.2,
        )
    )


def mirror_for(options: KafkaOptions, store: FileStore, group: str, uri: str) -> MlflowSyncService:
    return MlflowSyncService(
        MlflowSyncSettings(
            kafka_bootstrap=options.bootstrap,
            kafka_idempotence=False,
            store_kind="file",
            store_root=store.root,
            port=0,
            group_id=group,
            mlflow_tracking_uri=uri,
            mlflow_timeout_s=5.0,
        )
    )


def aliases_now(server: MlflowServer, model: str) -> dict[str, str]:
    """MLflow's aliases of ``model`` (REST, for waiting; the assertions read MLflow's client)."""
    try:
        answer = httpx.get(f"{server.uri}/api/2.0/mlflow/registered-models/get", params={"name": model}, timeout=2)
    except httpx.TransportError:
        return {}
    if answer.status_code != 200:
        return {}
    return {a["alias"]: a["version"] for a in answer.json()["registered_model"].get("aliases", [])}


async def test_runs_versions_and_aliases_reach_mlflow_and_a_replay_adds_nothing(
    mlflow_server: MlflowServer, options: KafkaOptions, store: FileStore, publisher: Publisher, unique: str
) -> None:
    model = f"m{unique}"
    apply_spec(store, SPEC.format(name=model))
    registry = Registry(store)
    trainer = trainer_for(options, store, f"trainer-{unique}")
    mirror = mirror_for(options, store, f"mirror-{unique}", mlflow_server.uri)
    tasks = [await start(trainer), await start(mirror)]
    try:
        await publisher.publish(write_dataset(store, model, sea_rows(2000), None))
        await wait_for(lambda: registry.alias(model, "production") == 1, timeout=30)
        await publisher.publish(write_dataset(store, model, sea_rows(1000, start=2000, seed=1), 1))
        await publisher.publish(
            DriftDetected(
                model=model,
                kind="data",
                feature="x1",
                detector="ADWIN",
                statistic=0.3,
                threshold=0.1,
                samples=500,
                severity="medium",
            )  # fmt: skip
        )
        await wait_for(lambda: registry.alias(model, "canary") == 2, timeout=30)
        await wait_for(lambda: aliases_now(mlflow_server, model) == {"production": "1", "canary": "2"}, timeout=30)

        # the monitor promotes the canary: production moves, canary is cleared
        registry.set_alias(model, "production", 2, "monitor", "canary error 0.04 <= champion 0.05")
        registry.set_alias(model, "canary", None, "monitor", "promoted to production")
        await publisher.publish(
            DeploymentChanged(
                model=model,
                action="promoted",
                version=2,
                previous_version=1,
                traffic=1.0,
                reason="canary error 0.04 <= champion 0.05",
                actor="monitor",
            )  # fmt: skip
        )
        await wait_for(lambda: aliases_now(mlflow_server, model) == {"production": "2"}, timeout=30)
        await wait_for(lambda: mirror.subscriber.stats.handled >= 5, timeout=30)  # 2 runs, 3 deployments
        completed = [
            TrainingCompleted.model_validate_json(v)
            for v in await read_keyed(options, topics.TRAINING_COMPLETED, model, 2)
        ]
    finally:
        for service, task in zip((mirror, trainer), reversed(tasks), strict=True):
            await stop(service, task)

    state = mlflow_server.state(model)
    assert [r["name"] for r in state["runs"]] == [f"{model} v1", f"{model} v2"]
    for run, event in zip(state["runs"], completed, strict=True):
        card = registry.card(model, event.version or 0)
        assert run["status"] == "FINISHED" and sorted(run["artifacts"]) == ["card.json", "model.onnx"]
        assert run["onnx_sha256"] == card.artifact_sha256, "the ONNX graph in MLflow is the registered one"
        assert run["params"]["seed"] == "7" and run["params"]["C"] == "0.5"
        assert run["params"]["dataset_version"] == str(event.dataset_version)
        assert run["params"]["dataset_manifest_sha256"] == card.dataset_manifest_sha256
        assert run["params"]["trigger"] == event.trigger
        assert run["metrics"]["accuracy"] == pytest.approx(event.metrics["accuracy"])
        assert run["tags"]["driftloop.gate"] == "passed" and run["tags"]["driftloop.event_id"] == str(event.event_id)
    assert "champion_accuracy" not in state["runs"][0]["metrics"]
    assert completed[1].champion_metrics is not None
    assert state["runs"][1]["metrics"]["champion_accuracy"] == pytest.approx(completed[1].champion_metrics["accuracy"])
    assert [(v["version"], v["tags"]["driftloop.version"]) for v in state["versions"]] == [("1", "1"), ("2", "2")]
    assert [v["run_id"] for v in state["versions"]] == [r["run_id"] for r in state["runs"]]
    assert state["versions"][1]["tags"]["driftloop.last_deployment"].startswith("promoted by monitor")
    assert state["aliases"] == {"production": "2"}

    # a fresh consumer group replays both topics from the start: MLflow already has everything
    replay = mirror_for(options, store, f"replay-{unique}", mlflow_server.uri)
    task = await start(replay)
    try:
        await wait_for(lambda: replay.subscriber.stats.handled >= 5, timeout=30)  # 2 runs, 3 deployments
    finally:
        await stop(replay, task)
    again = mlflow_server.state(model)
    assert [r["run_id"] for r in again["runs"]] == [r["run_id"] for r in state["runs"]]
    assert again["versions"] == state["versions"] and again["aliases"] == {"production": "2"}
    assert replay.subscriber.stats.dead_lettered == 0


async def test_with_mlflow_stopped_the_loop_goes_on_and_the_run_appears_when_it_returns(
    mlflow_server: MlflowServer, options: KafkaOptions, store: FileStore, publisher: Publisher, unique: str
) -> None:
    model = f"m{unique}"
    apply_spec(store, SPEC.format(name=model))
    registry = Registry(store)
    trainer = trainer_for(options, store, f"trainer-{unique}")
    mirror = mirror_for(options, store, f"mirror-{unique}", mlflow_server.uri)
    tasks = [await start(trainer), await start(mirror)]

    def unavailable() -> float:
        return mirror.registry.get_sample_value("driftloop_mlflow_sync_unavailable_total") or 0.0

    try:
        await asyncio.to_thread(mlflow_server.stop)
        await publisher.publish(write_dataset(store, model, sea_rows(2000), None))
        # the loop does not wait: the run trains, registers, is published and rolled out
        await wait_for(lambda: registry.alias(model, "production") == 1, timeout=30)
        (event,) = [
            TrainingCompleted.model_validate_json(v)
            for v in await read_keyed(options, topics.TRAINING_COMPLETED, model, 1)
        ]
        await wait_for(lambda: trainer.handlers.results, timeout=10)  # the run is over, none of it waited
        assert event.version == 1 and trainer.handlers.results[0].error is None
        await wait_for(lambda: unavailable() >= 2, timeout=30)  # the mirror tried, and keeps trying
        assert mirror.not_ready() is not None and "unreachable" in (mirror.not_ready() or "")
        assert mirror.subscriber.stats.dead_lettered == 0

        await asyncio.to_thread(mlflow_server.start)
        await wait_for(lambda: aliases_now(mlflow_server, model) == {"production": "1"}, timeout=45)
        # both events committed: the deployment's (which mirrors the version) may land before the
        # run's own, which is then still in its retry backoff
        await wait_for(lambda: mirror.subscriber.stats.handled >= 2, timeout=45)
        await wait_for(lambda: mirror.not_ready() is None, timeout=10)
    finally:
        for service, task in zip((mirror, trainer), reversed(tasks), strict=True):
            await stop(service, task)
        if mlflow_server.process is None:
            await asyncio.to_thread(mlflow_server.start)

    state = mlflow_server.state(model)
    (run,) = state["runs"]
    assert run["status"] == "FINISHED" and run["tags"]["driftloop.event_id"] == str(event.event_id)
    assert run["onnx_sha256"] == registry.card(model, 1).artifact_sha256
    assert [v["version"] for v in state["versions"]] == ["1"] and state["aliases"] == {"production": "1"}
