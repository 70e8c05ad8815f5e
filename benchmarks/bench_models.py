"""Many models on one stack: 1, 10 and 30 models sharing the topics and the services (issue #23).

For each model count the whole local stack is started (embedded broker, FileStore, ingest,
trainer, inference and monitor as their own processes, default settings: each model's buffer
flushed at 5,000 rows or 5 s) and every model gets a spec (``--features`` numeric features, its
own linear concept, LogisticRegression). Then:

1. **Bulk load.** ``--rows`` labelled records per model are published to ``annotations``
   interleaved across the models, as one team's history export would arrive. Figures: seconds
   from the first record published until each model has a production version (median and last),
   and the rows its first training run was given -- which must be the flush threshold (5,000)
   for every model, whatever the number of models sharing the topic -- and the label-shift
   checks of every dataset version (none may be judged on a batch below
   ``validation.min_batch_rows``).
2. **Traffic.** ``--requests`` single-row V2 predictions per model through the inference
   service, each followed by its ground truth on ``annotations``; the monitor's CPU time
   (``/proc/<pid>/stat``) from the first request until every label has been joined, less its
   idle CPU over as long (measured for 5 s before), per prediction + label.
3. **Memory.** The resident set (VmRSS) of each service at the end.

    .venv/bin/python benchmarks/bench_models.py                     # 1, 10, 30 models: about 6 minutes
    .venv/bin/python benchmarks/bench_models.py --models 1,10 --requests 100
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from services.stack import DEFAULT_PORTS, LocalStack, StackConfig
from shared import topics
from shared.bus import KafkaOptions, Publisher
from shared.datasets import DatasetRepository
from shared.events import AnnotationSubmitted, encode_event
from shared.registry import Registry
from shared.spec import apply_spec
from shared.store import FileStore

sys.path.insert(0, str(Path(__file__).parent))
from bench_monitor_bulk import cpu_seconds  # noqa: E402  (a process's CPU time from /proc)

FLUSH_ROWS = 5000


def rss_mb(pid: int) -> float:
    """Resident set of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spec(model: str, features: int) -> str:
    names = ", ".join(f"{{name: f{i}}}" for i in range(features))
    return (
        f"name: {model}\nfeatures: [{names}]\nlabel: {{values: [0, 1]}}\ntraining: {{estimator: LogisticRegression}}\n"
    )


@dataclass
class Concept:
    """A model's own linear concept with 10 % label noise."""

    weights: np.ndarray
    rng: np.random.Generator

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        X = self.rng.normal(size=(n, len(self.weights))).round(4)
        y = (X @ self.weights > 0).astype(int)
        return X, np.where(self.rng.random(n) < 0.1, 1 - y, y)


@dataclass
class Figures:
    models: int
    to_production: list[float] = field(default_factory=list)
    first_run_rows: list[int] = field(default_factory=list)
    small_checks: int = 0
    versions: int = 0
    monitor_cpu_us: float = float("nan")
    joined: int = 0
    rss: dict[str, float] = field(default_factory=dict)
    error: str | None = None


async def bulk_load(
    stack: LocalStack, names: list[str], concepts: dict[str, Concept], args: argparse.Namespace, figures: Figures
) -> None:
    store = FileStore(stack.store_root)
    registry, repo = Registry(store), DatasetRepository(store)
    options = KafkaOptions(bootstrap=stack.broker.bootstrap, idempotence=False)
    publisher = Publisher(options)
    await publisher.start(max_wait_s=10)
    data = {m: concepts[m].sample(args.rows) for m in names}
    values = [  # encoded before the clock starts: the load arrives as fast as the broker takes it
        (
            m,
            encode_event(
                AnnotationSubmitted(
                    model=m,
                    record_id=f"h-{i}",
                    features={f"f{k}": v for k, v in enumerate(data[m][0][i].tolist())},
                    label=int(data[m][1][i]),
                )
            ),
        )
        for i in range(args.rows)
        for m in names  # interleaved: every model's records share the topic's partitions
    ]
    started = time.monotonic()
    try:
        for at in range(0, len(values), 5000):
            await asyncio.gather(
                *[await publisher.enqueue(topics.ANNOTATIONS, v, m.encode()) for m, v in values[at : at + 5000]]
            )
    finally:
        await publisher.stop()
    print(f"  {len(values):,} records published in {time.monotonic() - started:.1f} s")
    waiting = set(names)
    deadline = time.monotonic() + args.timeout
    while waiting and time.monotonic() < deadline:
        for m in list(waiting):
            if registry.alias(m, "production") is not None:
                figures.to_production.append(time.monotonic() - started)
                waiting.discard(m)
        await asyncio.sleep(0.5)
    if waiting:
        raise TimeoutError(f"{len(waiting)} of {len(names)} models had no production version in {args.timeout:.0f} s")
    for m in names:
        card = registry.card(m, registry.alias(m, "production") or 1)
        figures.first_run_rows.append(int(card.training_rows + card.holdout_rows))
        for version in repo.versions(m):
            figures.versions += 1
            checks = repo.manifest(m, version).checks
            shift = checks.get("label_shift", {})
            rows = int(shift.get("batch_rows", 0)) + int(checks["rejections"]["rejected"])
            if rows < shift.get("min_rows", 0) and (not shift.get("deferred") or shift.get("flagged")):
                figures.small_checks += 1  # a check judged on a batch below the minimum: must never happen


