"""Tables through the real broker: ``specs init`` a file, publish its rows, ingest stores them once."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from services.ingest.app import IngestService, IngestSettings
from services.publish import TableColumns, publish_annotations
from shared import topics
from shared.bus import KafkaOptions
from shared.datasets import DatasetRepository
from shared.events import AnnotationSubmitted
from shared.spec import apply_spec, parse_spec
from shared.store import FileStore
from tests.integration.topic_reading import read_keyed

pytestmark = pytest.mark.integration


def loans(n: int, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 5_000.0, n).round(2),
            "city": rng.choice(["Berlin", "Paris", "Rome"], n),
            "member": rng.random(n) < 0.5,
            "score": np.where(rng.random(n) < 0.1, np.nan, rng.normal(0, 1, n)),
            "reviewer": rng.choice(["ann", "bob"], n),
            "outcome": rng.choice(["bad", "good"], n),
        }
    )


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


async def wait_rows(repo: DatasetRepository, model: str, rows: int, timeout: float = 30) -> int:
    async with asyncio.timeout(timeout):
        while True:
            version = repo.latest_version(model)
            total = repo.manifest(model, version).rows_total if version is not None else 0
            if total >= rows:
                return total
            await asyncio.sleep(0.05)


async def test_a_csv_is_published_checked_and_stored_once(options: KafkaOptions, store: FileStore, unique: str) -> None:
    model = f"loans{unique}"
    path = store.root.parent / "loans.csv"
    frame = loans(500)
    frame.to_csv(path, index=False)
    lines = path.read_text().splitlines()
    lines[10] = lines[10].replace(lines[10].split(",")[0], "lots", 1)  # row 10: a bad number, reported
    lines[20] = ",".join([lines[20].split(",")[0], "Oslo", *lines[20].split(",")[2:]])  # row 20: sent, rejected
    path.write_text("\n".join(lines) + "\n")
    spec, _ = apply_spec(
        store,
        f"""
name: {model}
features:
  - {{name: amount, min: 0}}
  - {{name: city, type: categorical, values: [Berlin, Paris, Rome]}}
  - {{name: member, type: boolean}}
  - {{name: score, allow_missing: true}}
label: {{values: [bad, good]}}
""",
    )
    settings = IngestSettings(
        kafka_bootstrap=options.bootstrap,
        kafka_idempotence=False,
        store_kind="file",
        store_root=store.root,
        port=0,
        flush_interval_s=0.3,
        spec_refresh_s=0.2,
        group_id=f"g-{unique}",
    )
    service = IngestService(settings)
    task = asyncio.create_task(service.run())
    repo = DatasetRepository(store)
    columns = TableColumns(label="outcome", annotator="reviewer", given=frozenset({"label", "annotator"}))
    quiet = Console(file=io.StringIO(), width=120)
    try:
        report = await publish_annotations(options, path, model, spec=spec, columns=columns, console=quiet)
        assert (report["rows"], report["sent"], report["invalid_rows"]) == (500, 499, 1)
        assert report["errors"] == ["row 10: amount: 'lots' is not a number"]
        assert report["columns"]["annotator"] == "reviewer" and report["ignored_columns"] == []
        assert "sent 499 of 500 rows to annotations (1 invalid, not sent)" in quiet.file.getvalue()  # type: ignore[attr-defined]
        assert await wait_rows(repo, model, 498) == 498, "the row naming Oslo is rejected by ingest's category rule"

        again = await publish_annotations(options, path, model, spec=spec, columns=columns, console=quiet)
        assert again["sent"] == 499
        (store.root.parent / "fresh.csv").write_text("\n".join([lines[0], lines[1]]) + "\n")
        await publish_annotations(
            options, store.root.parent / "fresh.csv", model, spec=spec, columns=columns, console=quiet
        )
        assert await wait_rows(repo, model, 499) == 499, "the re-published rows are deduplicated by their derived ids"
    finally:
        service.stop()
        await asyncio.wait_for(task, 20)
    data = repo.load(model)
    assert "loans.csv#1" in data.record_ids.tolist() and "fresh.csv#1" in data.record_ids.tolist()
    assert "loans.csv#10" not in data.record_ids.tolist() and "loans.csv#20" not in data.record_ids.tolist()


async def test_specs_init_apply_and_publish_a_parquet_file_through_the_cli(
    options: KafkaOptions, tmp_path: Path, unique: str
) -> None:
    model = f"history{unique}"
    path = tmp_path / "history.parquet"
    frame = loans(300, seed=5)
    frame.insert(0, "ticket", [f"t-{i}" for i in range(300)])
    frame.to_parquet(path, index=False)
    env = {"DRIFTLOOP_KAFKA_BOOTSTRAP": options.bootstrap, "DRIFTLOOP_KAFKA_IDEMPOTENCE": "false"}
    data_dir = ["--data-dir", str(tmp_path / "stack")]
    spec_file = tmp_path / "history.yaml"
    init = cli(
        "specs",
        "init",
        str(path),
        "--label",
        "outcome",
        "--id",
        "ticket",
        "--name",
        model,
        "-o",
        str(spec_file),
        env=env,
    )
    assert init.returncode == 0, init.stderr
    assert f"--model {model} --label outcome --id ticket" in spec_file.read_text()
    applied = cli("specs", "apply", str(spec_file), *data_dir, env=env)
    assert applied.returncode == 0, applied.stderr
    spec = parse_spec(spec_file.read_text())
    assert spec.feature_names == ["amount", "city", "member", "score", "reviewer"]

    published = cli(
        "publish", "annotations", str(path), "--model", model, "--label", "outcome", "--id", "ticket", "--json",
        *data_dir, env=env,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    report = json.loads(published.stdout)
    assert (report["format"], report["rows"], report["sent"], report["invalid_rows"]) == ("parquet", 300, 300, 0)
    assert report["columns"]["record_id"] == "ticket" and report["columns"]["confidence"] is None
    assert "sent 300 of 300 rows" in published.stderr

    events = [
        AnnotationSubmitted.model_validate_json(v) for v in await read_keyed(options, topics.ANNOTATIONS, model, 300)
    ]
    by_id = {e.record_id: e for e in events}
    first = frame.iloc[0]
    assert by_id["t-0"].features == {
        "amount": first["amount"],
        "city": first["city"],
        "member": bool(first["member"]),
        "score": None if np.isnan(first["score"]) else first["score"],
        "reviewer": first["reviewer"],
    }
    assert by_id["t-0"].label == first["outcome"] and by_id["t-0"].confidence == 1.0

    missing = cli("publish", "annotations", str(path), "--model", "nobody", *data_dir, env=env)
    assert missing.returncode == 1 and "no spec is applied for model 'nobody'" in missing.stderr
    unmapped = cli("publish", "annotations", str(path), "--model", model, *data_dir, env=env)
    assert unmapped.returncode == 1 and "no label column 'label': name it with --label COLUMN" in unmapped.stderr
