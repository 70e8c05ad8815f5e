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
    return DatasetVersionCreated(
        model=model,
        version=manifest.version,
        manifest_key=f"datasets/{model}/versions/{manifest.version}.json",
        rows_total=manifest.rows_total,
        rows_added=manifest.rows_added,
        label_counts=manifest.label_counts,
        schema_hash=manifest.schema_hash,
    )


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


async def start(service: TrainerService) -> asyncio.Task[None]:
    task = asyncio.create_task(service.run())
    async with asyncio.timeout(20):
        while not service.subscriber.started.is_set():
            await asyncio.sleep(0.02)
    return task


async def stop(service: TrainerService, task: asyncio.Task[None]) -> None:
    service.stop()
    await asyncio.wait_for(task, 60)


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
