"""The trainer's use-cases on a FileStore, with a recording publisher and a hand-moved clock.

Covered: triggers from ``datasets`` and ``drift`` events are persisted in the state file (once
per event, and not at all for a model without spec or with ``on_drift`` off); the worker loop
turns them into runs that register a version and publish ``TrainingCompleted``; a passed
candidate moves the alias its deployment strategy names (production for the first version),
a rejected or failed one moves none; triggers arriving during a run coalesce into one
follow-up run; the cooldown and the hourly budget defer a trigger without dropping it; a run
failing on store trouble runs its triggers again; a run cut short by a crash resumes under its
run id; a drift under ``window.since_change`` waits for rows after the change point, counted on
datasets events and on the worker's tick, then trains on those rows alone; every trigger a
cooldown defers is counted once, including one arriving while others are already held back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.trainer import core, handlers
from services.trainer.handlers import StateStore, TrainerHandlers, state_key
from services.trainer.metrics import TrainerMetrics
from services.trainer.runner import RunResult, train
from shared import topics
from shared.bus import Delivery
from shared.datasets import AcceptedRecord, DatasetRepository
from shared.errors import StoreError
from shared.events import DatasetVersionCreated, DeploymentChanged, DriftDetected, Event, TrainingCompleted
from shared.registry import Registry
from shared.spec import SpecCatalog, apply_spec, parse_spec
from shared.store import FileStore

MODEL = "sea"
SPEC = """
name: {name}
features: [{{name: x1}}, {{name: x2}}, {{name: x3}}]
label: {{values: [0, 1]}}
training:
  estimator: LogisticRegression
  holdout: 0.25
  seed: 7
  window: {{since_change: {since_change}, min_rows_after_change: 100}}
triggers: {{on_drift: {on_drift}, new_labels: {new_labels}, cooldown: {cooldown}, max_runs_per_hour: {max_runs}}}
gate: {{metric: accuracy, min: 0.6, min_delta_vs_champion: {min_delta}}}
deployment: {{strategy: {strategy}, canary_traffic: 0.2}}
"""
T0 = datetime(2026, 3, 1, tzinfo=UTC)
DELIVERY = Delivery(topics.DATASETS, 0, 0, MODEL.encode(), b"{}", 0)


def spec_text(
    name: str = MODEL,
    *,
    strategy: str = "canary",
    min_delta: float = -1.0,
    cooldown: str = "0s",
    max_runs: int = 100,
    new_labels: str = "100000",
    on_drift: bool = True,
    since_change: bool = False,
) -> str:
    return SPEC.format(
        name=name,
        strategy=strategy,
        min_delta=min_delta,
        cooldown=cooldown,
        max_runs=max_runs,
        new_labels=new_labels,
        on_drift=str(on_drift).lower(),
        since_change=str(since_change).lower(),
    )


@dataclass
class RecordingPublisher:
    """The publisher seam: every event published, acknowledged at once."""

    events: list[Event] = field(default_factory=list)

    async def publish(self, event: Event, headers: Any = None) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class FakeClock:
    """The trainer's wall clock, moved by hand; ``reads`` counts the worker's looks at it (one per pass)."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> datetime:
        self.reads += 1
        return self.now


class Trainer:
    """One trainer replica on a store: handlers, publisher, metrics, clock."""

    def __init__(self, store: FileStore, clock: FakeClock | None = None) -> None:
        self.store = store
        self.clock = clock or FakeClock(T0 + timedelta(days=1))
        self.publisher = RecordingPublisher()
        self.metrics_registry = CollectorRegistry()
        self.handlers = TrainerHandlers(
            store,
            SpecCatalog(store, refresh_s=60.0),
            self.publisher,  # type: ignore[arg-type]
            TrainerMetrics.create(self.metrics_registry),
            clock=self.clock,
            tick_s=0.01,
        )

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics_registry.get_sample_value(name, labels)

    def completed(self) -> list[TrainingCompleted]:
        return self.publisher.of(TrainingCompleted)

    def deployments(self) -> list[DeploymentChanged]:
        return self.publisher.of(DeploymentChanged)

    @asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        """The worker loop running beside the test, as in the service; stopped (its run finished) on exit."""
        task = asyncio.create_task(self.handlers.work())
        try:
            yield
        finally:
            self.handlers.stop()
            await asyncio.wait_for(task, 30)

    async def until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        """Wait, yielding to the worker, until ``done()`` holds."""
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.005)


