"""A regressor's verdicts through the real broker: a worse canary rolled back on live MAE, and a
covariate shift that does not hurt the error raising data drift but no rollback.

Two delivery-time regressors are trained by the real trainer on typed rows (a region, an express
flag, missing weights) and registered; the monitor service reads their predictions (the graphs'
own answers, logged as inference logs them: the number in ``labels``, no classes) and the ground
truth from the broker.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from services.demo import DELIVERY_CHANGE, Sample, delivery
from services.inference.runtime import load_version
from services.ingest.validation import check_record
from services.monitor.app import MonitorService
from services.trainer.runner import train
from shared import topics
from shared.bus import KafkaOptions, Publisher
from shared.datasets import AcceptedRecord, DatasetRepository
from shared.events import AnnotationSubmitted, DeploymentChanged, DriftDetected, PredictionsLogged, decode_as
from shared.features import onnx_feeds
from shared.registry import Registry
from shared.spec import ModelSpec, apply_spec, parse_spec
from shared.store import FileStore
from tests.integration.serving import monitor_service
from tests.integration.test_monitor import send
from tests.integration.topic_reading import read_keyed, read_settled, wait_for

pytestmark = pytest.mark.integration

WATCHED = """
deployment: {{strategy: canary, canary_traffic: 0.5, promote_after: {{labelled_samples: 200}},
              rollback_on: {{error_increase: 0.05}}}}
monitoring: {{confirmation_samples: 200, alarm_cooldown: 10m}}
"""


def delivery_text(model: str) -> str:
    """The demo's delivery spec, judged on 200 labelled predictions a side."""
    return (DELIVERY_CHANGE.spec.split("deployment:")[0] + WATCHED).format(model=model)


def register(store: FileStore, spec: ModelSpec, samples: list[Sample], known: int | None) -> int:
    """Store ``samples`` as a dataset version (as ingest does) and train a regressor on it."""
    records = []
    for i, (x, y) in enumerate(samples):
        event = AnnotationSubmitted(model=spec.name, record_id=f"r{known or 0}-{i}", features=x, label=y)
        record = check_record(spec, event)
        assert isinstance(record, AcceptedRecord), record
        records.append(record)
    repo = DatasetRepository(store)
    manifest = repo.write_version(
        spec.name,
        spec.schema_hash(),
        spec.feature_names,
        [],
        records,
        known,
        feature_types=spec.feature_types,
        task="regression",
    )
    assert manifest is not None
    result = train(spec, repo, Registry(store), manifest.version, uuid.uuid4().hex, "manual", None)
    assert result.card is not None and result.error is None, result.error
    return result.card.version


@pytest.fixture
async def monitor(
    options: KafkaOptions, store: FileStore, tmp_path: Path
) -> AsyncIterator[tuple[ModelSpec, MonitorService, httpx.AsyncClient]]:
    model = f"deliveries{uuid.uuid4().hex[:6]}"
    spec, _ = apply_spec(store, delivery_text(model))
    first = register(store, spec, delivery(1500, 1), None)
    Registry(store).set_alias(model, "production", first, "test", "first")
    async with monitor_service(options, store, tmp_path, f"monitor-{model}") as (service, client):
        yield spec, service, client


def served(
    store: FileStore, spec: ModelSpec, version: int, variant: str, samples: list[Sample], ids: list[str], t0: datetime
) -> PredictionsLogged:
    """Version ``version``'s own answers to ``samples``, logged as inference logs a regressor's."""
    columns = {name: [x.get(name) for x, _ in samples] for name in spec.feature_names}
    loaded = load_version(Registry(store), spec.name, version)
    (predicted,) = loaded.session.run(["prediction"], onnx_feeds(spec.feature_names, spec.feature_types, columns))
    return PredictionsLogged(
        model=spec.name,
        version=version,
        variant=variant,  # type: ignore[arg-type]
        feature_names=spec.feature_names,
        classes=[],
        inference_ids=ids,
        features=[[x.get(name) for name in spec.feature_names] for x, _ in samples],
        labels=np.asarray(predicted, dtype=np.float64).ravel().tolist(),
        probabilities=[[] for _ in samples],
        latency_ms=[0.4] * len(samples),
        predicted_at=[t0 + timedelta(milliseconds=10 * i) for i in range(len(samples))],
    )


def truth(spec: ModelSpec, samples: list[Sample], ids: list[str], t0: datetime) -> list[AnnotationSubmitted]:
    return [
        AnnotationSubmitted(
            model=spec.name,
            record_id=uuid.uuid4().hex,
            features=x,
            label=y,
            inference_id=ids[i],
            occurred_at=t0 + timedelta(milliseconds=10 * i + 500),
        )
        for i, (x, y) in enumerate(samples)
    ]


