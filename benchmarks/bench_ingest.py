"""Ingest throughput: annotations validated and stored per second on one instance.

Pre-publishes N annotations of a 20-feature model to a fresh embedded broker, then starts one
ingest instance against a FileStore and times it from start until the newest dataset
version holds all N rows (consume + decode + validate + dedupe + Parquet shard + manifest +
DatasetVersionCreated + commit). Also times the pure decode+validate step alone.
Target (issue #3): >= 20,000 records/s.

    .venv/bin/python benchmarks/bench_ingest.py [N]
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

from services.ingest.app import IngestService, IngestSettings
from services.ingest.validation import check_record, parse_annotation
from shared import topics
from shared.broker import EmbeddedBroker
from shared.bus import KafkaOptions, Publisher, confirm, ensure_topics
from shared.datasets import DatasetRepository
from shared.events import AnnotationSubmitted, encode_event
from shared.spec import apply_spec
from shared.store import FileStore

TARGET = 20_000
FEATURES = [f"f{i}" for i in range(20)]
SPEC = "name: bench\nfeatures: [" + ", ".join(f"{{name: {f}, min: -10, max: 10}}" for f in FEATURES) + "]\n"
SPEC += "label: {values: [0, 1, 2]}\nvalidation: {min_confidence: 0.5}\n"


def payloads(n: int) -> list[bytes]:
    rng = random.Random(3)
    return [
        encode_event(
            AnnotationSubmitted(
                model="bench",
                record_id=f"r-{i}",
                features={f: rng.uniform(-5, 5) for f in FEATURES},
                label=rng.randrange(3),
                confidence=0.9,
            )
        )
        for i in range(n)
    ]


async def main(n: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    data = payloads(n)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        store = FileStore(Path(tmp) / "store")
        spec, _ = apply_spec(store, SPEC)

        started = time.perf_counter()
        for raw in data:
            result = parse_annotation(topics.ANNOTATIONS, raw)
            assert isinstance(result, AnnotationSubmitted)
            check_record(spec, result)
        validate_rate = n / (time.perf_counter() - started)

        options = KafkaOptions(bootstrap=broker.bootstrap, idempotence=False)
        await ensure_topics(options, [topics.ANNOTATIONS, topics.DATASETS, topics.ANNOTATIONS_REJECTED], partitions=4)
        publisher = Publisher(options)
        await publisher.start()
        futures = [await publisher.enqueue(topics.ANNOTATIONS, raw, b"bench") for raw in data]
        await confirm(futures)
        await publisher.stop()

        settings = IngestSettings(
            kafka_bootstrap=broker.bootstrap,
            kafka_idempotence=False,
            store_kind="file",
            store_root=store.root,
            port=0,
            flush_rows=20_000,
            flush_interval_s=1.0,
        )
        service = IngestService(settings)
        repo = DatasetRepository(store)
        started = time.perf_counter()
        task = asyncio.create_task(service.run())
        while not service.subscriber.assignment():
            await asyncio.sleep(0.01)
        assigned = time.perf_counter()
        while True:
            version = repo.latest_version("bench")
            if version is not None and repo.manifest("bench", version).rows_total >= n:
                break
            await asyncio.sleep(0.05)
        finished = time.perf_counter()
        elapsed = finished - assigned
        service.stop()
        await task
        rows = repo.manifest("bench").rows_total
    rate = n / elapsed
    print(
        f"ingest: {n} annotations of 20 features, {rows} stored in {elapsed:.2f}s on one instance "
        f"after joining its consumer group ({assigned - started:.1f}s)"
    )
    print(
        f"  end to end (consume, validate, Parquet + manifest, commit): {rate:,.0f} records/s "
        f"(target >= {TARGET:,}/s: {'met' if rate >= TARGET else 'NOT met'})"
    )
    print(f"  decode + validate alone: {validate_rate:,.0f} records/s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