def sea_rows(n: int, start: int = 0, seed: int = 0, rotated: bool = False) -> list[AcceptedRecord]:
    """label = x1 + x2 > 10 (or, ``rotated``, x1 > x2); record ``i`` happened at T0 + i seconds."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 10, size=(n, 3))
    y = (X[:, 0] > X[:, 1]) if rotated else (X[:, 0] + X[:, 1] > 10)
    return [
        AcceptedRecord(f"r{start + i}", T0 + timedelta(seconds=start + i), int(y[i]), 1.0, None, None, tuple(X[i]))
        for i in range(n)
    ]


def write_dataset(store: FileStore, rows: list[AcceptedRecord], model: str = MODEL) -> DatasetVersionCreated:
    """Store a new dataset version (as ingest does) and return its announcement."""
    repo = DatasetRepository(store)
    manifest = repo.write_version(model, "h" * 64, ["x1", "x2", "x3"], [0, 1], rows, repo.latest_version(model))
    assert manifest is not None
    return manifest.announcement()


def drift(model: str = MODEL, **extra: Any) -> DriftDetected:
    return DriftDetected(
        model=model,
        kind="concept",
        detector="ADWIN",
        statistic=0.3,
        threshold=0.01,
        samples=500,
        severity="high",
        **extra,
    )


def stored_state(store: FileStore, model: str = MODEL) -> core.TrainerState:
    """The state as a restarted replica would read it (no cache)."""
    return StateStore(store).load(model)


def with_champion(store: FileStore, spec: str) -> None:
    """Version 1 trained on 400 rows and serving as production."""
    write_dataset(store, sea_rows(400))
    result = train(parse_spec(spec), DatasetRepository(store), Registry(store), 1, "seed-run", "manual", None)
    assert result.card is not None, result.error
    Registry(store).set_alias(MODEL, "production", 1, "test", "champion")


def hold_first_run(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[str]]:
    """Make the trainer's first run wait (in its worker thread) until the returned event is set;
    the list collects every run's id."""
    may_finish = threading.Event()
    calls: list[str] = []

    def held_train(*args: Any, **kwargs: Any) -> RunResult:
        calls.append(args[4])
        if len(calls) == 1:
            assert may_finish.wait(20), "the test never released the first run"
        return train(*args, **kwargs)

    monkeypatch.setattr(handlers, "train", held_train)
    return may_finish, calls


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store")


# --- triggers ------------------------------------------------------------------------------


async def test_a_first_dataset_version_is_persisted_as_one_first_data_trigger(store: FileStore) -> None:
    apply_spec(store, spec_text())
    trainer = Trainer(store)
    event = write_dataset(store, sea_rows(400))

    await trainer.handlers.on_event(event, DELIVERY)
    await trainer.handlers.on_event(event, DELIVERY)  # redelivered before the commit

    assert store.exists(state_key(MODEL))
    state = stored_state(store)
    assert [(t.kind, t.event_id) for t in state.pending] == [("first_data", str(event.event_id))]
    assert state.latest_dataset_version == 1 and state.latest_dataset_rows == 400
    assert trainer.metric("driftloop_trainer_triggers_total", model=MODEL, kind="first_data") == 1
    assert trainer.metric("driftloop_trainer_pending_triggers", model=MODEL) == 1


