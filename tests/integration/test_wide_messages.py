"""Messages bounded by bytes, through the real local broker, at 1,000 features (issue #23).

Every producer keeps its records under the bus's limit (``kafka_max_message_bytes``, 1,000,000
by default): the prediction log of a 1,000-row request to a 1,000-feature model arrives whole,
every row once, in messages under the limit; a ~2 MB poison message on ``annotations`` is
dead-lettered truncated and ingest moves on to the valid records behind it; an oversized
annotation is rejected with a bounded payload; a dataset version of the 1,000-feature spec is
announced. The sizes of the other events at 1,000 features are measured here too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from services.ingest.app import IngestService
from services.trainer.runner import train
from shared import topics
from shared.bus import KafkaOptions, Publisher, record_bytes
from shared.datasets import AcceptedRecord, DatasetRepository
from shared.events import (
    DEFAULT_MAX_MESSAGE_BYTES,
    AnnotationRejected,
    AnnotationSubmitted,
    DatasetVersionCreated,
    DeadLetter,
    DeploymentChanged,
    FeatureValue,
    PredictionsLogged,
    TrainingCompleted,
    decode_as,
    encode_event,
)
from shared.registry import Registry
from shared.spec import apply_spec, parse_spec
from shared.store import FileStore
from tests.integration.serving import inference_service
from tests.integration.test_ingest import settings_for
from tests.integration.topic_reading import read_keyed, wait_for

pytestmark = pytest.mark.integration

FEATURES = [f"f{i:04d}" for i in range(1000)]


def spec_of(model: str) -> str:
    """A spec of 1,000 numeric features."""
    features = ", ".join(f"{{name: {n}}}" for n in FEATURES)
    return (
        f"name: {model}\nfeatures: [{features}]\nlabel: {{values: [0, 1]}}\n"
        "training: {estimator: LogisticRegression, holdout: 0.25, seed: 1}\n"
    )


LIMIT = DEFAULT_MAX_MESSAGE_BYTES
T0 = datetime(2026, 4, 1, tzinfo=UTC)


def size(key: bytes | None, value: bytes) -> int:
    return record_bytes(value, key)


async def read_until(options: KafkaOptions, topic: str, key: str, rows: int, timeout: float = 30) -> list[bytes]:
    """Values on ``topic`` keyed ``key`` until they hold ``rows`` predictions, then 0.5 s more (a duplicate shows)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=options.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    found: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            counted = 0
            while counted < rows:
                batch = await consumer.getmany(timeout_ms=200)
                fresh = [r.value for rs in batch.values() for r in rs if r.key == key.encode() and r.value]
                found += fresh
                counted += sum(len(orjson.loads(v)["inference_ids"]) for v in fresh)
        found += [
            r.value
            for rs in (await consumer.getmany(timeout_ms=500)).values()
            for r in rs
            if r.key == key.encode() and r.value
        ]
    finally:
        await consumer.stop()
    return found


# --- inference: the prediction log -----------------------------------------------------------


def train_wide(store: FileStore, model: str) -> tuple[int, TrainingCompleted]:
    """Register a 1,000-feature model; returns its version and the event the trainer would send."""
    spec = parse_spec(spec_of(model))
    apply_spec(store, spec_of(model))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, len(FEATURES)))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    records = [
        AcceptedRecord(f"r{i}", T0 + timedelta(seconds=i), int(y[i]), 1.0, None, None, tuple(X[i]))
        for i in range(len(X))
    ]
    repo = DatasetRepository(store)
    manifest = repo.write_version(model, spec.schema_hash(), FEATURES, [0, 1], records, None)
    assert manifest is not None
    result = train(spec, repo, Registry(store), manifest.version, uuid.uuid4().hex, "manual", None)
    assert result.card is not None, result.error
    completed = TrainingCompleted(
        model=model,
        version=result.card.version,
        trigger=result.trigger,
        dataset_version=result.dataset_version,
        metrics=result.metrics,
        champion_metrics=result.champion_metrics,
        gate=result.gate,
        artifact_key=result.card.artifact_key,
        sha256=result.card.artifact_sha256,
    )
    return result.card.version, completed


@pytest.fixture
async def wide_inference(
    options: KafkaOptions, store: FileStore, unique: str, tmp_path: Path
) -> AsyncIterator[tuple[str, TrainingCompleted, httpx.AsyncClient]]:
    model = f"wide{unique}"
    version, completed = train_wide(store, model)
    Registry(store).set_alias(model, "production", version, "test", "first")
    async with inference_service(
        options, store, tmp_path, model, max_body_bytes=16 * 1024 * 1024, client_timeout=30
    ) as (service, client):
        assert service.settings.kafka_max_message_bytes == LIMIT
        yield model, completed, client


