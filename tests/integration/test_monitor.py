"""The monitor against the real broker: join, live accuracy, concept drift, canary verdict, report."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from services.inference.runtime import LoadedModel, load_version
from services.monitor.app import MonitorService, MonitorSettings
from shared import topics
from shared.bus import KafkaOptions, Publisher
from shared.errors import StoreError
from shared.events import AnnotationSubmitted, DeploymentChanged, DriftDetected, PredictionsLogged, decode_as
from shared.registry import Registry
from shared.spec import apply_spec, parse_spec
from shared.store import FileStore
from tests.integration.serving import monitor_service
from tests.integration.test_inference import register, rows
from tests.integration.topic_reading import read_keyed, read_settled, wait_for

pytestmark = pytest.mark.integration

SPEC = """
name: {name}
features: [{{name: x1}}, {{name: x2}}, {{name: x3, allow_missing: true}}]
label: {{values: [0, 1]}}
training: {{estimator: LogisticRegression, holdout: 0.25, seed: 1, window: {{since_change: true}}}}
deployment: {{strategy: canary, canary_traffic: 0.5, promote_after: {{labelled_samples: 150}}}}
monitoring: {{confirmation_samples: 200, alarm_cooldown: 10m}}
"""
T0 = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
async def monitor(
    options: KafkaOptions, store: FileStore, unique: str, tmp_path: Path
) -> AsyncIterator[tuple[str, MonitorService, httpx.AsyncClient]]:
    model = f"mon{unique}"
    apply_spec(store, SPEC.format(name=model))
    version = register(store, model, rows(600, 0, flip=False), None, SPEC)
    Registry(store).set_alias(model, "production", version, "test", "first")
    async with monitor_service(options, store, tmp_path, f"monitor-{unique}") as (service, client):
        yield model, service, client


def traffic(
    model: str,
    version: int,
    variant: str,
    start: int,
    n: int,
    flip: bool,
    error: float,
    seed: int,
    served: LoadedModel | None = None,
    t0: datetime = T0,
) -> tuple[PredictionsLogged, list[AnnotationSubmitted]]:
    """``n`` predictions of the x1 + x2 > 10 concept and their labels (which follow the flipped
    concept when ``flip``): the ``served`` model's own answers, else the concept wrong ``error``
    of the time."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 10, size=(n, 3))
    truth = ((X[:, 0] + X[:, 1] > 10) != flip).astype(int)
    predicted = np.where(rng.random(n) < error, 1 - (X[:, 0] + X[:, 1] > 10), X[:, 0] + X[:, 1] > 10).astype(int)
    probabilities = [[0.2, 0.8] if p else [0.8, 0.2] for p in predicted]
    if served is not None:
        answered, proba = served.predict(X.astype(np.float32))
        predicted, probabilities = np.asarray(answered).astype(int), proba.tolist()
    at = [t0 + timedelta(seconds=start + i) for i in range(n)]
    ids = [f"{variant}-{start + i}" for i in range(n)]
    event = PredictionsLogged(
        model=model,
        version=version,
        variant=variant,  # type: ignore[arg-type]
        feature_names=["x1", "x2", "x3"],
        classes=["0", "1"],
        inference_ids=ids,
        features=X.tolist(),
        labels=predicted.tolist(),
        probabilities=probabilities,
        latency_ms=[0.5] * n,
        predicted_at=at,
    )
    return event, ground_truth(model, X, truth, ids, [t + timedelta(seconds=30) for t in at])


def ground_truth(
    model: str, X: np.ndarray, truth: np.ndarray, ids: list[str], at: list[datetime]
) -> list[AnnotationSubmitted]:
    """The labels of predictions ``ids`` (features ``X``), as an annotation system sends them."""
    return [
        AnnotationSubmitted(
            model=model,
            record_id=uuid.uuid4().hex,
            features=dict(zip(["x1", "x2", "x3"], X[i].tolist(), strict=True)),
            label=int(truth[i]),
            inference_id=ids[i],
            occurred_at=at[i],
        )
        for i in range(len(ids))
    ]


async def send(
    publisher: Publisher, event: PredictionsLogged, labels: list[AnnotationSubmitted], rows: int = 200
) -> None:
    """The predictions in messages of ``rows`` rows (as inference batches them), then the labels."""
    for start in range(0, len(event.inference_ids), rows):
        part = event.model_dump()
        for column in ("inference_ids", "features", "labels", "probabilities", "latency_ms", "predicted_at"):
            part[column] = part[column][start : start + rows]
        part["event_id"] = uuid.uuid4()
        await publisher.publish(PredictionsLogged.model_validate(part))
    await publisher.publish_many(labels)