async def test_new_labels_trigger_once_enough_rows_arrived_since_the_last_run(store: FileStore) -> None:
    apply_spec(store, spec_text(new_labels="500"))
    StateStore(store).save(MODEL, core.TrainerState(runs=1, rows_at_last_run=400, latest_dataset_version=1))
    trainer = Trainer(store)
    write_dataset(store, sea_rows(400))

    await trainer.handlers.on_event(write_dataset(store, sea_rows(499, start=400)), DELIVERY)
    assert stored_state(store).pending == [], "499 new labels: not yet"
    await trainer.handlers.on_event(write_dataset(store, sea_rows(1, start=899)), DELIVERY)

    [trigger] = stored_state(store).pending
    assert trigger.kind == "new_labels" and trigger.detail == "500 new labels"
    assert stored_state(store).latest_dataset_version == 3


async def test_events_for_a_model_without_spec_leave_no_state(store: FileStore) -> None:
    trainer = Trainer(store)
    await trainer.handlers.on_event(write_dataset(store, sea_rows(100), model="nospec"), DELIVERY)
    await trainer.handlers.on_event(drift("nospec"), DELIVERY)

    assert not store.exists(state_key("nospec")) and StateStore(store).models() == []


async def test_a_drift_is_persisted_once_as_a_trigger(store: FileStore) -> None:
    apply_spec(store, spec_text())
    trainer = Trainer(store)
    event = drift(feature="x1")

    await trainer.handlers.on_event(event, DELIVERY)
    await trainer.handlers.on_event(event, DELIVERY)

    [trigger] = stored_state(store).pending
    assert trigger.kind == "drift" and trigger.event_id == str(event.event_id)
    assert trigger.detail == "concept drift on x1 (ADWIN)"
    assert trainer.metric("driftloop_trainer_triggers_total", model=MODEL, kind="drift") == 1


async def test_a_drift_is_ignored_when_the_spec_turns_on_drift_off(store: FileStore) -> None:
    apply_spec(store, spec_text(on_drift=False))
    trainer = Trainer(store)
    await trainer.handlers.on_event(drift(), DELIVERY)

    assert stored_state(store).pending == []
    assert trainer.metric("driftloop_trainer_triggers_total", model=MODEL, kind="drift") is None


# --- runs and rollout ----------------------------------------------------------------------


async def test_the_first_passed_version_goes_to_production_whatever_the_strategy(store: FileStore) -> None:
    apply_spec(store, spec_text(strategy="canary"))
    trainer = Trainer(store)
    event = write_dataset(store, sea_rows(400))
    await trainer.handlers.on_event(event, DELIVERY)

    async with trainer.working():
        await trainer.until(lambda: len(trainer.deployments()) == 1)

    [completed] = trainer.completed()
    assert completed.version == 1 and completed.gate.passed and completed.trigger == "first_data"
    assert completed.trigger_event_id == event.event_id and completed.dataset_version == 1
    assert completed.metrics["accuracy"] > 0.9
    registry = Registry(store)
    assert registry.versions(MODEL) == [1] and registry.aliases(MODEL) == {"production": 1}
    [deployed] = trainer.deployments()
    assert (deployed.action, deployed.version, deployed.previous_version, deployed.traffic) == (
        "promoted",
        1,
        None,
        1.0,
    )
    assert deployed.actor == "trainer" and deployed.reason.startswith("first version of the model")
    state = stored_state(store)
    assert state.runs == 1 and state.pending == [] and state.running is None and state.rows_at_last_run == 400
    assert trainer.metric("driftloop_trainer_runs_total", model=MODEL, outcome="passed") == 1


