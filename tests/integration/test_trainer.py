"""The trainer through the real local broker: triggered runs, the gate, coalescing, crash recovery."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.trainer import core
from services.trainer.app import TrainerService, TrainerSettings
from services.trainer.handlers import StateStore
from services.trainer.runner import train
from shared import topics
from shared.bus import KafkaOptions, Publisher
from shared.datasets import AcceptedRecord, DatasetRepository
from shared.events import DatasetVersionCreated, DeploymentChanged, DriftDetected, TrainingCompleted
from shared.registry import Registry
from shared.spec import apply_spec, parse_spec
from shared.store import FileStore
from tests.integration.serving import consuming as start
from tests.integration.serving import stop_service as stop
from tests.integration.topic_reading import read_keyed, wait_for

pytestmark = pytest.mark.integration

SPEC = """
name: {name}
features: [{{name: x1}}, {{name: x2}}, {{name: x3}}]
label: {{values: [0, 1]}}
training: {{estimator: {estimator}, params: {params}, holdout: 0.25, seed: 7}}
triggers: {{new_labels: 100000, cooldown: 0s, max_runs_per_hour: 100}}
gate: {{metric: accuracy, min: 0.6, min_delta_vs_champion: -0.01}}
deployment: {{strategy: canary, canary_traffic: 0.2}}
"""
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def sea_rows(n: int, start: int = 0, noise: float = 0.0, seed: int = 0) -> list[AcceptedRecord]:
    """A SEA-like concept: label = x1 + x2 > 10, optionally with flipped labels."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 10, size=(n, 3))
    y = (X[:, 0] + X[:, 1] > 10).astype(int)
    flip = rng.random(n) < noise
    y[flip] = 1 - y[flip]
    return [
        AcceptedRecord(f"r{start + i}", T0 + timedelta(seconds=start + i), int(y[i]), 1.0, None, None, tuple(X[i]))
        for i in range(n)
    ]


def write_dataset(store: FileStore, model: str, rows: list[AcceptedRecord], known: int | None) -> DatasetVersionCreated:
    repo = DatasetRepository(store)
    manifest = repo.write_version(model, "h" * 64, ["x1", "x2", "x3"], [0, 1], rows, known)
    assert manifest is not None
    return manifest.announcement()


def settings_for(options: KafkaOptions, store: FileStore, group: str) -> TrainerSettings:
    return TrainerSettings(
        kafka_bootstrap=options.bootstrap,
        kafka_idempotence=False,
        store_kind="file",
        store_root=store.root,
        port=0,
        group_id=group,
        tick_s=0.1,
        spec_refresh_s=0.2,
    )


async def test_first_data_trains_registers_and_promotes_then_gate_keeps_the_champion(
    options: KafkaOptions, store: FileStore, publisher: Publisher, unique: str
) -> None:
    model = f"m{unique}"
    apply_spec(store, SPEC.format(name=model, estimator="LogisticRegression", params="{}"))
    registry = Registry(store)
    service = TrainerService(settings_for(options, store, f"g-{unique}"))
    task = await start(service)
    try:
        await publisher.publish(write_dataset(store, model, sea_rows(2000), None))
        await wait_for(lambda: registry.alias(model, "production") == 1)
        completed = [
            TrainingCompleted.model_validate_json(v)
            for v in await read_keyed(options, topics.TRAINING_COMPLETED, model, 1)
        ]
        assert completed[0].version == 1 and completed[0].gate.passed and completed[0].trigger == "first_data"
        assert completed[0].metrics["accuracy"] > 0.9
        deployed = [
            DeploymentChanged.model_validate_json(v) for v in await read_keyed(options, topics.DEPLOYMENTS, model, 1)
        ]
        assert deployed[0].action == "promoted" and deployed[0].version == 1 and deployed[0].actor == "trainer"

        # a deliberately worse candidate: the newest rows (the holdout) keep the concept, the training rows are noise
        noisy = sea_rows(6000, start=2000, noise=0.45, seed=1) + sea_rows(2000, start=8000, seed=2)
        event = write_dataset(store, model, noisy, 1)
        await publisher.publish(
            DriftDetected(
                model=model,
                kind="concept",
                detector="ADWIN",
                statistic=0.3,
                threshold=0.01,
                samples=500,
                severity="high",
            )
        )
        await wait_for(lambda: registry.latest_version(model) == 2)
        completed = [
            TrainingCompleted.model_validate_json(v)
            for v in await read_keyed(options, topics.TRAINING_COMPLETED, model, 2)
        ]
    finally:
        await stop(service, task)
    second = completed[1]
    assert second.version == 2 and second.trigger == "drift" and second.dataset_version == event.version
    assert not second.gate.passed, second.gate.reasons
    assert second.champion_metrics is not None and second.champion_metrics["accuracy"] > second.metrics["accuracy"]
    assert registry.alias(model, "production") == 1 and registry.alias(model, "canary") is None
    card = registry.card(model, 2)
    assert card.champion_version == 1 and card.dataset_version == 2 and not card.gate.passed
    assert set(card.reference.features) == {"x1", "x2", "x3"}


