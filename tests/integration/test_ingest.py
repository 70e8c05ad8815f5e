"""Ingest through the real local broker and a FileStore: versions, rejections, DLQ, crashes, replicas."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.ingest.app import IngestService, IngestSettings
from shared import topics
from shared.bus import KafkaOptions, Publisher
from shared.datasets import DatasetRepository
from shared.events import AnnotationRejected, AnnotationSubmitted, DatasetVersionCreated, DeadLetter, encode_event
from shared.spec import apply_spec
from shared.store import FileStore
from tests.integration.serving import consuming as running
from tests.integration.serving import stop_service as stop
from tests.integration.topic_reading import read_keyed

pytestmark = pytest.mark.integration

SPEC = """
name: {name}
features: [{{name: a, min: -1.0e300}}, {{name: b, min: 0, max: 100}}, {{name: c}}]
label: {{values: ["no", "yes"]}}
validation: {{min_confidence: 0.5}}
"""


def settings_for(options: KafkaOptions, store: FileStore, **extra: Any) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap=options.bootstrap,
        kafka_idempotence=False,
        store_kind="file",
        store_root=store.root,
        port=0,
        flush_interval_s=0.3,
        spec_refresh_s=0.2,
        **extra,
    )


def records(model: str, n: int, seed: int = 1, start: int = 0) -> list[AnnotationSubmitted]:
    rng = random.Random(seed)
    return [
        AnnotationSubmitted(
            model=model,
            record_id=f"{model}-{i}",
            features={"a": rng.uniform(-1e6, 1e6), "b": rng.uniform(0, 100), "c": rng.gauss(0, 1) * 1e-300},
            label=rng.choice(["no", "yes"]),
            confidence=0.9,
        )
        for i in range(start, start + n)
    ]


async def wait_rows(repo: DatasetRepository, model: str, rows: int, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while True:
            version = repo.latest_version(model)
            if version is not None and repo.manifest(model, version).rows_total >= rows:
                return
            await asyncio.sleep(0.05)


async def test_valid_records_become_a_version_readable_bit_for_bit(
    options: KafkaOptions, store: FileStore, publisher: Publisher, unique: str
) -> None:
    model = f"m{unique}"
    apply_spec(store, SPEC.format(name=model))
    sent = records(model, 300)
    await publisher.publish_many(sent)
    service = IngestService(settings_for(options, store, group_id=f"g-{unique}"))
    task = await running(service)
    repo = DatasetRepository(store)
    try:
        await wait_rows(repo, model, 300)
    finally:
        await stop(service, task)

    data = repo.load(model)
    by_id = {r.record_id: r for r in sent}
    assert sorted(data.record_ids.tolist()) == sorted(by_id)
    for row, record_id in enumerate(data.record_ids):
        original = by_id[record_id]
        assert data.X[row].tolist() == [original.features[n] for n in ("a", "b", "c")]  # exact, not approx
        assert data.y[row] == original.label
    manifest = repo.manifest(model)
    assert manifest.rows_total == 300 and manifest.features == ["a", "b", "c"]
    assert sum(manifest.label_counts.values()) == 300
    assert manifest.stats["b"].count == 300 and 0 <= manifest.stats["b"].min <= manifest.stats["b"].max <= 100
    tail = repo.load(model, last_rows=50)
    assert tail.record_ids.tolist() == data.record_ids[-50:].tolist()

    announced = [
        DatasetVersionCreated.model_validate_json(v) for v in await read_keyed(options, topics.DATASETS, model, 1)
    ]
    assert announced[-1].rows_total <= 300 and announced[0].manifest_key.startswith(f"datasets/{model}/versions/")


async def test_invalid_records_are_rejected_with_their_rule_and_junk_goes_to_dlq(
    options: KafkaOptions, store: FileStore, publisher: Publisher, unique: str
) -> None:
    model = f"m{unique}"
    apply_spec(store, SPEC.format(name=model))
    good = records(model, 1)[0]
    bad_cases = {
        "missing": {"features": {"a": 1.0, "b": 1.0}},
        "finite": {"features": {"a": float("inf"), "b": 1.0, "c": 0.0}},
        "range": {"features": {"a": 1.0, "b": 101.0, "c": 0.0}},
        "unknown_feature": {"features": {"a": 1.0, "b": 1.0, "c": 0.0, "d": 1.0}},
        "label": {"label": "perhaps"},
        "min_confidence": {"confidence": 0.1},
    }
    for rule, change in bad_cases.items():
        body = {**json.loads(encode_event(good)), "record_id": f"bad-{rule}", **change}
        # json.dumps writes Infinity as Python producers do; our own encoder would write null
        await publisher.send(topics.ANNOTATIONS, json.dumps(body).encode(), model.encode())
    await publisher.send(topics.ANNOTATIONS, b'{"model": "%s", "record_id": 3}' % model.encode(), model.encode())
    await publisher.send(topics.ANNOTATIONS, b"this is not json", model.encode())
    other = good.model_copy(update={"model": f"nospec{unique}", "record_id": "x"})
    await publisher.send(topics.ANNOTATIONS, encode_event(other), other.model.encode())
    await publisher.publish(good)

    service = IngestService(settings_for(options, store, group_id=f"g-{unique}"))
    task = await running(service)
    try:
        await wait_rows(DatasetRepository(store), model, 1)
        rejected = [
            AnnotationRejected.model_validate_json(v)
            for v in await read_keyed(options, topics.ANNOTATIONS_REJECTED, model, len(bad_cases) + 1)
        ]
        letters = [
            DeadLetter.model_validate_json(v)
            for v in await read_keyed(options, topics.dlq(topics.ANNOTATIONS), model, 1)
        ]
        unknown = [
            AnnotationRejected.model_validate_json(v)
            for v in await read_keyed(options, topics.ANNOTATIONS_REJECTED, other.model, 1)
        ]
        dead = service.registry.get_sample_value("driftloop_ingest_dead_letters_total")
    finally:
        await stop(service, task)
    assert dead is not None and dead >= 1, "the dead-letter counter the DriftloopDeadLetters alert reads counts"

    by_rule = {r.reasons[0].rule: r for r in rejected}
    assert set(by_rule) == set(bad_cases) | {"schema"}
    for rule in bad_cases:
        assert AnnotationSubmitted.model_validate_json(by_rule[rule].payload).record_id == f"bad-{rule}"
        assert by_rule[rule].source.topic == topics.ANNOTATIONS
    assert by_rule["range"].reasons[0].field == "features.b"
    assert by_rule["schema"].reasons[0].field == "record_id"
    assert letters[0].original_bytes() == b"this is not json"
    assert unknown[0].reasons[0].rule == "known_model"
    assert DatasetRepository(store).manifest(model).rows_total == 1
    samples = service.registry.get_sample_value(
        "driftloop_ingest_rejected_records_total", {"model": model, "rule": "range"}
    )
    assert samples == 1.0


async def test_resent_records_are_stored_once(
    options: KafkaOptions, store: FileStore, publisher: Publisher, unique: str
) -> None:
    model = f"m{unique}"
    apply_spec(store, SPEC.format(name=model))
    batch = records(model, 100)
    await publisher.publish_many(batch)
    service = IngestService(settings_for(options, store, group_id=f"g-{unique}"))
    task = await running(service)
    repo = DatasetRepository(store)
    try:
        await wait_rows(repo, model, 100)
        resend = [r.model_copy(update={"event_id": r.event_id.__class__(int=i + 1)}) for i, r in enumerate(batch[:60])]
        await publisher.publish_many(resend + records(model, 20, start=100))
        await wait_rows(repo, model, 120)
        await asyncio.sleep(1.0)  # a duplicate would land now
    finally:
        await stop(service, task)
    data = repo.load(model)
    assert len(data.record_ids) == 120 == len(set(data.record_ids.tolist()))
    assert service.registry.get_sample_value("driftloop_ingest_duplicate_records_total", {"model": model}) == 60


@pytest.mark.parametrize("crash_at", ["after_shard", "after_manifest", "after_publish"])
async def test_crash_then_restart_stores_every_record_exactly_once(
    options: KafkaOptions, store: FileStore, publisher: Publisher, unique: str, crash_at: str, tmp_path: Path
) -> None:
    model = f"m{unique}"
    apply_spec(store, SPEC.format(name=model))
    await publisher.publish_many(records(model, 500))
    env = {
        **os.environ,
        "DRIFTLOOP_KAFKA_BOOTSTRAP": options.bootstrap,
        "DRIFTLOOP_KAFKA_IDEMPOTENCE": "false",
        "DRIFTLOOP_STORE_KIND": "file",
        "DRIFTLOOP_STORE_ROOT": str(store.root),
        "DRIFTLOOP_PORT": "0",
        "DRIFTLOOP_GROUP_ID": f"g-{unique}",
        "DRIFTLOOP_FLUSH_INTERVAL_S": "0.3",
        "DRIFTLOOP_CRASH_AT": crash_at,
    }
    crashed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "serve", "ingest"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == 70, crashed.stderr.decode()[-2000:]
    repo = DatasetRepository(store)
    assert store.list(f"datasets/{model}/shards/"), "the crash happened after a shard was written"

    await publisher.publish_many(records(model, 100, start=500))  # more arrive while ingest is down
    service = IngestService(settings_for(options, store, group_id=f"g-{unique}"))
    task = await running(service)
    try:
        await wait_rows(repo, model, 600)
        await asyncio.sleep(1.0)
    finally:
        await stop(service, task)
    data = repo.load(model)
    assert len(data.record_ids) == 600
    assert set(data.record_ids.tolist()) == {f"{model}-{i}" for i in range(600)}
    assert repo.versions(model) == list(range(1, len(repo.versions(model)) + 1))


async def test_two_replicas_split_the_work_without_collisions(
    options: KafkaOptions, store: FileStore, publisher: Publisher, unique: str
) -> None:
    models = [f"m{unique}{k}" for k in range(6)]
    for model in models:
        apply_spec(store, SPEC.format(name=model))
    group = f"g-{unique}"
    first = IngestService(settings_for(options, store, group_id=group))
    second = IngestService(settings_for(options, store, group_id=group))
    tasks = [await running(first), await running(second)]
    repo = DatasetRepository(store)
    try:
        async with asyncio.timeout(30):
            while not (first.subscriber.assignment() and second.subscriber.assignment()):
                await asyncio.sleep(0.1)
        owned = [first.subscriber.assignment(), second.subscriber.assignment()]
        assert not owned[0] & owned[1], "a partition has one owner"
        assert len(owned[0] | owned[1]) == 4
        for k, model in enumerate(models):
            await publisher.publish_many(records(model, 150, seed=k))
        for k, model in enumerate(models):
            await wait_rows(repo, model, 150, timeout=60)
            await publisher.publish_many(records(model, 50, seed=k, start=150))
        for model in models:
            await wait_rows(repo, model, 200, timeout=60)
    finally:
        await stop(first, tasks[0])
        await stop(second, tasks[1])
    for model in models:
        data = repo.load(model)
        assert len(data.record_ids) == 200 == len(set(data.record_ids.tolist()))
        assert repo.versions(model) == list(range(1, len(repo.versions(model)) + 1))
    accepted = [
        s.get_sample_value("driftloop_ingest_accepted_records_total", {"model": m}) or 0
        for s in (first.registry, second.registry)
        for m in models
    ]
    assert sum(accepted) >= 1200


REGRESSION_SPEC = """
name: {name}
features: [{{name: size, min: 0}}, {{name: district, type: categorical}}, {{name: garden, type: boolean}}]
label: {{type: regression, min: 0, max: 10000}}
"""


async def test_regression_labels_are_checked_by_rule_and_stored_with_a_label_summary(
    options: KafkaOptions, store: FileStore, publisher: Publisher, unique: str
) -> None:
    model = f"m{unique}"
    apply_spec(store, REGRESSION_SPEC.format(name=model))
    rng = random.Random(5)
    good = [
        {
            "model": model,
            "record_id": f"{model}-{i}",
            "features": {
                "size": rng.uniform(20, 200),
                "district": rng.choice(["north", "south"]),
                "garden": i % 3 == 0,
            },
            "label": rng.randint(100, 900) if i % 2 else round(rng.uniform(100, 900), 2),  # ints are numbers too
        }
        for i in range(150)
    ]
    bad_labels: dict[str, Any] = {
        "text": "cheap",
        "numeric_text": "250",
        "boolean": True,
        "nan": float("nan"),
        "infinite": float("inf"),
        "below": -5,
        "above": 10_000.5,
    }
    template = good[0]
    for name, label in bad_labels.items():
        body = {**template, "record_id": f"bad-{name}", "label": label}
        # json.dumps writes NaN and Infinity as Python producers do
        await publisher.send(topics.ANNOTATIONS, json.dumps(body).encode(), model.encode())
    for body in good:
        await publisher.send(topics.ANNOTATIONS, json.dumps(body).encode(), model.encode())

    service = IngestService(settings_for(options, store, group_id=f"g-{unique}"))
    task = await running(service)
    repo = DatasetRepository(store)
    try:
        await wait_rows(repo, model, 150)
        rejected = [
            AnnotationRejected.model_validate_json(v)
            for v in await read_keyed(options, topics.ANNOTATIONS_REJECTED, model, len(bad_labels))
        ]
        announced = [
            DatasetVersionCreated.model_validate_json(v) for v in await read_keyed(options, topics.DATASETS, model, 1)
        ]
    finally:
        await stop(service, task)

    by_record = {json.loads(r.payload)["record_id"]: r.reasons for r in rejected}
    assert set(by_record) == {f"bad-{name}" for name in bad_labels}
    for reasons in by_record.values():
        assert [(r.field, r.rule) for r in reasons] == [("label", "label")]
    assert by_record["bad-boolean"][0].message == "label true is not a number: a regression label is a number"
    assert by_record["bad-nan"][0].message == "label nan is not finite"
    assert by_record["bad-below"][0].message == "label -5.0 is below min 0.0"

    manifest = repo.manifest(model)
    assert manifest.rows_total == 150 and manifest.task == "regression" and manifest.label_counts == {}
    assert manifest.label_histogram is not None and manifest.label_histogram.rows == 150
    labels = [float(b["label"]) for b in good]
    data = repo.load(model)
    by_id = dict(zip(data.record_ids.tolist(), data.y.tolist(), strict=True))
    assert data.y.dtype.kind == "f" and by_id == {b["record_id"]: float(b["label"]) for b in good}
    summary = manifest.label_summary()
    assert summary is not None and summary["count"] == 150.0
    assert summary["min"] == min(labels) and summary["max"] == max(labels)
    assert abs(summary["mean"] - sum(labels) / 150) < 1e-9
    assert announced[0].label_counts == {} and announced[0].label_summary is not None
    assert all(set(e.label_summary or {}) == {"count", "mean", "std", "min", "p50", "max"} for e in announced)
    assert service.registry.get_sample_value(
        "driftloop_ingest_rejected_records_total", {"model": model, "rule": "label"}
    ) == len(bad_labels)