@pytest.mark.parametrize(
    ("strategy", "aliases", "action", "traffic"),
    [
        ("canary", {"production": 1, "canary": 2}, "canary_started", 0.2),
        ("shadow", {"production": 1, "shadow": 2}, "shadow_started", 0.0),
        ("direct", {"production": 2}, "promoted", 1.0),
    ],
)
async def test_a_passed_candidate_moves_the_alias_its_strategy_names(
    store: FileStore, strategy: str, aliases: dict[str, int], action: str, traffic: float
) -> None:
    spec = spec_text(strategy=strategy)
    apply_spec(store, spec)
    with_champion(store, spec)
    trainer = Trainer(store)
    await trainer.handlers.on_event(drift(), DELIVERY)

    async with trainer.working():
        await trainer.until(lambda: len(trainer.deployments()) == 1)

    [completed] = trainer.completed()
    assert completed.version == 2 and completed.gate.passed and completed.trigger == "drift"
    assert completed.champion_metrics is not None
    assert Registry(store).aliases(MODEL) == aliases
    [deployed] = trainer.deployments()
    assert (deployed.action, deployed.version, deployed.previous_version, deployed.traffic) == (action, 2, 1, traffic)


async def test_a_candidate_the_gate_rejects_is_registered_but_moves_no_alias(store: FileStore) -> None:
    spec = spec_text(strategy="direct", min_delta=0.5)  # nobody beats the champion by 0.5
    apply_spec(store, spec)
    with_champion(store, spec)
    trainer = Trainer(store)
    await trainer.handlers.on_event(drift(), DELIVERY)

    async with trainer.working():
        await trainer.until(lambda: len(trainer.completed()) == 1)

    [completed] = trainer.completed()
    assert completed.version == 2 and not completed.gate.passed
    assert any("below min delta" in reason for reason in completed.gate.reasons)
    assert Registry(store).versions(MODEL) == [1, 2] and Registry(store).aliases(MODEL) == {"production": 1}
    assert trainer.deployments() == []
    assert trainer.metric("driftloop_trainer_runs_total", model=MODEL, outcome="rejected") == 1
    assert stored_state(store).pending == [], "a rejection is an answer: the trigger is spent"


async def test_a_failed_run_is_reported_and_registers_nothing(store: FileStore) -> None:
    apply_spec(store, spec_text())
    trainer = Trainer(store)
    await trainer.handlers.on_event(write_dataset(store, sea_rows(20)), DELIVERY)  # too few rows to train

    async with trainer.working():
        await trainer.until(lambda: len(trainer.completed()) == 1)

    [completed] = trainer.completed()
    assert completed.version is None and not completed.gate.passed and completed.artifact_key is None
    assert "too few to train" in completed.gate.reasons[0]
    assert Registry(store).versions(MODEL) == [] and trainer.deployments() == []
    assert trainer.metric("driftloop_trainer_runs_total", model=MODEL, outcome="failed") == 1
    state = stored_state(store)
    assert state.runs == 1 and state.pending == [] and state.running is None


async def test_reporting_a_run_twice_offers_it_once(store: FileStore) -> None:
    spec = spec_text(strategy="canary")
    apply_spec(store, spec)
    with_champion(store, spec)
    trainer = Trainer(store)
    result: RunResult = train(parse_spec(spec), DatasetRepository(store), Registry(store), 1, "run-x", "drift", None)
    assert result.passed, result.gate.reasons

    await trainer.handlers.report(parse_spec(spec), result)
    await trainer.handlers.report(parse_spec(spec), result)  # a run resumed after a crash reports again

    assert len(trainer.completed()) == 2 and len(trainer.deployments()) == 1
    assert Registry(store).aliases(MODEL) == {"production": 1, "canary": 2}
    assert len(Registry(store).history(MODEL, "canary")) == 1


