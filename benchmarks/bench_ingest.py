"""Ingest throughput: annotations validated and stored per second on one instance.

Two cases, each on a fresh embedded broker and FileStore: an all-numeric model (20 features,
or each width given by ``--features``), and a mixed-type model of 10 numeric, 6 categorical
(two with declared values, one sent as integer codes) and 2 boolean features, about 5 % of
values missing where the spec allows it.
For each, N annotations are pre-published, then one ingest instance is timed from joining
its consumer group until the newest dataset version holds all N rows (consume + decode +
validate + dedupe + typed Parquet shard + manifest + DatasetVersionCreated + commit). Also
times the pure decode + validate step alone (columnar, a poll's batch at a time).
Targets: >= 20,000 records/s up to 20 features, for both cases (issue #3); >= 10,000 records/s
for wider records, up to 300 features (issue #23).

    .venv/bin/python benchmarks/bench_ingest.py [N] [--features 20,100,300] [--no-mixed]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.ingest.app import IngestService, IngestSettings
from services.ingest.columnar import BatchValidator, decode_annotation
from services.ingest.validation import RecordValidator
from shared import topics
from shared.broker import EmbeddedBroker
from shared.bus import KafkaOptions, Publisher, confirm, ensure_topics
from shared.datasets import DatasetRepository
from shared.events import AnnotationSubmitted, encode_event
from shared.spec import apply_spec
from shared.store import FileStore

TARGET = 20_000
POLL = 2000
"""Messages validated together: ingest's ``max_poll_records``."""
WIDE_TARGET = 10_000
"""Records a second for records wider than :data:`NARROW` features (issue #23: 300 features)."""
NARROW = 20


def target(width: int) -> int:
    """The throughput a width of record must reach."""
    return TARGET if width <= NARROW else WIDE_TARGET


def feature_names(width: int) -> list[str]:
    return [f"f{i}" for i in range(width)]


def numeric_spec(width: int) -> str:
    features = ", ".join(f"{{name: {f}, min: -10, max: 10}}" for f in feature_names(width))
    return f"name: bench\nfeatures: [{features}]\nlabel: {{values: [0, 1, 2]}}\nvalidation: {{min_confidence: 0.5}}\n"


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


def payloads(n: int, width: int = NARROW) -> list[bytes]:
    rng = random.Random(3)
    names = feature_names(width)
    return [
        encode_event(
            AnnotationSubmitted(
                model="bench",
                record_id=f"r-{i}",
                features={f: rng.uniform(-5, 5) for f in names},
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
        validator = BatchValidator(RecordValidator(spec))
        for at in range(0, n, POLL):  # as ingest does after each poll
            batch = [decode_annotation(raw) for raw in data[at : at + POLL]]
            assert all(batch), "the fast decoder takes every benchmark message"
            checked = validator.check(batch)  # type: ignore[arg-type]
            assert all(checked), "every benchmark record is valid"
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


async def main(n: int, widths: list[int], mixed: bool) -> None:
    logging.basicConfig(level=logging.WARNING)
    cases = [("bench", f"{w} numeric features", w, numeric_spec(w), payloads(n, w)) for w in widths]
    if mixed:
        shape = "10 numeric + 6 categorical + 2 boolean, ~5 % missing"
        cases.append(("bench-mixed", shape, len(MIXED_FEATURES), MIXED_SPEC, mixed_payloads(n)))
    results = []
    for model, shape, width, spec_text, data in cases:
        result = await run_case(model, spec_text, data)
        results.append((shape, width, result))
        print(
            f"ingest, {shape}: {n} annotations, {result.rows} stored in {result.elapsed_s:.2f}s on one instance "
            f"after joining its consumer group ({result.joined_s:.1f}s)"
        )
        print(
            f"  end to end (consume, validate, Parquet + manifest, commit): {result.rate:,.0f} records/s "
            f"(target >= {target(width):,}/s: {'met' if result.rate >= target(width) else 'NOT met'})"
        )
        print(f"  decode + validate alone: {result.validate_rate:,.0f} records/s")
    print("summary, end to end on one instance:")
    for shape, width, result in results:
        verdict = "met" if result.rate >= target(width) else "NOT met"
        print(f"  {shape:<55} {result.rate:>9,.0f} records/s  (target >= {target(width):,}/s: {verdict})")


def widths(text: str) -> list[int]:
    """``20,100,300`` as a list of feature counts."""
    found = [int(part) for part in text.split(",") if part.strip()]
    if not found or min(found) < 1:
        raise argparse.ArgumentTypeError(f"expected feature counts like 20,100,300, got {text!r}")
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("n", nargs="?", type=int, default=100_000, help="annotations per case (default 100,000)")
    parser.add_argument(
        "--features", type=widths, default=[NARROW], help="all-numeric widths, comma-separated (default 20)"
    )
    parser.add_argument("--no-mixed", action="store_true", help="skip the mixed-type case")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.features, not args.no_mixed))