async def traffic(
    stack: LocalStack, names: list[str], concepts: dict[str, Concept], args: argparse.Namespace, figures: Figures
) -> None:
    monitor = next(c for c in stack.children if c.name == "monitor")
    url = stack.endpoints()["services"]["inference"]
    options = KafkaOptions(bootstrap=stack.broker.bootstrap, idempotence=False)
    publisher = Publisher(options)
    await publisher.start(max_wait_s=10)
    idle_from, idle_cpu = time.monotonic(), cpu_seconds(monitor.process.pid)
    await asyncio.sleep(5.0)  # the monitor's own background work (checkpoints, faust), subtracted below
    idle_share = (cpu_seconds(monitor.process.pid) - idle_cpu) / (time.monotonic() - idle_from)
    before, started = cpu_seconds(monitor.process.pid), time.monotonic()
    total = 0
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=32)) as client:
            for m in names:
                X, y = concepts[m].sample(args.requests)

                async def one(i: int, m: str = m, X: np.ndarray = X, y: np.ndarray = y) -> bytes:
                    inference_id = f"{m}-{i}"
                    body = {
                        "id": inference_id,
                        "inputs": [
                            {"name": "input", "shape": [1, X.shape[1]], "datatype": "FP64", "data": X[i].tolist()}
                        ],
                    }
                    answer = await client.post(f"/v2/models/{m}/infer", json=body)
                    answer.raise_for_status()
                    return encode_event(
                        AnnotationSubmitted(
                            model=m,
                            record_id=f"t-{i}",
                            features={f"f{k}": v for k, v in enumerate(X[i].tolist())},
                            label=int(y[i]),
                            inference_id=inference_id,
                        )
                    )

                labels = await asyncio.gather(*(one(i) for i in range(args.requests)))
                await asyncio.gather(*[await publisher.enqueue(topics.ANNOTATIONS, v, m.encode()) for v in labels])
                total += len(labels)
        monitor_url = stack.endpoints()["services"]["monitor"]
        deadline = time.monotonic() + args.timeout
        async with httpx.AsyncClient(base_url=monitor_url, timeout=10) as client:
            while time.monotonic() < deadline:
                joined = 0
                for m in names:
                    status = (await client.get(f"/v1/models/{m}/status")).json()
                    joined += int(status.get("join", {}).get("hits", 0))
                figures.joined = joined
                if joined >= total:
                    break
                await asyncio.sleep(1.0)
    finally:
        await publisher.stop()
    spent = cpu_seconds(monitor.process.pid) - before - idle_share * (time.monotonic() - started)
    figures.monitor_cpu_us = 1e6 * max(spent, 0.0) / max(total, 1)


def run_count(count: int, args: argparse.Namespace, console: Console) -> Figures:
    figures = Figures(models=count)
    names = [f"bench-{count}-{i}" for i in range(count)]
    concepts = {
        m: Concept(np.random.default_rng(i).normal(size=args.features), np.random.default_rng(100 + i))
        for i, m in enumerate(names)
    }
    with tempfile.TemporaryDirectory(prefix=f"bench-models-{count}-") as tmp:
        config = StackConfig(data_dir=Path(tmp), ports=dict.fromkeys(DEFAULT_PORTS, 0), log_level="WARNING")
        stack = LocalStack(config)
        try:
            with stack.running():
                store = FileStore(stack.store_root)
                for m in names:
                    apply_spec(store, spec(m, args.features))
                asyncio.run(bulk_load(stack, names, concepts, args, figures))
                asyncio.run(traffic(stack, names, concepts, args, figures))
                figures.rss = {c.name: rss_mb(c.process.pid) for c in stack.children}
        except Exception as err:  # a benchmark reports what broke and goes on
            figures.error = f"{type(err).__name__}: {err}"
            console.print(f"[red]{count} models: {figures.error}[/red]")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--models", default="1,10,30", help="model counts to run (default 1,10,30)")
    parser.add_argument("--features", type=int, default=20, help="numeric features per model (default 20)")
    parser.add_argument(
        "--rows", type=int, default=FLUSH_ROWS, help=f"labelled records per model (default {FLUSH_ROWS:,})"
    )
    parser.add_argument("--requests", type=int, default=300, help="predictions (and labels) per model")
    parser.add_argument("--timeout", type=float, default=600, help="give up a phase after this many seconds")
    args = parser.parse_args(argv)
    console = Console(width=200)
    results = []
    for count in (int(c) for c in args.models.split(",")):
        console.print(f"[bold]{count} model(s)[/bold]: {args.rows:,} records each, then {args.requests} predictions")
        results.append(run_count(count, args, console))
    table = Table(title=f"many models ({args.features} features, flush at {FLUSH_ROWS:,} rows per model)")
    for column in (
        "models",
        "to production median / last (s)",
        "first run rows (min-max)",
        "versions",
        "checks on small batches",
        "monitor CPU per prediction+label (µs)",
        "RSS ingest / trainer / inference / monitor (MB)",
    ):
        table.add_column(column)
    for f in results:
        if f.error:
            table.add_row(str(f.models), f"[red]{f.error}[/red]", "", "", "", "", "")
            continue
        own = all(r == FLUSH_ROWS for r in f.first_run_rows)
        table.add_row(
            str(f.models),
            f"{statistics.median(f.to_production):.1f} / {max(f.to_production):.1f}",
            f"{min(f.first_run_rows):,}-{max(f.first_run_rows):,} {'PASS' if own else 'FAIL'}",
            str(f.versions),
            f"{f.small_checks} {'PASS' if f.small_checks == 0 else 'FAIL'}",
            f"{f.monitor_cpu_us:.0f} ({f.joined:,} joined)",
            " / ".join(f"{f.rss.get(n, float('nan')):.0f}" for n in ("ingest", "trainer", "inference", "monitor")),
        )
    console.print(table)


if __name__ == "__main__":
    main()