def announce(spec: ModelSpec, action: str, version: int, previous: int) -> DeploymentChanged:
    return DeploymentChanged(
        model=spec.name,
        action=action,  # type: ignore[arg-type]
        version=version,
        previous_version=previous,
        traffic=0.5 if action == "canary_started" else 1.0,
        reason="test",
        actor="test",
    )


async def test_a_worse_regression_canary_is_rolled_back_on_live_mae(
    monitor: tuple[ModelSpec, MonitorService, httpx.AsyncClient],
    publisher: Publisher,
    options: KafkaOptions,
    store: FileStore,
) -> None:
    spec, service, client = monitor
    registry = Registry(store)
    linear = parse_spec(delivery_text(spec.name).replace("HistGradientBoostingRegressor", "Ridge"))
    worse = register(store, linear, delivery(1500, 2), 1)  # a plane through a curved relation
    registry.set_alias(spec.name, "canary", worse, "test", "canary")
    await publisher.publish(announce(spec, "canary_started", worse, 1))
    await wait_for(lambda: (w := service.handlers.models.get(spec.name)) is not None and w.trial is not None, 30)

    now = datetime.now(UTC)  # the trial counts predictions made since the canary started
    for version, variant, seed in ((1, "champion", 3), (worse, "canary", 4)):
        samples = delivery(300, seed)
        ids = [f"{variant}-{i}" for i in range(len(samples))]
        labels = truth(spec, samples, ids, now)
        await send(publisher, served(store, spec, version, variant, samples, ids, now), labels, rows=250)
    changes = [
        decode_as(DeploymentChanged, v) for v in await read_keyed(options, topics.DEPLOYMENTS, spec.name, 2, timeout=60)
    ]
    verdict = next(c for c in changes if c.actor == "monitor")
    assert verdict.action == "rolled_back" and verdict.version == worse, verdict
    assert "MAE" in verdict.reason and "> allowed" in verdict.reason, verdict.reason
    assert registry.alias(spec.name, "canary") is None and registry.alias(spec.name, "production") == 1

    status = (await client.get(f"/v1/models/{spec.name}/status")).json()
    live = {row["variant"]: row for row in status["live"]}
    assert live["canary"]["mae"] > live["champion"]["mae"] > 0, live
    metrics = (await client.get("/metrics")).text
    assert f'driftloop_monitor_live_mae{{model="{spec.name}",variant="champion",version="1"}}' in metrics


async def test_a_covariate_shift_that_keeps_the_error_raises_data_drift_and_no_rollback(
    monitor: tuple[ModelSpec, MonitorService, httpx.AsyncClient],
    publisher: Publisher,
    options: KafkaOptions,
    store: FileStore,
) -> None:
    spec, service, client = monitor
    registry = Registry(store)
    assert (await service.handlers.watch_of(spec.name)).champion == 1  # type: ignore[union-attr]  # serving v1
    second = register(store, spec, delivery(1500, 5), 1)
    registry.set_alias(spec.name, "production", second, "test", "a retrain on the same world")
    await publisher.publish(announce(spec, "promoted", second, 1))
    await wait_for(lambda: (w := service.handlers.models.get(spec.name)) is not None and w.watch is not None, 30)

    now = datetime.now(UTC)
    samples = delivery(1200, 6, shifted=True)  # harbour and west deliveries, most of them express
    ids = [f"shifted-{i}" for i in range(len(samples))]
    labels = truth(spec, samples, ids, now)
    await send(publisher, served(store, spec, 1, "shadow", samples, ids, now), [], rows=250)  # the previous champion
    await send(publisher, served(store, spec, second, "champion", samples, ids, now), labels, rows=250)

    found = [decode_as(DriftDetected, v) for v in await read_keyed(options, topics.DRIFT, spec.name, 1, timeout=60)]
    assert found[0].kind == "data" and found[0].feature in ("region", "express"), found
    await wait_for(lambda: service.handlers.models[spec.name].join.hits >= len(samples), 60)
    changes = [decode_as(DeploymentChanged, v) for v in await read_settled(options, topics.DEPLOYMENTS, spec.name)]
    assert not [c for c in changes if c.action == "rolled_back"], changes
    alarms = [decode_as(DriftDetected, v) for v in await read_settled(options, topics.DRIFT, spec.name)]
    assert not [a for a in alarms if a.kind == "concept"], "the error did not change: no concept drift"
    assert registry.alias(spec.name, "production") == second
    status = (await client.get(f"/v1/models/{spec.name}/status")).json()
    champion = next(row for row in status["live"] if row["variant"] == "champion")
    assert champion["labelled"] == len(samples) and champion["mae"] < 1.5 * champion["expected_mae"], champion