async def test_burst_of_drift_events_during_a_run_yields_one_follow_up(
    options: KafkaOptions, store: FileStore, publisher: Publisher, unique: str
) -> None:
    model = f"m{unique}"
    apply_spec(store, SPEC.format(name=model, estimator="RandomForestClassifier", params="{n_estimators: 300}"))
    write_dataset(store, model, sea_rows(6000), None)
    service = TrainerService(settings_for(options, store, f"g-{unique}"))
    task = await start(service)
    registry = Registry(store)

    def drift(i: int) -> DriftDetected:
        return DriftDetected(
            model=model,
            kind="data",
            feature="x1",
            detector="KSWIN",
            statistic=0.5,
            threshold=0.1,
            samples=100 + i,
            severity="medium",
        )

    try:
        await publisher.publish(drift(0))
        await wait_for(lambda: StateStore(store).load(model).running is not None)
        for i in range(1, 10):  # the burst arrives while the first run is training
            await publisher.publish(drift(i))
        await wait_for(lambda: len(service.handlers.results) >= 2, timeout=120)
        await asyncio.sleep(3.0)  # a third run would start now
    finally:
        await stop(service, task)
    assert len(service.handlers.results) == 2, "one run, then exactly one follow-up for the nine events"
    first, follow_up = service.handlers.results
    assert first.trigger == follow_up.trigger == "drift"
    state = StateStore(store).load(model)
    assert state.runs == 2 and state.pending == [] and state.running is None
    assert registry.versions(model) == [1, 2]
    assert (
        service.registry.get_sample_value("driftloop_trainer_triggers_total", {"model": model, "kind": "drift"}) == 10
    )


async def test_a_run_interrupted_by_a_crash_is_resumed_without_a_duplicate(
    options: KafkaOptions, store: FileStore, unique: str
) -> None:
    model = f"m{unique}"
    apply_spec(store, SPEC.format(name=model, estimator="LogisticRegression", params="{}"))
    write_dataset(store, model, sea_rows(1000), None)
    spec = parse_spec(SPEC.format(name=model, estimator="LogisticRegression", params="{}"))
    registry = Registry(store)
    states = StateStore(store)

    # crash 1: after the version was registered, before the run was recorded as finished
    state = core.TrainerState(latest_dataset_version=1)
    state.add(core.Trigger(kind="first_data", event_id="e1", occurred_at=T0))
    core.start_run(state, "run-a")
    states.save(model, state)
    done = train(spec, DatasetRepository(store), registry, 1, "run-a", "first_data", None)
    assert done.card is not None and done.card.version == 1

    service = TrainerService(settings_for(options, store, f"g-{unique}"))
    task = await start(service)
    try:
        await wait_for(lambda: StateStore(store).load(model).running is None and service.handlers.results)
        assert registry.versions(model) == [1], "the resumed run found its version instead of registering another"
        assert registry.alias(model, "production") == 1

        # crash 2: a run that had not registered anything yet runs again and registers once
        state = StateStore(store).load(model)
        state.add(core.Trigger(kind="manual", event_id="e2", occurred_at=T0))
        core.start_run(state, "run-b")
        StateStore(store).save(model, state)
        service.handlers.states = StateStore(store)
        await wait_for(lambda: len(service.handlers.results) >= 2)
    finally:
        await stop(service, task)
    assert registry.versions(model) == [1, 2]
    assert registry.card(model, 2).window["run_id"] == "run-b"


RECOVERY_SPEC = """
name: {name}
features: [{{name: x1}}, {{name: x2}}, {{name: x3}}]
label: {{values: [0, 1]}}
training:
  estimator: LogisticRegression
  window: {{last_rows: 50000, since_change: true, min_rows_after_change: 300}}
  holdout: 0.25
  seed: 7
triggers: {{new_labels: null, cooldown: 0s, max_runs_per_hour: 100}}
gate: {{metric: accuracy, min: 0.6, min_delta_vs_champion: 0.05}}
deployment: {{strategy: direct}}
"""


