"""``driftloop demo``: the scripted scenario on the local stack.

Today it runs the part of the loop that is built — annotations in, versioned datasets out,
a first model trained, exported to ONNX and registered:
it applies a spec for a River SEA stream whose labelling rule switches half-way (concept
drift), publishes the labelled stream onto ``annotations`` together with records that break
the spec and a few undecodable messages, waits while the ingest service validates and
versions the data, then reads the dataset back from the object store and reports what
happened, including the first model the trainer registered. Serving and drift detection join
the scenario as their services land.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from river.datasets import synth

from services.stack import LocalStack
from shared import topics
from shared.bus import Delivery, KafkaOptions, Publisher, Subscriber
from shared.datasets import DatasetRepository
from shared.events import AnnotationRejected, AnnotationSubmitted, DeadLetter, decode_as
from shared.registry import Registry
from shared.spec import apply_spec
from shared.store import FileStore

MODEL = "sea-demo"
SPEC = f"""
name: {MODEL}
features: [{{name: x1, min: 0, max: 10}}, {{name: x2, min: 0, max: 10}}, {{name: x3, min: 0, max: 10}}]
label: {{values: [0, 1]}}
validation: {{min_confidence: 0.6, max_rejection_rate: 0.2, label_shift_alert: 0.15}}
training: {{estimator: HistGradientBoostingClassifier}}
"""
POISON = (b"{not json", b"\xff\xfe", b"[1, 2, 3]")


def drifting_stream(events: int, seed: int = 7) -> list[AnnotationSubmitted]:
    """SEA variant 0 switching to variant 3 half-way: the labelling rule itself changes."""
    stream = synth.ConceptDriftStream(
        stream=synth.SEA(variant=0, seed=seed),
        drift_stream=synth.SEA(variant=3, seed=seed + 1),
        position=events // 2,
        width=max(1, events // 50),
        seed=seed,
    )
    return [
        AnnotationSubmitted(
            model=MODEL,
            record_id=f"sea-{i}",
            features={f"x{k + 1}": float(v) for k, v in x.items()},
            label=int(y),
            confidence=1.0,
            annotator="river.SEA",
        )
        for i, (x, y) in enumerate(stream.take(events))
    ]


def broken_records(count: int, seed: int = 11) -> list[AnnotationSubmitted]:
    """Records an annotation tool might really send: out of range, unsure, unknown label, missing feature."""
    rng = random.Random(seed)
    kinds = [
        ({"x1": 12.5, "x2": 1.0, "x3": 1.0}, 1, 1.0),
        ({"x1": 1.0, "x2": 1.0, "x3": 1.0}, 1, 0.3),
        ({"x1": 1.0, "x2": 1.0, "x3": 1.0}, 7, 1.0),
        ({"x1": 1.0, "x2": 1.0}, 0, 1.0),
    ]
    out = []
    for i in range(count):
        features, label, confidence = kinds[i % len(kinds)]
        out.append(
            AnnotationSubmitted(
                model=MODEL,
                record_id=f"broken-{i}",
                features={k: v + rng.random() * 0.01 for k, v in features.items()},
                label=label,
                confidence=confidence,
                annotator="careless-tool",
            )
        )
    return out


def reset_demo_model(store: FileStore) -> None:
    """Forget the demo model's earlier datasets, so every run starts from nothing (other models are untouched)."""
    for key in store.list(f"datasets/{MODEL}/"):
        store.delete(key)