async def test_a_thousand_rows_of_a_thousand_features_are_logged_whole_under_the_limit(
    options: KafkaOptions, wide_inference: tuple[str, TrainingCompleted, httpx.AsyncClient]
) -> None:
    model, completed, client = wide_inference
    X = np.round(np.random.default_rng(1).normal(size=(1000, len(FEATURES))), 6).astype(np.float32)
    body = {"id": "wide-1", "inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP32", "data": X}]}
    r = await client.post(
        f"/v2/models/{model}/infer",
        content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [1000]

    values = await read_until(options, topics.PREDICTIONS, model, 1000)
    sizes = [size(model.encode(), v) for v in values]
    assert max(sizes) <= LIMIT, f"largest prediction message {max(sizes)} bytes"
    events = [decode_as(PredictionsLogged, v) for v in values]
    ids = [i for e in events for i in e.inference_ids]
    assert sorted(ids) == sorted(f"wide-1:{i}" for i in range(1000)) and len(ids) == 1000, "every row once"
    by_id = {i: row for e in events for i, row in zip(e.inference_ids, e.features, strict=True)}
    assert np.array_equal(np.array(by_id["wide-1:999"], dtype=np.float32), X[999]) and all(
        e.feature_names == FEATURES for e in events
    )

    # the trainer's and the deployer's events do not grow with the features: measured, not assumed
    deployed = DeploymentChanged(
        model=model, action="promoted", version=2, previous_version=1, traffic=1.0, reason="x" * 200, actor="monitor"
    )
    assert size(model.encode(), encode_event(completed)) < 2_000
    assert size(model.encode(), encode_event(deployed)) < 1_000


# --- ingest: dead letters, rejections, dataset versions ----------------------------------------


async def test_a_poison_message_and_an_oversized_annotation_are_bounded_and_ingest_moves_on(
    options: KafkaOptions, store: FileStore, unique: str
) -> None:
    model = f"ann{unique}"
    apply_spec(store, spec_of(model))
    rng = np.random.default_rng(2)

    def annotation(i: int, **features: FeatureValue) -> AnnotationSubmitted:
        row = dict(zip(FEATURES, rng.normal(size=len(FEATURES)).tolist(), strict=True))
        return AnnotationSubmitted(model=model, record_id=f"a{i}", features={**row, **features}, label=i % 2)

    poison = b"\x00\xff" + bytes(rng.integers(0, 256, size=2_000_000, dtype=np.uint8))
    oversized = encode_event(annotation(-1, f0007="x" * 1_500_000))  # a string where a number belongs
    valid = [annotation(i) for i in range(20)]
    big = Publisher(KafkaOptions(bootstrap=options.bootstrap, idempotence=False, max_message_bytes=4_000_000))
    await big.start(max_wait_s=10)
    try:
        await big.send(topics.ANNOTATIONS, poison, model.encode())
        await big.send(topics.ANNOTATIONS, oversized, model.encode())
        await big.publish_many(valid)  # behind both, on the same partition (same key)
    finally:
        await big.stop()

    service = IngestService(settings_for(options, store, group_id=f"g-{unique}"))
    task = asyncio.create_task(service.run())
    try:
        [letter_bytes] = await read_keyed(options, topics.dlq(topics.ANNOTATIONS), model, 1)
        [rejected_bytes] = await read_keyed(options, topics.ANNOTATIONS_REJECTED, model, 1)
        [announced_bytes] = await read_keyed(options, topics.DATASETS, model, 1)
        repo = DatasetRepository(store)
        await wait_for(lambda: repo.latest_version(model) is not None, timeout=30)
    finally:
        service.stop()
        await asyncio.wait_for(task, 30)

    letter = decode_as(DeadLetter, letter_bytes)
    assert size(model.encode(), letter_bytes) <= LIMIT
    assert letter.payload_truncated and letter.payload_bytes == len(poison)
    assert poison.startswith(letter.original_bytes()) and len(letter.original_bytes()) > 200_000
    assert letter.source.topic == topics.ANNOTATIONS and letter.key == model

    rejected = decode_as(AnnotationRejected, rejected_bytes)
    assert size(model.encode(), rejected_bytes) <= LIMIT
    assert rejected.payload_truncated and rejected.payload_bytes == len(oversized)
    assert oversized.decode().startswith(rejected.payload) and len(rejected.payload) > 900_000
    assert [(r.field, r.rule) for r in rejected.reasons] == [("features.f0007", "type")]

    announced = decode_as(DatasetVersionCreated, announced_bytes)
    assert size(model.encode(), announced_bytes) < 1_000, "label counts, not per-feature statistics"
    assert announced.rows_added == 20, "ingest moved past both and stored every valid record behind them"
    data = repo.load(model)
    assert sorted(data.record_ids.tolist()) == sorted(a.record_id for a in valid) and data.X.shape == (20, 1000)