def rotated_rows(n: int, start: int, seed: int) -> list[AcceptedRecord]:
    """The new regime: label = x1 > x2 (the old model scores about a coin flip on it)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 10, size=(n, 3))
    y = (X[:, 0] > X[:, 1]).astype(int)
    return [
        AcceptedRecord(f"r{start + i}", T0 + timedelta(seconds=start + i), int(y[i]), 1.0, None, None, tuple(X[i]))
        for i in range(n)
    ]


async def test_drift_waits_for_rows_after_the_change_trains_on_them_and_recovers_as_they_double(
    options: KafkaOptions, store: FileStore, publisher: Publisher, unique: str
) -> None:
    model = f"m{unique}"
    apply_spec(store, RECOVERY_SPEC.format(name=model))
    registry = Registry(store)
    service = TrainerService(settings_for(options, store, f"g-{unique}"))
    task = await start(service)
    change_at = T0 + timedelta(seconds=2000)

    def state() -> core.TrainerState:
        return StateStore(store).load(model)

    def waiting_gauge() -> float | None:
        return service.registry.get_sample_value("driftloop_trainer_waiting_rows", {"model": model})

    try:
        await publisher.publish(write_dataset(store, model, sea_rows(2000), None))
        await wait_for(lambda: registry.alias(model, "production") == 1)
        await publisher.publish(
            DriftDetected(
                model=model,
                model_version=1,
                kind="concept",
                detector="ADWIN",
                statistic=0.4,
                threshold=0.002,
                samples=3000,
                severity="high",
                change_samples=150,
                change_started_at=change_at,
            )
        )
        await publisher.publish(write_dataset(store, model, rotated_rows(200, 2000, seed=3), 1))

        # 200 of the 300 rows the spec asks for: the drift run waits, visibly
        def waiting() -> bool:
            recovery = state().recovery
            return recovery is not None and recovery.rows_version == 2 and recovery.waiting_rows == 100

        await wait_for(waiting, timeout=20)
        await wait_for(lambda: waiting_gauge() == 100, timeout=5)
        assert state().pending[0].kind == "drift" and registry.versions(model) == [1]

        await publisher.publish(write_dataset(store, model, rotated_rows(200, 2200, seed=4), 2))
        await wait_for(lambda: registry.latest_version(model) == 2, timeout=30)
        assert waiting_gauge() == 0
        await publisher.publish(write_dataset(store, model, rotated_rows(400, 2400, seed=5), 3))
        await wait_for(lambda: registry.latest_version(model) == 3, timeout=30)
        await wait_for(lambda: state().running is None and not state().pending, timeout=10)
        # one rejection does not end the schedule: twice the rows (1,600) make step 3
        await publisher.publish(write_dataset(store, model, rotated_rows(800, 2800, seed=6), 4))
        await wait_for(lambda: registry.latest_version(model) == 4, timeout=30)
        await wait_for(lambda: state().running is None and not state().pending, timeout=10)
        await publisher.publish(write_dataset(store, model, rotated_rows(1600, 3600, seed=7), 5))
        await asyncio.sleep(1.5)  # a step 4 would start now, were the schedule not over
        completed = [
            TrainingCompleted.model_validate_json(v)
            for v in await read_keyed(options, topics.TRAINING_COMPLETED, model, 4)
        ]
    finally:
        await stop(service, task)

    first, drift_run, step2, step3 = completed
    assert first.trigger == "first_data"
    assert drift_run.trigger == "drift (concept, change at 2026-03-01T00:33:20+00:00, 400 rows after it)"
    assert drift_run.gate.passed and drift_run.dataset_version == 3
    card = registry.card(model, 2)
    assert card.window["rows"] == 400 and card.window["change_at"] == change_at.isoformat()
    assert card.window["first_record_id"] == "r2000", "the window starts at the change point"
    assert card.training_rows == 300 and card.holdout_rows == 100
    # the old champion is judged on the new regime's holdout, the same rows as the candidate
    assert card.champion_version == 1 and card.champion_metrics is not None
    assert card.champion_metrics["accuracy"] < 0.8 < card.metrics["accuracy"]
    assert registry.alias(model, "production") == 2

    assert step2.trigger == "recovery step 2 (800 rows after the change)" and step2.dataset_version == 4
    assert registry.card(model, 3).window["rows"] == 800 and registry.card(model, 3).champion_version == 2
    assert not step2.gate.passed, "v2 already fits the new regime: no improvement of 0.05"
    assert step3.trigger == "recovery step 3 (1600 rows after the change)" and not step3.gate.passed
    assert registry.versions(model) == [1, 2, 3, 4] and registry.alias(model, "production") == 2

    recovery = state().recovery
    assert recovery is not None and recovery.steps == 3 and recovery.rows_used == 1600
    assert recovery.stopped == "step 3: the gate rejected 2 steps in a row (no improvement)"
