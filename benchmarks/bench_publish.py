"""``publish annotations`` throughput on a Parquet file, and its memory.

A table of N rows (8 numeric features, one with gaps, 2 categorical, 1 boolean, a class label,
a record id) is written to Parquet in a child process, so writing it does not count in the
publisher's memory. The publisher then streams it to the ``annotations`` topic of a fresh
embedded broker: read in record batches, cells converted to the spec's types, one
AnnotationSubmitted per row, confirmed by the broker. Timed from the first read to the last
acknowledgement; peak RSS (``ru_maxrss``) is taken after a run of N / 10 rows, after the run of
N rows and after the same N rows again: flat memory means it stops growing with the rows read
(the first run warms the allocator's pools; the second must add about nothing).
Target (issue #21): >= 20,000 records/s on 1,000,000 rows.

    .venv/bin/python benchmarks/bench_publish.py [N]
"""

from __future__ import annotations

import asyncio
import io
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from services.publish import TableColumns, publish_annotations
from shared import topics
from shared.broker import EmbeddedBroker
from shared.bus import KafkaOptions, ensure_topics
from shared.spec import parse_spec

TARGET = 20_000
SPEC = parse_spec(
    """
name: bench-publish
features:
  - {name: income, min: 0}
  - {name: age, min: 0}
  - {name: n2}
  - {name: n3}
  - {name: n4}
  - {name: n5}
  - {name: n6}
  - {name: n7, allow_missing: true}
  - {name: city, type: categorical}
  - {name: segment, type: categorical, values: [retail, private, business]}
  - {name: member, type: boolean}
label: {values: [bad, good]}
"""
)
WRITE_BATCH = 100_000


def write_table(path: Path, rows: int) -> None:
    """The benchmark's Parquet file, written in row groups (run in a child process)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(21)
    cities = np.array([f"city-{i}" for i in range(50)])
    writer: pq.ParquetWriter | None = None
    for start in range(0, rows, WRITE_BATCH):
        n = min(WRITE_BATCH, rows - start)
        n7 = rng.normal(0, 1, n)
        columns = {
            "record_id": pa.array([f"r-{i}" for i in range(start, start + n)]),
            "income": rng.gamma(2.0, 20_000.0, n),
            "age": rng.integers(18, 90, n),
            **{f"n{i}": rng.normal(0, 1, n) for i in range(2, 7)},
            "n7": pa.array(n7, mask=rng.random(n) < 0.05),
            "city": cities[rng.integers(0, 50, n)],
            "segment": np.array(["retail", "private", "business"])[rng.integers(0, 3, n)],
            "member": rng.random(n) < 0.4,
            "label": np.where(rng.random(n) < 0.5, "good", "bad"),
        }
        table = pa.table(columns)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def publish(options: KafkaOptions, path: Path) -> tuple[int, float]:
    quiet = Console(file=io.StringIO(), width=100)
    started = time.perf_counter()
    report = await publish_annotations(options, path, SPEC.name, spec=SPEC, columns=TableColumns(), console=quiet)
    elapsed = time.perf_counter() - started
    assert report["invalid_rows"] == 0 and report["sent"] == report["rows"], report
    return report["sent"], elapsed


async def main(n: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        small, big = Path(tmp) / "small.parquet", Path(tmp) / "big.parquet"
        for path, rows in ((small, n // 10), (big, n)):
            subprocess.run([sys.executable, __file__, "--write", str(path), str(rows)], check=True)
        options = KafkaOptions(bootstrap=broker.bootstrap, client_id="bench-publish", idempotence=False)
        await ensure_topics(options, [topics.ANNOTATIONS], partitions=4)
        before = peak_rss_mb()
        sent_small, elapsed_small = await publish(options, small)
        after_small = peak_rss_mb()
        sent, elapsed = await publish(options, big)
        after_big = peak_rss_mb()
        sent_again, elapsed_again = await publish(options, big)
        after_again = peak_rss_mb()
    rate = sent / elapsed
    print(f"publish annotations, Parquet, {sent:,} rows of 11 features (file {big.name}):")
    print(f"  {rate:,.0f} records/s ({elapsed:.1f} s); target >= {TARGET:,}: {'met' if rate >= TARGET else 'MISSED'}")
    print(f"  {sent_small:,} rows first: {sent_small / elapsed_small:,.0f} records/s")
    print(f"  the same {sent_again:,} rows again: {sent_again / elapsed_again:,.0f} records/s")
    print(
        f"  peak RSS: {before:,.0f} MB before, {after_small:,.0f} MB after {sent_small:,} rows, "
        f"{after_big:,.0f} MB after {sent:,} rows, {after_again:,.0f} MB after {sent + sent_again:,} rows"
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--write":
        write_table(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
