"""Throughput of the whole monitor service: broker -> faust -> join -> drift -> checkpoints.

An embedded broker gets a model's prediction log (``--features`` numeric features,
``PredictionsLogged`` messages of ``--batch`` rows -- fewer for a wide model, as the inference
service splits them at :data:`~services.inference.handlers.MAX_VALUES_PER_MESSAGE` values) and
ground truth for a fraction of it (``AnnotationSubmitted`` with an ``inference_id``, one per
message, as annotation systems send them); then one monitor service (the faust app, the join
table and its changelog, the detectors, the checkpoints, the publisher) starts in this process
and consumes it all. The figure is predictions per second from the first record consumed to the
last label joined; the targets are 20,000 predictions/s per instance with 20 features (issue #6)
and 10,000/s with 300 features and no labels (issue #23).

    .venv/bin/python benchmarks/bench_monitor_service.py                  # about two minutes
    .venv/bin/python benchmarks/bench_monitor_service.py --rows 50000 --profile
    .venv/bin/python benchmarks/bench_monitor_service.py --features 20,100,300 --labelled 0
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from services.inference.handlers import MAX_VALUES_PER_MESSAGE
from services.monitor.app import MonitorService, MonitorSettings
from shared.broker import EmbeddedBroker
from shared.bus import KafkaOptions, Publisher, all_topics_with_dlq, ensure_topics
from shared.events import AnnotationSubmitted, PredictionsLogged
from shared.spec import apply_spec
from shared.store import FileStore

sys.path.insert(0, str(Path(__file__).parent))
from bench_inference import register_model  # noqa: E402  (a model of X's width and its card)

MODEL = "bench"
MIN_RATES = {20: 20_000, 300: 10_000}
"""Targets by feature count (issue #6 at 20 features, issue #23 at 300, without labels)."""


def feature_names(width: int) -> list[str]:
    return [f"f{i}" for i in range(width)]


def spec(width: int) -> str:
    return f"""
name: {MODEL}
features: [{", ".join(f"{{name: {f}}}" for f in feature_names(width))}]
label: {{values: [0, 1]}}
"""


def weights(width: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, width)


def concept(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The labels: a linear concept with 10% noise."""
    y = (X @ weights(X.shape[1]) > 0).astype(int)
    return np.where(rng.random(len(X)) < 0.1, 1 - y, y)


def rows_per_message(batch: int, width: int) -> int:
    """``batch``, or fewer for a wide model: the inference service's cap on values per message
    (features and the two probabilities)."""
    return max(1, min(batch, MAX_VALUES_PER_MESSAGE // (width + 2)))


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def messages(
    rows: int, batch: int, labelled: float, seed: int, width: int = 20
) -> tuple[list[PredictionsLogged], list[AnnotationSubmitted]]:
    """The prediction log in messages of ``batch`` rows, and labels for ``labelled`` of the rows."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, width)).round(4)
    p1 = (1 / (1 + np.exp(-X @ weights(width)))).round(4)  # what the registered model answers, near enough
    names = feature_names(width)
    predicted = (p1 > 0.5).astype(int)
    truth = concept(X, rng)
    ids = [uuid.uuid4().hex for _ in range(rows)]
    at = [T0 + timedelta(milliseconds=i) for i in range(rows)]
    logs = [
        PredictionsLogged(
            model=MODEL,
            version=1,
            variant="champion",
            feature_names=names,
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
            features=dict(zip(names, X[i].tolist(), strict=True)),
            label=int(truth[i]),
            inference_id=ids[i],
            occurred_at=at[i] + timedelta(seconds=5),
        )
        for i in chosen
    ]
    return logs, labels


async def run(args: argparse.Namespace, width: int, labelled: float, workdir: Path) -> tuple[float, int, int]:
    broker = EmbeddedBroker(log_path=workdir / "tansu.log")
    broker.start()
    try:
        options = KafkaOptions(bootstrap=broker.bootstrap, idempotence=False)
        await ensure_topics(options, all_topics_with_dlq(), partitions=4)
        store = FileStore(workdir / "store")
        apply_spec(store, spec(width))
        X = np.random.default_rng(0).normal(size=(5000, width))
        register_model(store, "LogisticRegression", {}, X, concept(X, np.random.default_rng(1)))
        logs, labels = messages(args.rows, rows_per_message(args.batch, width), labelled, seed=1, width=width)
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
        # The producer's side is not the monitor's: a monitor process does not hold the inference
        # service's messages (at 300 features they are 18 million floats that every full garbage
        # collection of the consuming phase would walk).
        n_labels = len(labels)
        del logs, labels
        gc.collect()
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
                if watch.drift.predictions >= args.rows and watch.join.hits >= n_labels:
                    break
            elapsed = time.perf_counter() - (first or time.perf_counter())
            if profile:
                profile.disable()
                stats = pstats.Stats(profile)
                stats.sort_stats("tottime").print_stats(40)
                stats.sort_stats("cumulative").print_stats(40)
            watch = handlers.models.get(MODEL)
            seen = watch.drift.predictions if watch else 0
            hits = watch.join.hits if watch else 0
        finally:
            service.stop()
            await asyncio.wait_for(task, 60)
        return elapsed, seen, hits
    finally:
        broker.stop()


def widths(text: str) -> list[int]:
    """``--features 20,100,300`` -> [20, 100, 300]."""
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give one or more feature counts, e.g. 20,100,300")
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=300_000, help="predictions in the log")
    parser.add_argument(
        "--features", type=widths, default=[20], help="numeric features: one count, or several (20,100,300)"
    )
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
    for width in args.features:
        for labelled in args.labelled:
            with tempfile.TemporaryDirectory() as tmp:
                results.append((width, labelled, *asyncio.run(run(args, width, labelled, Path(tmp)))))
    print(f"\nmonitor service, one instance, {args.rows:,} predictions:")
    print(
        f"  {'features':>8} {'rows/msg':>8} {'labelled':>8} {'labels':>8} {'seconds':>8} {'predictions/s':>14}"
        f" {'labels/s':>9} {'target':>8}"
    )
    for width, labelled, elapsed, seen, hits in results:
        rate = seen / elapsed if elapsed else 0.0
        target = MIN_RATES.get(width)
        verdict = "" if target is None else "PASS" if rate >= target and seen >= args.rows else "FAIL"
        per_label = hits / elapsed if elapsed else 0.0
        shown = "-" if target is None else f"{target:,}"
        print(
            f"  {width:>8} {rows_per_message(args.batch, width):>8,} {labelled:>8.0%} {hits:>8,} {elapsed:>8.1f}"
            f" {rate:>14,.0f} {per_label:>9,.0f} {shown:>8}  {verdict}"
        )


if __name__ == "__main__":
    main()
