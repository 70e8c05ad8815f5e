"""Throughput of the whole monitor service: broker -> faust -> join -> drift -> checkpoints.

An embedded broker gets a model's prediction log (20 features, ``PredictionsLogged`` messages
of ``--batch`` rows, as the inference service writes them) and ground truth for a fraction of
it (``AnnotationSubmitted`` with an ``inference_id``, one per message, as annotation systems
send them); then one monitor service (the faust app, the join table and its changelog, the
detectors, the checkpoints, the publisher) starts in this process and consumes it all. The
figure is predictions per second from the first record consumed to the last label joined;
the target (issue #6) is 20,000 predictions/s per instance with 20 features.

    .venv/bin/python benchmarks/bench_monitor_service.py                  # about two minutes
    .venv/bin/python benchmarks/bench_monitor_service.py --rows 50000 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from services.monitor.app import MonitorService, MonitorSettings
from shared.broker import EmbeddedBroker
from shared.bus import KafkaOptions, Publisher, all_topics_with_dlq, ensure_topics
from shared.events import AnnotationSubmitted, PredictionsLogged
from shared.spec import apply_spec
from shared.store import FileStore

sys.path.insert(0, str(Path(__file__).parent))
from bench_inference import register_model  # noqa: E402  (a 20-feature model and its card)

MODEL = "bench"
FEATURES = [f"f{i}" for i in range(20)]
SPEC = f"""
name: {MODEL}
features: [{", ".join(f"{{name: {f}}}" for f in FEATURES)}]
label: {{values: [0, 1]}}
"""
MIN_RATE = 20_000
WEIGHTS = np.linspace(-1.0, 1.0, 20)


def concept(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The labels: a linear concept with 10% noise."""
    y = (X @ WEIGHTS > 0).astype(int)
    return np.where(rng.random(len(X)) < 0.1, 1 - y, y)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def messages(
    rows: int, batch: int, labelled: float, seed: int
) -> tuple[list[PredictionsLogged], list[AnnotationSubmitted]]:
    """The prediction log in messages of ``batch`` rows, and labels for ``labelled`` of the rows."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 20)).round(4)
    p1 = (1 / (1 + np.exp(-X @ WEIGHTS))).round(4)  # what the registered model answers, near enough
    predicted = (p1 > 0.5).astype(int)
    truth = concept(X, rng)
    ids = [uuid.uuid4().hex for _ in range(rows)]
    at = [T0 + timedelta(milliseconds=i) for i in range(rows)]
    logs = [
        PredictionsLogged(
            model=MODEL,
            version=1,
            variant="champion",
            feature_names=FEATURES,
            classes=["0", "1"],
            inference_ids=ids[s : s + batch],
            features=X[s : s + batch].tolist(),
            labels=predicted[s : s + batch].tolist(),
            probabilities=[[1 - p, p] for p in p1[s : s + batch].tolist()],
            latency_ms=[0.4] * len(ids[s : s + batch]),
            predicted_at=at[s : s + batch],
        )
        for s in range(0, rows, batch)
    ]
    chosen = np.flatnonzero(rng.random(rows) < labelled)
    labels = [
        AnnotationSubmitted(
            model=MODEL,
            record_id=uuid.uuid4().hex,
            features=dict(zip(FEATURES, X[i].tolist(), strict=True)),
            label=int(truth[i]),
            inference_id=ids[i],
            occurred_at=at[i] + timedelta(seconds=5),
        )
        for i in chosen
    ]
    return logs, labels


async def run(args: argparse.Namespace, labelled: float, workdir: Path) -> tuple[float, int, int]:
    broker = EmbeddedBroker(log_path=workdir / "tansu.log")
    broker.start()
    try:
        options = KafkaOptions(bootstrap=broker.bootstrap, idempotence=False)
        await ensure_topics(options, all_topics_with_dlq(), partitions=4)
        store = FileStore(workdir / "store")
        apply_spec(store, SPEC)
        X = np.random.default_rng(0).normal(size=(5000, 20))
        register_model(store, "LogisticRegression", {}, X, concept(X, np.random.default_rng(1)))
        logs, labels = messages(args.rows, args.batch, labelled, seed=1)
        publisher = Publisher(options)
        await publisher.start(max_wait_s=10)
        started = time.perf_counter()
        for s in range(0, len(logs), 20):
            await publisher.publish_many(logs[s : s + 20])
        await publisher.publish_many(labels)
        await publisher.stop()
        print(
            f"published {args.rows:,} predictions in {len(logs):,} messages and {len(labels):,} labels "
            f"in {time.perf_counter() - started:.1f} s"
        )
        settings = MonitorSettings(
            kafka_bootstrap=broker.bootstrap,
            kafka_idempotence=False,
            store_kind="file",
            store_root=store.root,
            port=0,
            data_dir=workdir,
        )
        service = MonitorService(settings)
        task = asyncio.create_task(service.run())
        profile = cProfile.Profile() if args.profile else None
        first: float | None = None
        deadline = time.monotonic() + args.timeout
        handlers = service.handlers
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                watch = handlers.models.get(MODEL)
                if watch is None:
                    continue
                if first is None:
                    first = time.perf_counter()
                    if profile:
                        profile.enable()
                if watch.drift.predictions >= args.rows and watch.join.hits >= len(labels):
                    break
            elapsed = time.perf_counter() - (first or time.perf_counter())
            if profile:
                profile.disable()
                pstats.Stats(profile).sort_stats("tottime").print_stats(40)
            watch = handlers.models.get(MODEL)
            seen = watch.drift.predictions if watch else 0
            hits = watch.join.hits if watch else 0
        finally:
            service.stop()
            await asyncio.wait_for(task, 60)
        return elapsed, seen, hits
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=300_000, help="predictions in the log")
    parser.add_argument("--batch", type=int, default=1000, help="predictions per PredictionsLogged message")
    parser.add_argument(
        "--labelled",
        type=float,
        nargs="+",
        default=[0.0, 0.01, 0.1],
        help="fractions of predictions given ground truth (one run each)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="give up a run after this many seconds")
    parser.add_argument("--profile", action="store_true", help="cProfile the consuming phase")
    args = parser.parse_args(argv)
    results = []
    for labelled in args.labelled:
        with tempfile.TemporaryDirectory() as tmp:
            results.append((labelled, *asyncio.run(run(args, labelled, Path(tmp)))))
    print(f"\nmonitor service, one instance, 20 features, {args.rows:,} predictions in messages of {args.batch:,}:")
    print(
        f"  {'labelled':>8} {'labels':>8} {'seconds':>8} {'predictions/s':>14} {'labels/s':>9}  (target {MIN_RATE:,}/s)"
    )
    for labelled, elapsed, seen, hits in results:
        rate = seen / elapsed if elapsed else 0.0
        verdict = "PASS" if rate >= MIN_RATE and seen >= args.rows else "FAIL"
        per_label = hits / elapsed if elapsed else 0.0
        print(f"  {labelled:>8.0%} {hits:>8,} {elapsed:>8.1f} {rate:>14,.0f} {per_label:>9,.0f}  {verdict}")


if __name__ == "__main__":
    main()