async def test_join_accuracy_drift_and_report(
    monitor: tuple[str, MonitorService, httpx.AsyncClient], publisher: Publisher, options: KafkaOptions
) -> None:
    model, service, client = monitor
    # labels of the first 100 arrive before their predictions: the join takes either order
    served = load_version(Registry(service.handlers.store), model, 1, frozenset({"x3"}))  # type: ignore[arg-type]
    event, labels = traffic(model, 1, "champion", 0, 1500, flip=False, error=0.0, seed=1, served=served)
    await publisher.publish_many(labels[:100])
    await send(publisher, event, labels[100:])
    await send(publisher, PredictionsLogged.model_validate(event.model_dump()), [])  # a redelivery
    await wait_for(lambda: (w := service.handlers.models.get(model)) is not None and w.join.hits >= 1500, timeout=60)

    status = (await client.get(f"/v1/models/{model}/status")).json()
    assert status["champion"] == 1 and status["join"]["hits"] == 1500
    champion = next(s for s in status["live"] if s["variant"] == "champion")
    assert champion["labelled"] == 1500 and champion["accuracy"] >= 0.9
    assert status["drift"]["last"] is None, "no alarm on a stable stream"

    drifted, labels = traffic(model, 1, "champion", 1500, 1000, flip=True, error=0.0, seed=2, served=served)
    await send(publisher, drifted, labels)
    found = [decode_as(DriftDetected, v) for v in await read_keyed(options, topics.DRIFT, model, 1, timeout=60)]
    concept = [d for d in found if d.kind == "concept"]
    assert concept, found
    alarm = concept[0]
    assert alarm.model_version == 1 and alarm.change_samples and alarm.change_started_at is not None
    assert abs((alarm.change_started_at - T0).total_seconds() - 1500) < 300, "the change point is dated"

    more, labels = traffic(model, 1, "champion", 2500, 1000, flip=True, error=0.0, seed=5, served=served)
    await send(publisher, more, labels)
    await wait_for(lambda: service.handlers.models[model].join.hits >= 3500, timeout=60)
    alarms = [decode_as(DriftDetected, v) for v in await read_settled(options, topics.DRIFT, model)]
    concept = [a for a in alarms if a.kind == "concept"]
    # one change, one alarm for it; the model left serving the changed world for 33 minutes (event
    # time) says so again once per 10-minute cooldown, against its expected error -- never more
    assert 1 <= len(concept) <= 4 and all(a.detector == "expected_error" for a in concept[1:]), concept

    status = (await client.get(f"/v1/models/{model}/status")).json()
    assert status["drift"]["last"]["kind"] == "concept"
    assert status["drift"]["rows_after_change"] is not None, "the since-change wait is visible"

    page = (await client.get(f"/report/{model}")).text
    assert "<svg" in page and "drift" in page and "x1" in page
    assert (await client.get("/v1/models/nope/status")).status_code == 404
    metrics = (await client.get("/metrics")).text
    assert f'driftloop_monitor_drift_detections_total{{kind="concept",model="{model}"' in metrics
    await wait_for(lambda: service.handlers.store.exists(f"monitor/{model}/state.json"), timeout=10)


def canary_started(model: str, version: int, at: datetime | None = None) -> DeploymentChanged:
    """The trainer's announcement of a canary (``at``: when it started; default now)."""
    return DeploymentChanged(
        model=model,
        action="canary_started",
        version=version,
        previous_version=1,
        traffic=0.5,
        reason="gate passed",
        actor="test",
        **({"occurred_at": at} if at else {}),
    )


async def start_canary(model: str, service: MonitorService, publisher: Publisher, store: FileStore) -> int:
    """Register a candidate, make it the canary and announce it; returns once the monitor opened its trial."""
    candidate = register(store, model, rows(600, 700, flip=False), 1, SPEC)
    Registry(store).set_alias(model, "canary", candidate, "test", "canary")
    await publisher.publish(canary_started(model, candidate))
    await wait_for(lambda: (w := service.handlers.models.get(model)) is not None and w.trial is not None, timeout=30)
    return candidate


async def canary_trial(
    model: str,
    version: int,
    errors: tuple[float, float],
    seeds: tuple[int, int],
    publisher: Publisher,
    options: KafkaOptions,
) -> DeploymentChanged:
    """300 labelled predictions each of champion v1 and canary ``version``, wrong ``errors`` of the
    time (champion, canary); returns the monitor's verdict."""
    now = datetime.now(UTC)  # the trial counts predictions made since the canary started
    champion, champion_labels = traffic(
        model, 1, "champion", 0, 300, flip=False, error=errors[0], seed=seeds[0], t0=now
    )
    canary, canary_labels = traffic(
        model, version, "canary", 0, 300, flip=False, error=errors[1], seed=seeds[1], t0=now
    )
    await send(publisher, champion, champion_labels)
    await send(publisher, canary, canary_labels)
    changes = [
        decode_as(DeploymentChanged, v) for v in await read_keyed(options, topics.DEPLOYMENTS, model, 2, timeout=60)
    ]
    return next(c for c in changes if c.actor == "monitor" and c.action in ("promoted", "rolled_back"))


