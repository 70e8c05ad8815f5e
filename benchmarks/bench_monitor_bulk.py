"""What a bulk load of training data costs the monitor: CPU while 400,000 annotations stream by.

Most of ``annotations`` can be labelled history without an ``inference_id`` (a team loading its
training data): the monitor can never join those and must not pay for them. An embedded broker
and one monitor process (``driftloop serve monitor``, as the local stack runs it, its own
process so its CPU is its own) start; a spec is applied; after the monitor has settled, ``--rows``
annotations of ``--features`` numeric features and no ``inference_id`` are published at
``--rate`` records/s -- ingest's own target rate, as fast as a load can be stored -- and the
monitor's CPU time (``/proc/<pid>/stat``) is read from the first record published until its
consumer group has committed the last one. The figures are that CPU time over the load's wall
time (percent of one core), the monitor's idle share (measured for 5 s before: faust's and the
checkpoints' background work, there with or without a load), and the difference -- what the load
itself costs, which the target is about -- with the CPU per record.

Target (issue #23): < 10 % of one core while the load lasts.

    .venv/bin/python benchmarks/bench_monitor_bulk.py                         # about a minute
    .venv/bin/python benchmarks/bench_monitor_bulk.py --rows 100000 --features 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared import topics
from shared.broker import EmbeddedBroker
from shared.bus import KafkaOptions, Publisher, all_topics_with_dlq, ensure_topics
from shared.events import AnnotationSubmitted, encode_event
from shared.spec import apply_spec
from shared.store import FileStore

MODEL = "bench"
TARGET_SHARE = 0.10
GROUP = "driftloop-monitor-ground-truth"
"""The consumer group that reads ``annotations`` for the monitor (its ground-truth filter)."""
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def payloads(rows: int, features: int, seed: int = 0) -> list[bytes]:
    """Labelled history: annotations with features and a label, no inference id."""
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(features)]
    X = rng.normal(size=(rows, features)).round(4).tolist()
    return [
        encode_event(
            AnnotationSubmitted(
                model=MODEL, record_id=f"h-{i}", features=dict(zip(names, row, strict=True)), label=i % 2
            )
        )
        for i, row in enumerate(X)
    ]


async def committed(options: KafkaOptions, partitions: int) -> int:
    """Annotations the monitor's consumer group has committed, over every partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=options.bootstrap, group_id=GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for p in range(partitions):
            offset = await consumer.committed(TopicPartition(topics.ANNOTATIONS, p))
            total += offset or 0
        return total
    finally:
        await consumer.stop()


async def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the monitor exited with {process.returncode}")
            try:
                if (await client.get(f"{url}/health/ready", timeout=1)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.25)
    raise TimeoutError("the monitor did not become ready")


async def run(args: argparse.Namespace, workdir: Path) -> None:
    broker = EmbeddedBroker(log_path=workdir / "tansu.log")
    broker.start()
    process: subprocess.Popen[bytes] | None = None
    try:
        options = KafkaOptions(bootstrap=broker.bootstrap, idempotence=False)
        await ensure_topics(options, all_topics_with_dlq(), partitions=args.partitions)
        store = FileStore(workdir / "store")
        names = ", ".join(f"{{name: f{i}}}" for i in range(args.features))
        apply_spec(store, f"name: {MODEL}\nfeatures: [{names}]\nlabel: {{values: [0, 1]}}\n")
        data = payloads(args.rows, args.features)
        port = 18_000 + os.getpid() % 1000
        env = dict(os.environ)
        env.update(
            DRIFTLOOP_DATA_DIR=str(workdir / "data"),
            DRIFTLOOP_KAFKA_BOOTSTRAP=broker.bootstrap,
            DRIFTLOOP_KAFKA_IDEMPOTENCE="false",
            DRIFTLOOP_KAFKA_PARTITIONS=str(args.partitions),
            DRIFTLOOP_STORE_KIND="file",
            DRIFTLOOP_STORE_ROOT=str(store.root),
            DRIFTLOOP_PORT=str(port),
            DRIFTLOOP_LOG_LEVEL="WARNING",
        )
        with open(workdir / "monitor.log", "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", "monitor"], env=env, stdout=out, stderr=out
            )
        await wait_ready(f"http://127.0.0.1:{port}", process)
        await asyncio.sleep(3.0)  # past the start-up work
        idle_from, idle_cpu = time.perf_counter(), cpu_seconds(process.pid)
        await asyncio.sleep(5.0)
        idle_share = (cpu_seconds(process.pid) - idle_cpu) / (time.perf_counter() - idle_from)

        publisher = Publisher(options)
        await publisher.start(max_wait_s=10)
        start_cpu, started = cpu_seconds(process.pid), time.perf_counter()
        chunk = max(1, args.rate // 20)  # 20 paced sends a second
        for i in range(0, len(data), chunk):
            futures = [await publisher.enqueue(topics.ANNOTATIONS, v, MODEL.encode()) for v in data[i : i + chunk]]
            await asyncio.gather(*futures)
            due = started + (i + chunk) / args.rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        published = time.perf_counter() - started
        await publisher.stop()
        deadline = time.monotonic() + args.timeout
        while await committed(options, args.partitions) < args.rows:
            if time.monotonic() > deadline:
                raise TimeoutError("the monitor did not commit the load in time")
            await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - started
        spent = cpu_seconds(process.pid) - start_cpu
        share = spent / elapsed
        load_share = share - idle_share  # what the load itself costs: the monitor idles at idle_share without it
        print(
            f"{args.rows:,} annotations x {args.features} features without inference ids, published at "
            f"{args.rows / published:,.0f}/s over {published:.1f} s; the monitor committed them all after "
            f"{elapsed:.1f} s"
        )
        print(
            f"monitor CPU during the load: {spent:.2f} s = {100 * share:.1f} % of one core, of which "
            f"{100 * idle_share:.1f} % it spends idle too; the load's own cost {100 * load_share:.1f} % "
            f"({1e6 * (spent - idle_share * elapsed) / args.rows:.1f} µs per record); "
            f"target < {100 * TARGET_SHARE:.0f} %: {'PASS' if load_share < TARGET_SHARE else 'FAIL'}"
        )
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        broker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=400_000, help="annotations in the load (default 400,000)")
    parser.add_argument("--features", type=int, default=20, help="numeric features per annotation (default 20)")
    parser.add_argument("--rate", type=int, default=20_000, help="records published per second (default 20,000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (default 4)")
    parser.add_argument("--timeout", type=float, default=300, help="give up after this many seconds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-monitor-bulk-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