async def _scenario(stack: LocalStack, console: Console, events: int) -> dict[str, Any]:
    store = FileStore(stack.store_root)
    reset_demo_model(store)
    apply_spec(store, SPEC, source="demo spec")
    repo = DatasetRepository(store)
    options = KafkaOptions(bootstrap=stack.broker.bootstrap, client_id="driftloop-demo", idempotence=False)
    records = drifting_stream(events)
    broken = broken_records(max(4, events // 50))
    resent = records[: events // 20]  # an upstream retry: must not be stored twice
    outgoing = records + broken + resent

    publisher = Publisher(options)
    await publisher.start(max_wait_s=10)
    rejected: Counter[str] = Counter()
    dead: list[DeadLetter] = []

    async def on_rejected(event: AnnotationRejected, delivery: Delivery) -> None:
        if event.model == MODEL:
            rejected.update(reason.rule for reason in event.reasons)

    async def on_dead(letter: DeadLetter, delivery: Delivery) -> None:
        dead.append(letter)

    watchers: list[Subscriber[Any]] = [
        Subscriber(options, "driftloop-demo-rejected", [topics.ANNOTATIONS_REJECTED], on_rejected, publisher),
        Subscriber(
            options,
            "driftloop-demo-dlq",
            [topics.dlq(topics.ANNOTATIONS)],
            on_dead,
            publisher,
            lambda topic, data: decode_as(DeadLetter, data),
        ),
    ]
    watching = [asyncio.create_task(w.run()) for w in watchers]
    progress = Progress(
        TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    try:
        with progress:
            sending = progress.add_task("publishing annotations", total=len(outgoing) + len(POISON))
            started = time.monotonic()
            for i in range(0, len(outgoing), 500):
                progress.advance(sending, await publisher.publish_many(outgoing[i : i + 500]))
            for raw in POISON:
                await publisher.send(topics.ANNOTATIONS, raw, key=MODEL.encode())
                progress.advance(sending)
            storing = progress.add_task("ingest: validate, dedupe, version", total=len(records))
            stored = 0
            async with asyncio.timeout(180):
                while stored < len(records) or sum(rejected.values()) < len(broken) or len(dead) < len(POISON):
                    version = await asyncio.to_thread(repo.latest_version, MODEL)
                    if version is not None:
                        stored = (await asyncio.to_thread(repo.manifest, MODEL, version)).rows_total
                        progress.update(storing, completed=min(stored, len(records)))
                    await asyncio.sleep(0.2)
            elapsed = time.monotonic() - started
            await asyncio.sleep(1.0)  # anything stored twice would show up now
    finally:
        for watcher in watchers:
            watcher.stop()
        await asyncio.gather(*watching, return_exceptions=True)
        await publisher.stop()

    registry = Registry(store)
    trained: dict[str, Any] = {}
    if "trainer" not in stack.missing:
        with progress:
            task = progress.add_task("trainer: first model", total=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(120):
                    while (version := await asyncio.to_thread(registry.alias, MODEL, "production")) is None:
                        await asyncio.sleep(0.3)
                    card = await asyncio.to_thread(registry.card, MODEL, version)
                    progress.update(task, completed=1)
                    trained = {
                        "production model": f"v{card.version} {card.estimator}, dataset v{card.dataset_version}",
                        "holdout accuracy (newest rows)": round(card.metrics["accuracy"], 4),
                        "training rows / seconds": f"{card.training_rows} / {card.training_seconds:.2f}",
                    }
    data = await asyncio.to_thread(repo.load, MODEL)
    manifest = await asyncio.to_thread(repo.manifest, MODEL)
    half = len(records) // 2
    positions = {rid: i for i, rid in enumerate(r.record_id for r in records)}
    before = [int(y) for rid, y in zip(data.record_ids, data.y, strict=True) if positions[rid] < half]
    after = [int(y) for rid, y in zip(data.record_ids, data.y, strict=True) if positions[rid] >= half]
    flagged = [v for v in repo.versions(MODEL) if repo.manifest(MODEL, v).checks.get("label_shift", {}).get("flagged")]
    return {
        "model": MODEL,
        "records published (incl. resends)": len(outgoing),
        "undecodable messages": len(POISON),
        "rows stored": len(data.record_ids),
        "distinct rows stored": len(set(data.record_ids.tolist())),
        "resends skipped": len(resent),
        "dataset versions": manifest.version,
        "rejected by rule": dict(sorted(rejected.items())),
        "dead-lettered": len(dead),
        "label-shift flags (versions)": flagged,
        "share of label 1 before the drift": round(sum(before) / max(1, len(before)), 3),
        "share of label 1 after the drift": round(sum(after) / max(1, len(after)), 3),
        "seconds from first publish to all stored": round(elapsed, 1),
        **trained,
        "_expected_rows": len(records),
        "_expected_rejections": len(broken),
    }


def run_demo(stack: LocalStack, console: Console, events: int = 5000) -> int:
    """Run the scenario on a started stack, store and print its summary; 0 when all checks pass."""
    if "ingest" in stack.missing:
        console.print("[red]the ingest service is not available; nothing to demonstrate[/red]")
        return 1
    summary = asyncio.run(_scenario(stack, console, events))
    expected_rows = summary.pop("_expected_rows")
    expected_rejections = summary.pop("_expected_rejections")
    store = FileStore(stack.store_root)
    key = f"demo/{MODEL}/summary.json"
    store.put(key, json.dumps(summary, indent=2).encode())

    table = Table(title="demo summary")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in summary.items():
        table.add_row(name, str(value))
    console.print(table)
    ok = (
        summary["rows stored"] == summary["distinct rows stored"] == expected_rows
        and sum(summary["rejected by rule"].values()) == expected_rejections
        and summary["dead-lettered"] == len(POISON)
        and ("trainer" in stack.missing or "production model" in summary)
    )
    console.print(f"summary stored at {store.describe()}/{key}; `driftloop datasets show {MODEL}` shows the data")
    if stack.missing:
        console.print(
            "[yellow]Not built yet:[/yellow] "
            + ", ".join(stack.missing)
            + ". The loop (serve → detect drift → retrain → canary) is not closed yet."
        )
    console.print("[green]all checks passed[/green]" if ok else "[red]checks failed[/red]")
    return 0 if ok else 1