async def test_triggers_arriving_during_a_run_coalesce_into_one_follow_up_run(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_spec(store, spec_text())
    trainer = Trainer(store)
    await trainer.handlers.on_event(write_dataset(store, sea_rows(400)), DELIVERY)
    first_run_may_finish, calls = hold_first_run(monkeypatch)
    try:
        async with trainer.working():
            await trainer.until(lambda: stored_state(store).running is not None)
            burst = [drift(feature=f"x{i % 3 + 1}") for i in range(6)]
            for event in burst:
                await trainer.handlers.on_event(event, DELIVERY)
            assert [t.kind for t in stored_state(store).pending] == ["drift"] * 6
            first_run_may_finish.set()
            await trainer.until(lambda: len(trainer.completed()) == 2 and stored_state(store).running is None)
    finally:
        first_run_may_finish.set()

    assert len(calls) == 2, "one run, then exactly one follow-up for the six events"
    first, follow_up = trainer.completed()
    assert first.trigger == "first_data" and follow_up.trigger == "drift"
    assert follow_up.trigger_event_id == burst[0].event_id
    assert Registry(store).versions(MODEL) == [1, 2]
    state = stored_state(store)
    assert state.runs == 2 and state.pending == []
    assert trainer.metric("driftloop_trainer_triggers_total", model=MODEL, kind="drift") == 6


@pytest.mark.parametrize(
    ("cooldown", "max_runs", "wait"),
    [("5m", 100, timedelta(minutes=5)), ("0s", 1, timedelta(hours=1))],
    ids=["cooldown", "max_runs_per_hour"],
)
async def test_a_trigger_inside_the_budget_is_deferred_not_dropped(
    store: FileStore, cooldown: str, max_runs: int, wait: timedelta
) -> None:
    apply_spec(store, spec_text(cooldown=cooldown, max_runs=max_runs))
    clock = FakeClock(T0 + timedelta(days=1))
    trainer = Trainer(store, clock)
    await trainer.handlers.on_event(write_dataset(store, sea_rows(400)), DELIVERY)

    async with trainer.working():
        await trainer.until(lambda: stored_state(store).runs == 1)
        first_ended = clock.now
        clock.now = first_ended + timedelta(seconds=30)
        await trainer.handlers.on_event(drift(), DELIVERY)
        await trainer.until(lambda: stored_state(store).suppressed == 1)
        assert len(trainer.completed()) == 1
        assert [t.kind for t in stored_state(store).pending] == ["drift"], "still pending"
        assert trainer.metric("driftloop_trainer_suppressed_triggers_total", model=MODEL) == 1

        clock.now = first_ended + wait
        await trainer.until(lambda: len(trainer.completed()) == 2)

    assert trainer.completed()[1].trigger == "drift"
    state = stored_state(store)
    assert state.pending == [] and state.runs == 2 and state.suppressed == 1, "deferred once, counted once"


async def test_every_trigger_deferred_by_the_cooldown_is_counted(store: FileStore) -> None:
    apply_spec(store, spec_text(cooldown="5m"))
    clock = FakeClock(T0 + timedelta(days=1))
    trainer = Trainer(store, clock)
    await trainer.handlers.on_event(write_dataset(store, sea_rows(400)), DELIVERY)

    async with trainer.working():
        await trainer.until(lambda: stored_state(store).runs == 1)
        clock.now += timedelta(seconds=30)
        await trainer.handlers.on_event(drift(), DELIVERY)
        await trainer.until(lambda: stored_state(store).suppressed == 1)
        clock.now += timedelta(seconds=30)
        await trainer.handlers.on_event(drift(), DELIVERY)
        reads = clock.reads
        await trainer.until(lambda: clock.reads >= reads + 2)  # the worker looked again, still in the cooldown

    assert len(stored_state(store).pending) == 2 and len(trainer.completed()) == 1
    assert stored_state(store).suppressed == 2
    assert trainer.metric("driftloop_trainer_suppressed_triggers_total", model=MODEL) == 2


class FlakyStore(FileStore):
    """A FileStore whose first read of a dataset shard fails, as an unreachable S3 would."""

    failures = 1

    def get(self, key: str) -> bytes:
        if "/shards/" in key and self.failures:
            self.failures -= 1
            raise StoreError(f"{key}: connection reset")
        return super().get(key)


async def test_a_run_failing_on_store_trouble_runs_its_triggers_again(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "store")
    apply_spec(store, spec_text())
    trainer = Trainer(store)
    event = write_dataset(store, sea_rows(400))
    await trainer.handlers.on_event(event, DELIVERY)

    async with trainer.working():
        await trainer.until(lambda: len(trainer.deployments()) == 1)

    failed, retried = trainer.completed()
    assert failed.version is None and "connection reset" in failed.gate.reasons[0]
    assert retried.version == 1 and retried.gate.passed and retried.trigger_event_id == event.event_id
    assert Registry(store).aliases(MODEL) == {"production": 1}
    assert stored_state(store).pending == [] and stored_state(store).runs == 2


async def test_a_run_cut_short_by_a_crash_resumes_under_its_run_id_without_a_second_version(
    store: FileStore,
) -> None:
    spec = spec_text()
    apply_spec(store, spec)
    write_dataset(store, sea_rows(400))
    state = core.TrainerState(latest_dataset_version=1)
    state.add(core.Trigger(kind="first_data", event_id="e1", occurred_at=T0))
    core.start_run(state, "run-a")
    StateStore(store).save(MODEL, state)
    # the crashed replica registered its version, then died before recording the run as finished
    done = train(parse_spec(spec), DatasetRepository(store), Registry(store), 1, "run-a", "first_data", None)
    assert done.card is not None and done.card.version == 1

    trainer = Trainer(store)
    async with trainer.working():
        await trainer.until(lambda: len(trainer.deployments()) == 1)

    assert Registry(store).versions(MODEL) == [1] and Registry(store).aliases(MODEL) == {"production": 1}
    [completed] = trainer.completed()
    assert completed.version == 1 and completed.gate.passed
    state = stored_state(store)
    assert state.running is None and state.runs == 1 and state.pending == []


async def test_a_drift_seen_before_any_datasets_event_trains_on_the_newest_stored_version(store: FileStore) -> None:
    apply_spec(store, spec_text())
    write_dataset(store, sea_rows(300))
    write_dataset(store, sea_rows(100, start=300))  # their events went to another replica
    trainer = Trainer(store)
    await trainer.handlers.on_event(drift(), DELIVERY)

    async with trainer.working():
        await trainer.until(lambda: len(trainer.completed()) == 1)

    [completed] = trainer.completed()
    assert completed.dataset_version == 2 and completed.version == 1 and completed.trigger == "drift"
    assert Registry(store).card(MODEL, 1).window["rows"] == 400


async def test_a_drift_under_since_change_waits_for_rows_after_the_change_then_trains_on_them_alone(
    store: FileStore,
) -> None:
    apply_spec(store, spec_text(since_change=True, new_labels="null"))
    write_dataset(store, sea_rows(400))  # records r0..r399, before the change
    change_at = T0 + timedelta(seconds=400)
    trainer = Trainer(store)
    await trainer.handlers.on_event(drift(change_started_at=change_at), DELIVERY)
    recovery = stored_state(store).recovery
    assert recovery is not None and recovery.change_at == change_at and recovery.waiting_rows == 100
    assert trainer.metric("driftloop_trainer_waiting_rows", model=MODEL) == 100

    await trainer.handlers.on_event(write_dataset(store, sea_rows(60, start=400, seed=1, rotated=True)), DELIVERY)
    assert stored_state(store).recovery.waiting_rows == 40  # type: ignore[union-attr]
    assert trainer.metric("driftloop_trainer_waiting_rows", model=MODEL) == 40
    assert [t.kind for t in stored_state(store).pending] == ["drift"]

    write_dataset(store, sea_rows(60, start=460, seed=2, rotated=True))  # its event went to another replica
    async with trainer.working():
        await trainer.until(lambda: len(trainer.completed()) == 1)

    [completed] = trainer.completed()
    assert completed.trigger == "drift (concept, change at 2026-03-01T00:06:40+00:00, 120 rows after it)"
    assert completed.dataset_version == 3
    card = Registry(store).card(MODEL, 1)
    assert card.window["rows"] == 120 and card.window["first_record_id"] == "r400"
    assert card.window["change_at"] == change_at.isoformat()
    assert trainer.metric("driftloop_trainer_waiting_rows", model=MODEL) == 0
