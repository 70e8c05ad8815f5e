"""The mirror's use-cases on a real FileStore registry, with an in-memory MLflow at the REST seam.

Covered: a completed run becomes one MLflow run (params, metrics, tags, the card and the ONNX
graph as artifacts) and one model version, and the registry's aliases follow; a redelivered
event, or the same history replayed from the start, creates no second run, version or alias
move; versions are created in driftloop's order even when a deployment event or a late start
asks for a newer one first; a run that failed before registering is a FAILED run keyed by its
event; aliases cleared in driftloop are removed in MLflow while a team's own aliases stay; an
MLflow outage raises a transient error that the bus retries (never a dead letter), and a mirror
cut short halfway is completed by the next delivery, while a request MLflow refuses for good is
retried a few times and then dead-lettered with MLflow's reason; a server that does not proxy
artifacts still gets the run, with the reason in a tag. The real server is in tests/integration/test_mlflow.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from prometheus_client import CollectorRegistry

from services.mlflow_sync import core
from services.mlflow_sync.handlers import MlflowSyncHandlers
from services.mlflow_sync.metrics import MlflowSyncMetrics
from services.mlflow_sync.rest import MlflowRejected, MlflowUnavailable, RunInfo
from shared import topics
from shared.bus import TRANSIENT_ERRORS, Delivery, MessagePolicy, Outcome, Refused
from shared.events import DeploymentChanged, GateVerdict, TrainingCompleted
from shared.reference import PredictionReference, Reference
from shared.registry import InputSchema, ModelCard, Registry
from shared.store import FileStore

MODEL = "credit"
DELIVERY = Delivery(topics.TRAINING_COMPLETED, 0, 0, MODEL.encode(), b"{}", 0)


@dataclass
class FakeRun:
    run_id: str
    experiment_id: str
    name: str
    status: str = "RUNNING"
    artifact_uri: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: set[tuple[str, float, int]] = field(default_factory=set)
    tags: dict[str, str] = field(default_factory=dict)
    ended_ms: int | None = None


class FakeMlflow:
    """MLflow's behaviour as the mirror relies on it: ids it assigns, params that cannot change,
    metric rows unique per (key, value, timestamp), version numbers 1, 2, 3 ... per model."""

    def __init__(self, serves_artifacts: bool = True) -> None:
        self.base_url = "http://mlflow.test"
        self.serves_artifacts = serves_artifacts
        self.experiments: dict[str, str] = {}
        self.runs: dict[str, FakeRun] = {}
        self.artifacts: dict[str, bytes] = {}
        self.models: dict[str, list[dict[str, Any]]] = {}
        self.model_aliases: dict[str, dict[str, str]] = {}
        self.down = False
        self.fail_after: int | None = None
        """Calls left before the server goes down (None: never)."""
        self.calls: list[str] = []

    def _enter(self, name: str) -> None:
        if self.fail_after is not None:
            if self.fail_after == 0:
                self.down = True
            self.fail_after -= 1
        if self.down:
            raise MlflowUnavailable(f"MLflow at {self.base_url} unreachable (ConnectError: refused)")
        self.calls.append(name)

    async def experiment_id(self, name: str) -> str:
        self._enter("experiment_id")
        return self.experiments.setdefault(name, str(len(self.experiments) + 1))

    def _info(self, run: FakeRun) -> RunInfo:
        return RunInfo(run.run_id, run.status, run.artifact_uri, dict(run.tags))

    async def find_run(self, experiment_id: str, tag: str, value: str) -> RunInfo | None:
        self._enter("find_run")
        for run in self.runs.values():
            if run.experiment_id == experiment_id and run.tags.get(tag) == value:
                return self._info(run)
        return None

    async def create_run(self, experiment_id: str, name: str, started_ms: int, tags: dict[str, str]) -> RunInfo:
        self._enter("create_run")
        run_id = uuid.uuid4().hex
        root = "mlflow-artifacts:/" if self.serves_artifacts else "s3://bucket/"
        run = FakeRun(run_id, experiment_id, name, artifact_uri=f"{root}{experiment_id}/{run_id}/artifacts", tags=tags)
        self.runs[run_id] = run
        return self._info(run)

    async def log_batch(
        self,
        run_id: str,
        params: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        timestamp_ms: int = 0,
    ) -> None:
        self._enter("log_batch")
        run = self.runs[run_id]
        for key, value in (params or {}).items():
            if key in run.params and run.params[key] != value:
                raise MlflowRejected(f"Changing param values is not allowed ({key})", "INVALID_PARAMETER_VALUE")
            run.params[key] = value
        run.metrics |= {(k, v, timestamp_ms) for k, v in (metrics or {}).items()}
        run.tags.update(tags or {})

    async def finish_run(self, run_id: str, status: str, ended_ms: int) -> None:
        self._enter("finish_run")
        self.runs[run_id].status, self.runs[run_id].ended_ms = status, ended_ms

    async def upload_artifact(self, artifact_path: str, name: str, data: bytes) -> None:
        self._enter("upload_artifact")
        self.artifacts[f"{artifact_path}/{name}"] = data

    async def ensure_registered_model(self, name: str, description: str) -> None:
        self._enter("ensure_registered_model")
        self.models.setdefault(name, [])

    async def versions_by_tag(self, name: str, tag: str) -> dict[str, str]:
        self._enter("versions_by_tag")
        return {v["tags"][tag]: v["version"] for v in self.models.get(name, []) if tag in v["tags"]}

    async def find_version(self, name: str, tag: str, value: str) -> str | None:
        self._enter("find_version")
        return next((v["version"] for v in self.models.get(name, []) if v["tags"].get(tag) == value), None)

    async def create_version(self, name: str, source: str, run_id: str, tags: dict[str, str], description: str) -> str:
        self._enter("create_version")
        versions = self.models[name]
        number = str(len(versions) + 1)
        versions.append({"version": number, "source": source, "run_id": run_id, "tags": dict(tags)})
        return number

    async def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._enter("set_version_tag")
        next(v for v in self.models[name] if v["version"] == version)["tags"][key] = value

    async def aliases(self, name: str) -> dict[str, str]:
        self._enter("aliases")
        return dict(self.model_aliases.get(name, {}))

    async def set_alias(self, name: str, alias: str, version: str) -> None:
        self._enter("set_alias")
        self.model_aliases.setdefault(name, {})[alias] = version

    async def delete_alias(self, name: str, alias: str) -> None:
        self._enter("delete_alias")
        self.model_aliases.get(name, {}).pop(alias, None)

    # --- what a test reads ---

    def version_of(self, name: str, driftloop_version: int) -> dict[str, Any]:
        return next(v for v in self.models[name] if v["tags"][core.VERSION_TAG] == str(driftloop_version))


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store")


def register(store: FileStore, passed: bool = True, accuracy: float = 0.9) -> ModelCard:
    """A version in the registry, as the trainer leaves it (its graph is opaque bytes here)."""
    return Registry(store).register_built(
        MODEL,
        f"graph-{uuid.uuid4().hex}".encode(),
        InputSchema(features=["x"], label_values=["0", "1"]),
        Reference(
            features={}, predictions=PredictionReference(label_distribution={"0": 1.0}, probability_histograms={})
        ),
        "LogisticRegression",
        "test",
        metrics={"accuracy": accuracy},
        gate=GateVerdict(passed=passed, reasons=[f"accuracy {accuracy}"]),
        params={"C": 1.0},
        seed=7,
        window={"run_id": uuid.uuid4().hex, "rows": 100},
    )


def completed(card: ModelCard | None, **fields: Any) -> TrainingCompleted:
    values: dict[str, Any] = {
        "model": MODEL,
        "version": card.version if card else None,
        "trigger": "first_data",
        "dataset_version": 1,
        "metrics": card.metrics if card else {},
        "gate": card.gate if card else GateVerdict(passed=False, reasons=["run failed: OSError: disk full"]),
    }
    values.update(fields)
    return TrainingCompleted(**values)


Action = Literal["canary_started", "shadow_started", "promoted", "rolled_back"]


def deployed(version: int, action: Action = "promoted") -> DeploymentChanged:
    return DeploymentChanged(
        model=MODEL, action=action, version=version, traffic=1.0, reason="by the test", actor="monitor"
    )


def mirror(store: FileStore, mlflow: FakeMlflow) -> tuple[MlflowSyncHandlers, CollectorRegistry]:
    registry = CollectorRegistry()
    return MlflowSyncHandlers(store, mlflow, MlflowSyncMetrics.create(registry)), registry  # type: ignore[arg-type]


async def test_a_completed_run_becomes_a_run_with_artifacts_a_version_and_the_alias(store: FileStore) -> None:
    card = register(store)
    Registry(store).set_alias(MODEL, "production", 1, "trainer", "first version")
    mlflow = FakeMlflow()
    handlers, metrics = mirror(store, mlflow)
    await handlers.on_event(completed(card), DELIVERY)

    (run,) = mlflow.runs.values()
    assert run.status == "FINISHED" and run.name == "credit v1" and mlflow.experiments == {"driftloop/credit": "1"}
    assert run.params["seed"] == "7" and run.params["C"] == "1.0" and run.params["dataset_version"] == "1"
    assert ("accuracy", 0.9, core.millis(card.created_at)) in run.metrics
    assert run.tags["driftloop.gate"] == "passed" and run.tags[core.RUN_KEY_TAG] == "version-1"
    path = run.artifact_uri.removeprefix("mlflow-artifacts:/")
    assert mlflow.artifacts[f"{path}/model.onnx"] == Registry(store).load_onnx(MODEL, 1)
    assert ModelCard.model_validate_json(mlflow.artifacts[f"{path}/card.json"]) == card
    version = mlflow.version_of(MODEL, 1)
    assert version["version"] == "1" and version["run_id"] == run.run_id
    assert version["source"] == f"{run.artifact_uri}/model.onnx"
    assert mlflow.model_aliases[MODEL] == {"production": "1"}
    assert metrics.get_sample_value("driftloop_mlflow_sync_runs_total", {"model": MODEL, "status": "FINISHED"}) == 1
    assert metrics.get_sample_value("driftloop_mlflow_sync_reachable") == 1


async def test_a_redelivered_event_or_a_replay_from_the_start_creates_nothing_twice(store: FileStore) -> None:
    first, second = register(store), register(store, passed=False, accuracy=0.6)
    Registry(store).set_alias(MODEL, "production", 1, "trainer", "first version")
    mlflow = FakeMlflow()
    history: list[TrainingCompleted | DeploymentChanged] = [completed(first), deployed(1), completed(second)]
    handlers, _ = mirror(store, mlflow)
    for event in history:
        await handlers.on_event(event, DELIVERY)
    await handlers.on_event(history[-1], DELIVERY)  # redelivered: the commit was lost
    replay, _ = mirror(store, mlflow)  # a new process with no memory, replaying the topic from the start
    for event in history:
        await replay.on_event(event, DELIVERY)

    assert len(mlflow.runs) == 2 and all(r.status == "FINISHED" for r in mlflow.runs.values())
    assert [v["version"] for v in mlflow.models[MODEL]] == ["1", "2"]
    assert mlflow.version_of(MODEL, 2)["tags"]["driftloop.gate"] == "rejected"
    assert mlflow.model_aliases[MODEL] == {"production": "1"}
    assert mlflow.calls.count("create_run") == 2 and mlflow.calls.count("set_alias") == 1
    assert mlflow.calls.count("upload_artifact") == 4, "a complete run's artifacts are not sent again"


async def test_versions_are_mirrored_in_driftloops_order_whatever_asks_first(store: FileStore) -> None:
    cards = [register(store) for _ in range(3)]
    Registry(store).set_alias(MODEL, "production", 3, "monitor", "promoted")
    mlflow = FakeMlflow()
    handlers, _ = mirror(store, mlflow)
    await handlers.on_event(deployed(3), DELIVERY)  # the deployment event is read before the runs' events
    assert [v["tags"][core.VERSION_TAG] for v in mlflow.models[MODEL]] == ["1", "2", "3"]
    assert mlflow.model_aliases[MODEL] == {"production": "3"}
    assert mlflow.version_of(MODEL, 3)["tags"][core.DEPLOYMENT_TAG].startswith("promoted by monitor at ")
    for card in cards:  # their events arrive now: nothing new, the runs get the published verdicts
        await handlers.on_event(completed(card), DELIVERY)
    assert len(mlflow.runs) == 3 and len(mlflow.models[MODEL]) == 3
    assert all("driftloop.event_id" in r.tags for r in mlflow.runs.values())


async def test_a_run_that_failed_before_registering_is_one_failed_run(store: FileStore) -> None:
    mlflow = FakeMlflow()
    handlers, _ = mirror(store, mlflow)
    event = completed(None)
    await handlers.on_event(event, DELIVERY)
    await handlers.on_event(event, DELIVERY)
    (run,) = mlflow.runs.values()
    assert run.status == "FAILED" and run.tags[core.RUN_KEY_TAG] == f"event-{event.event_id}"
    assert "disk full" in run.tags["driftloop.gate_reasons"] and MODEL not in mlflow.models


async def test_aliases_cleared_in_driftloop_go_and_a_teams_own_alias_stays(store: FileStore) -> None:
    register(store), register(store)
    registry = Registry(store)
    registry.set_alias(MODEL, "production", 1, "trainer", "first version")
    registry.set_alias(MODEL, "canary", 2, "trainer", "passed the gate")
    mlflow = FakeMlflow()
    handlers, _ = mirror(store, mlflow)
    await handlers.on_event(deployed(2, "canary_started"), DELIVERY)
    assert mlflow.model_aliases[MODEL] == {"production": "1", "canary": "2"}
    mlflow.model_aliases[MODEL]["reviewed"] = "1"

    registry.set_alias(MODEL, "canary", None, "monitor", "rolled back: error up 8%")
    await handlers.on_event(deployed(2, "rolled_back"), DELIVERY)
    assert mlflow.model_aliases[MODEL] == {"production": "1", "reviewed": "1"}
    assert mlflow.version_of(MODEL, 2)["tags"][core.DEPLOYMENT_TAG].startswith("rolled_back by monitor")


async def test_an_outage_is_retried_by_the_bus_and_a_half_done_mirror_is_completed(store: FileStore) -> None:
    card = register(store)
    mlflow = FakeMlflow()
    handlers, metrics = mirror(store, mlflow)
    policy = MessagePolicy(handlers.on_event, decode=lambda topic, data: completed(card))
    assert issubclass(MlflowUnavailable, TRANSIENT_ERRORS)

    mlflow.fail_after = 4  # down after the run was created and half logged
    assert await policy(DELIVERY) is Outcome.RETRY, "an outage waits on Kafka; it never dead-letters the event"
    assert await policy(DELIVERY) is Outcome.RETRY
    (run,) = mlflow.runs.values()
    assert run.status == "RUNNING", "interrupted: the run is not marked finished"
    assert metrics.get_sample_value("driftloop_mlflow_sync_reachable") == 0
    assert metrics.get_sample_value("driftloop_mlflow_sync_unavailable_total") == 2
    assert handlers.unavailable_since is not None

    mlflow.down, mlflow.fail_after = False, None
    assert await policy(DELIVERY) is Outcome.DONE
    (run,) = mlflow.runs.values()
    assert run.status == "FINISHED" and len(mlflow.models[MODEL]) == 1 and len(mlflow.artifacts) == 2
    assert metrics.get_sample_value("driftloop_mlflow_sync_reachable") == 1 and handlers.unavailable_since is None


async def test_a_server_without_an_artifact_proxy_still_gets_the_run_and_the_reason(store: FileStore) -> None:
    card = register(store)
    mlflow = FakeMlflow(serves_artifacts=False)
    handlers, _ = mirror(store, mlflow)
    await handlers.on_event(completed(card), DELIVERY)
    (run,) = mlflow.runs.values()
    assert run.status == "FINISHED" and not mlflow.artifacts
    assert "--serve-artifacts" in run.tags[core.ARTIFACTS_TAG]
    assert mlflow.version_of(MODEL, 1)["version"] == "1"


async def test_a_prefix_keeps_the_mirror_apart_from_a_teams_own_registered_model(store: FileStore) -> None:
    card = register(store)
    mlflow = FakeMlflow()
    handlers = MlflowSyncHandlers(
        store,
        mlflow,  # type: ignore[arg-type]
        MlflowSyncMetrics.create(CollectorRegistry()),
        experiment_prefix="teams/risk/",
        model_prefix="driftloop-",
    )
    await handlers.on_event(completed(card), DELIVERY)
    assert list(mlflow.experiments) == ["teams/risk/credit"] and list(mlflow.models) == ["driftloop-credit"]


async def test_a_request_mlflow_refuses_for_good_is_retried_then_dead_lettered_with_its_reason(
    store: FileStore,
) -> None:
    card = register(store)
    mlflow = FakeMlflow()
    handlers, _ = mirror(store, mlflow)

    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise MlflowRejected("MLflow refused POST runs/log-batch (400 INVALID_PARAMETER_VALUE): too long", "X")

    mlflow.log_batch = refuse  # type: ignore[method-assign]
    policy = MessagePolicy(handlers.on_event, decode=lambda topic, data: completed(card), max_attempts=3)
    verdicts = [await policy(DELIVERY) for _ in range(3)]
    assert verdicts[:2] == [Outcome.RETRY, Outcome.RETRY]
    assert isinstance(verdicts[2], Refused) and "INVALID_PARAMETER_VALUE" in verdicts[2].reason
    assert handlers.unavailable_since is None, "a refusal is not an outage"