async def test_canary_verdict_moves_the_registry(
    monitor: tuple[str, MonitorService, httpx.AsyncClient],
    publisher: Publisher,
    options: KafkaOptions,
    store: FileStore,
) -> None:
    model, service, client = monitor
    registry = Registry(store)
    spec = parse_spec(SPEC.format(name=model))
    assert spec.deployment.promote_after.labelled_samples == 150
    candidate = await start_canary(model, service, publisher, store)
    verdict = await canary_trial(model, candidate, (0.2, 0.05), (3, 4), publisher, options)
    assert verdict.action == "promoted" and verdict.version == candidate and verdict.actor == "monitor"
    assert "delta" in verdict.reason and f"canary v{candidate}" in verdict.reason
    assert registry.alias(model, "production") == candidate


async def test_a_worse_canary_is_rolled_back(
    monitor: tuple[str, MonitorService, httpx.AsyncClient],
    publisher: Publisher,
    options: KafkaOptions,
    store: FileStore,
) -> None:
    model, service, _ = monitor
    registry = Registry(store)
    candidate = await start_canary(model, service, publisher, store)
    verdict = await canary_trial(model, candidate, (0.05, 0.3), (6, 7), publisher, options)
    assert verdict.action == "rolled_back" and verdict.version == candidate and verdict.traffic == 0.0
    assert "> allowed" in verdict.reason
    assert registry.alias(model, "canary") is None and registry.alias(model, "production") == 1


async def test_a_restart_keeps_detector_state(
    monitor: tuple[str, MonitorService, httpx.AsyncClient], publisher: Publisher, store: FileStore
) -> None:
    model, service, _ = monitor
    served = load_version(Registry(store), model, 1, frozenset({"x3"}))
    event, labels = traffic(model, 1, "champion", 0, 800, flip=False, error=0.0, seed=8, served=served)
    await send(publisher, event, labels)
    await wait_for(lambda: (w := service.handlers.models.get(model)) is not None and w.join.hits >= 800, timeout=60)
    before = service.handlers.models[model].state().model_dump(mode="json")
    service.stop()  # checkpoints everything on the way out
    await asyncio.sleep(3)

    again = MonitorService(service.settings)
    task = asyncio.create_task(again.run())
    try:
        await wait_for(lambda: again.not_ready() is None, timeout=60)
        restored = await again.handlers.watch_of(model)
        assert restored is not None
        after = restored.state().model_dump(mode="json")
        assert after["drift"] == before["drift"], "detectors, windows and alarm policy come back as they were"
        assert after["live"] == before["live"] and after["join"] == before["join"]
    finally:
        again.stop()
        await asyncio.wait_for(task, 60)


def partition_of(model: str, partitions: int = 4) -> int:
    """The partition a model's events land on (the producers' default partitioner)."""
    from aiokafka.partitioner import DefaultPartitioner

    return int(DefaultPartitioner()(model.encode(), list(range(partitions)), list(range(partitions))))


async def test_replicas_split_models_and_state_follows_the_partition(
    options: KafkaOptions, store: FileStore, unique: str, tmp_path: Path, publisher: Publisher
) -> None:
    names = [f"rep{unique}{i}" for i in range(40)]
    first = names[0]
    second = next(n for n in names if partition_of(n) != partition_of(first))
    for model in (first, second):
        apply_spec(store, SPEC.format(name=model))
        version = register(store, model, rows(600, 0, flip=False), None, SPEC)
        Registry(store).set_alias(model, "production", version, "test", "first")

    def settings(i: int) -> MonitorSettings:
        return MonitorSettings(
            kafka_bootstrap=options.bootstrap,
            kafka_idempotence=False,
            store_kind="file",
            store_root=store.root,
            port=0,
            checkpoint_s=0.5,
            monitor_group=f"replicas-{unique}",
            data_dir=tmp_path / str(i),
            changelog_batch=1,  # exact table recovery on the embedded broker
        )

    replicas = [MonitorService(settings(i)) for i in range(2)]
    tasks = [asyncio.create_task(r.run()) for r in replicas]
    try:
        await wait_for(lambda: all(r.not_ready() is None for r in replicas), timeout=60)
        await asyncio.sleep(8)  # both in the group: partitions split between them
        now = datetime.now(UTC)
        for k, model in enumerate((first, second)):
            event, labels = traffic(model, 1, "champion", 0, 400, flip=False, error=0.1, seed=20 + k, t0=now)
            await send(publisher, event, labels)

        def owners(model: str) -> list[MonitorService]:
            return [r for r in replicas if not r._stopping.is_set() and model in r.handlers.models]

        def hits(model: str) -> int:
            return sum(r.handlers.models[model].join.hits for r in owners(model))

        await wait_for(lambda: hits(first) >= 400 and hits(second) >= 400, timeout=60)
        assert len(owners(first)) == 1 and len(owners(second)) == 1, "each model is watched by one replica"

        leaving = owners(first)[0]
        staying = next(r for r in replicas if r is not leaving)
        leaving.stop()  # its partitions move to the other replica
        await asyncio.wait_for(tasks[replicas.index(leaving)], 60)
        later = datetime.now(UTC)
        event, labels = traffic(first, 1, "champion", 400, 200, flip=False, error=0.1, seed=30, t0=later)
        await send(publisher, event, labels)
        await wait_for(
            lambda: first in staying.handlers.models and staying.handlers.models[first].join.hits >= 600, timeout=90
        )
        assert staying.handlers.models[first].live.totals(first, 1, "champion").labelled == 600, (
            "the counts from before the move came along with the partition"
        )
    finally:
        for replica, task in zip(replicas, tasks, strict=True):
            if not task.done():
                replica.stop()
                await asyncio.wait_for(task, 60)


