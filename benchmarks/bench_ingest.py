"""Ingest throughput: annotations validated and stored per second on one instance.

Two cases, each on a fresh embedded broker and FileStore: a 20-feature all-numeric model, and
a mixed-type model of 10 numeric, 6 categorical (two with declared values, one sent as
integer codes) and 2 boolean features, about 5 % of values missing where the spec allows it.
For each, N annotations are pre-published, then one ingest instance is timed from joining
its consumer group until the newest dataset version holds all N rows (consume + decode +
validate + dedupe + typed Parquet shard + manifest + DatasetVersionCreated + commit). Also
times the pure decode+validate step alone.
Target (issue #3): >= 20,000 records/s, for both cases.

    .venv/bin/python benchmarks/bench_ingest.py [N]
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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

MISSING_SHARE = 0.05
DECLARED = ["0%", "10%", "20%", "30%"]
CITIES = [f"city-{i}" for i in range(50)]
MIXED_FEATURES: list[dict[str, Any]] = [
    *({"name": f"n{i}", "min": -10, "max": 10} for i in range(8)),
    *({"name": f"n{i}", "allow_missing": True} for i in range(8, 10)),
    {"name": "downpayment", "type": "categorical", "values": DECLARED},
    {"name": "segment", "type": "categorical", "values": ["retail", "business", "private"], "allow_missing": True},
    {"name": "city", "type": "categorical"},
    {"name": "branch_code", "type": "categorical"},  # sent as integer codes, stored as their text
    {"name": "channel", "type": "categorical", "allow_missing": True},
    {"name": "campaign", "type": "categorical", "allow_missing": True},
    {"name": "repaid_before", "type": "boolean"},
    {"name": "verified", "type": "boolean", "allow_missing": True},
]
MIXED_SPEC = yaml.safe_dump(
    {
        "name": "bench-mixed",
        "features": MIXED_FEATURES,
        "label": {"values": ["low", "mid", "high"]},
        "validation": {"min_confidence": 0.5},
    },
    sort_keys=False,
)


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


def mixed_value(rng: random.Random, feature: dict[str, Any]) -> Any:
    """One value of a mixed-type feature; None (absent or null) for ~5 % where allowed."""
    if feature.get("allow_missing") and rng.random() < MISSING_SHARE:
        return None
    kind = feature.get("type", "numeric")
    if kind == "boolean":
        return rng.random() < 0.3
    if kind == "numeric":
        return rng.uniform(-5, 5)
    name = feature["name"]
    if name == "branch_code":
        return rng.randrange(200)
    if "values" in feature:
        return rng.choice(feature["values"])
    if name == "city":
        return rng.choice(CITIES)
    return f"{name}-{rng.randrange(12)}"


def mixed_payloads(n: int) -> list[bytes]:
    rng = random.Random(5)
    out = []
    for i in range(n):
        features: dict[str, Any] = {}
        for feature in MIXED_FEATURES:
            value = mixed_value(rng, feature)
            if value is not None or rng.random() < 0.5:  # a missing value is either null or absent
                features[feature["name"]] = value
        event = AnnotationSubmitted(
            model="bench-mixed",
            record_id=f"m-{i}",
            features=features,
            label=rng.choice(["low", "mid", "high"]),
            confidence=0.9,
        )
        out.append(encode_event(event))
    return out


@dataclass
class CaseResult:
    rows: int
    joined_s: float
    elapsed_s: float
    validate_rate: float
    rate: float


async def run_case(model: str, spec_text: str, data: list[bytes]) -> CaseResult:
    n = len(data)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        store = FileStore(Path(tmp) / "store")
        spec, _ = apply_spec(store, spec_text)

        started = time.perf_counter()
        for raw in data:
            result = parse_annotation(topics.ANNOTATIONS, raw)
            assert isinstance(result, AnnotationSubmitted)
            checked = check_record(spec, result)
            assert not isinstance(checked, list), checked
        validate_rate = n / (time.perf_counter() - started)

        options = KafkaOptions(bootstrap=broker.bootstrap, idempotence=False)
        await ensure_topics(options, [topics.ANNOTATIONS, topics.DATASETS, topics.ANNOTATIONS_REJECTED], partitions=4)
        publisher = Publisher(options)
        await publisher.start()
        futures = [await publisher.enqueue(topics.ANNOTATIONS, raw, model.encode()) for raw in data]
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
            version = repo.latest_version(model)
            if version is not None and repo.manifest(model, version).rows_total >= n:
                break
            await asyncio.sleep(0.05)
        finished = time.perf_counter()
        elapsed = finished - assigned
        service.stop()
        await task
        rows = repo.manifest(model).rows_total
    return CaseResult(rows, assigned - started, elapsed, validate_rate, n / elapsed)


async def main(n: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    cases = [
        ("bench", "20 numeric features", SPEC, payloads(n)),
        ("bench-mixed", "10 numeric + 6 categorical + 2 boolean, ~5 % missing", MIXED_SPEC, mixed_payloads(n)),
    ]
    for model, shape, spec_text, data in cases:
        result = await run_case(model, spec_text, data)
        print(
            f"ingest, {shape}: {n} annotations, {result.rows} stored in {result.elapsed_s:.2f}s on one instance "
            f"after joining its consumer group ({result.joined_s:.1f}s)"
        )
        print(
            f"  end to end (consume, validate, Parquet + manifest, commit): {result.rate:,.0f} records/s "
            f"(target >= {TARGET:,}/s: {'met' if result.rate >= TARGET else 'NOT met'})"
        )
        print(f"  decode + validate alone: {result.validate_rate:,.0f} records/s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