class StoreOutage:
    """Takes the service's object store away while active: every call raises StoreError, as a
    MinIO that cannot be reached does (a fault at the store's seam; the rest is real)."""

    METHODS = ("get", "put", "put_if_absent", "exists", "list", "delete")

    def __init__(self, store: object, only: tuple[str, ...] = METHODS) -> None:
        self.store = store
        self.only = only
        self.refused = 0
        self._saved: dict[str, object] = {}

    def __enter__(self) -> StoreOutage:
        for name in self.only:
            original = getattr(self.store, name, None)
            if original is None:
                continue
            self._saved[name] = original

            def refuse(*args: object, _name: str = name, **kwargs: object) -> object:
                self.refused += 1
                raise StoreError(f"store unreachable (test outage, {_name})")

            setattr(self.store, name, refuse)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self._saved:
            delattr(self.store, name)  # the instance attribute goes; the class's method is back


async def test_a_store_outage_delays_a_canary_but_never_loses_it(
    monitor: tuple[str, MonitorService, httpx.AsyncClient],
    publisher: Publisher,
    options: KafkaOptions,
    store: FileStore,
) -> None:
    """The canary start arrives while the store is away (the monitor must read the model's state
    and spec to handle it), and the verdict is reached while the store refuses writes: both are
    retried until the store is back; the canary is judged and promoted; nothing is dead-lettered."""
    model, service, _ = monitor
    assert model not in service.handlers.models, "the canary start is the first event: it needs the store"
    candidate = register(store, model, rows(600, 700, flip=False), 1, SPEC)
    Registry(store).set_alias(model, "canary", candidate, "test", "canary")
    with StoreOutage(service.handlers.store) as outage:
        await publisher.publish(canary_started(model, candidate))
        await wait_for(lambda: outage.refused >= 3, timeout=30)  # tried, and trying again
        assert model not in service.handlers.models
    await wait_for(lambda: (w := service.handlers.models.get(model)) is not None and w.trial is not None, timeout=30)

    now = datetime.now(UTC)
    champion, champion_labels = traffic(model, 1, "champion", 0, 300, flip=False, error=0.2, seed=3, t0=now)
    canary, canary_labels = traffic(model, candidate, "canary", 0, 300, flip=False, error=0.05, seed=4, t0=now)
    with StoreOutage(service.handlers.store, only=("put", "put_if_absent")) as writes:
        await send(publisher, champion, champion_labels)
        await send(publisher, canary, canary_labels)
        watch = service.handlers.models[model]
        await wait_for(lambda: watch.decisions and writes.refused >= 3, timeout=60)
        assert Registry(store).alias(model, "production") == 1, "the verdict waits for the store"
    await wait_for(lambda: Registry(store).alias(model, "production") == candidate, timeout=60)
    [change] = [
        c
        for c in (decode_as(DeploymentChanged, v) for v in await read_settled(options, topics.DEPLOYMENTS, model))
        if c.actor == "monitor" and c.action != "shadow_started"
    ]
    assert change.action == "promoted" and change.version == candidate, "judged once"
    assert Registry(store).alias(model, "canary") is None and not watch.decisions
    for topic in (topics.DEPLOYMENTS, topics.ANNOTATIONS_GROUND_TRUTH, topics.PREDICTIONS):
        assert await read_settled(options, topics.dlq(topic), model, settle_s=1.0) == [], topic
    metrics = (await service_metrics(service)).splitlines()
    assert any(line.startswith("driftloop_monitor_handler_retries_total") for line in metrics)


async def service_metrics(service: MonitorService) -> str:
    from prometheus_client import generate_latest

    return generate_latest(service.registry).decode()
