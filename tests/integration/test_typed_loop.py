"""The closed loop on a real table: string categories, flags and missing values, three classes.

The loan-tiers scenario goes through the embedded stack as the numeric one does: annotations
with typed values (and the mistakes an upstream makes, rejected by rule), a first model
trained on typed Parquet columns and exported as one ONNX graph with a string input per
category, served over the Open Inference Protocol with BYTES and BOOL tensors, and then a
shift in who applies plus a changed approval rule — detected, retrained on, canaried and
promoted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from services.demo import LOAN_TIERS, TIERS, DemoPlan, run_loop
from services.inference.runtime import load_version
from services.stack import LocalStack, StackConfig
from shared.datasets import DatasetRepository
from shared.features import onnx_feeds
from shared.registry import Registry
from shared.store import FileStore

pytestmark = pytest.mark.integration


def accuracy_on_new_regime(store: FileStore, version: int) -> float:
    samples = LOAN_TIERS.after(3000, 99)
    columns = {name: [x.get(name) for x, _ in samples] for name in LOAN_TIERS.features}
    loaded = load_version(Registry(store), LOAN_TIERS.model, version)
    labels, _ = loaded.session.run(
        ["label", "probabilities"], onnx_feeds(LOAN_TIERS.features, LOAN_TIERS.types, columns)
    )
    truth = np.array([label for _, label in samples])
    return float(np.mean(np.asarray(labels).astype(str) == truth))


@pytest.mark.timeout(480)  # the loop runs in wall-clock time; on a loaded 2-core CI machine it takes minutes
def test_a_typed_multiclass_table_runs_the_whole_loop(tmp_path: Path) -> None:
    ports = {"kafka": 0, "inference": 0, "ingest": 0, "monitor": 0, "trainer": 0}
    config = StackConfig(
        data_dir=tmp_path, ports=ports, log_level="WARNING", service_env={"DRIFTLOOP_FLUSH_ROWS": "500"}
    )
    plan = DemoPlan(
        scenario=LOAN_TIERS, bootstrap=1500, before_drift=1500, after_promotion=500, max_after_drift=12000, rate=400
    )
    stack = LocalStack(config)
    with stack.running():
        bootstrap, result, served, timeline = asyncio.run(run_loop(stack, Console(quiet=True), plan))

    assert bootstrap["_ok"], repr(bootstrap)
    rejected = bootstrap["rejected by rule"]
    assert {"type", "category", "range", "label", "missing", "min_confidence"} <= set(rejected), rejected

    store = FileStore(tmp_path / "store")
    manifest = DatasetRepository(store).manifest(LOAN_TIERS.model)
    assert manifest.feature_types == list(LOAN_TIERS.types) and manifest.categories["education"]
    first = Registry(store).card(LOAN_TIERS.model, 1)
    assert first.input_schema.layout == "columns" and sorted(map(str, first.input_schema.label_values)) == sorted(TIERS)
    assert set(first.input_schema.categories["education"]) <= {"none", "high-school", "bachelor", "master", "doctorate"}

    kinds = [(e.kind, e.version) for e in timeline]
    drift = next(i for i, e in enumerate(timeline) if e.kind == "drift")
    assert timeline[drift].index >= plan.before_drift, f"no alarm before the change: {kinds}"
    categorical = [
        e.text for e in timeline if e.kind == "drift" and ("on education" in e.text or "on zipcode" in e.text)
    ]
    assert categorical, f"the shift in who applies is seen in the category shares: {kinds}"
    promoted = next((i for i, e in enumerate(timeline) if e.kind == "promoted" and e.version != 1), None)
    assert promoted is not None, "\n".join(f"{e.index} {e.kind} {e.text}" for e in timeline)
    assert drift < promoted, kinds
    assert result.retrains_before_drift == 0 and result.alarms_before_drift == 0
    assert result.new_champion is not None and len(served) >= plan.before_drift + 500

    champion = Registry(store).alias(LOAN_TIERS.model, "production")
    assert champion is not None and champion != 1
    before, after = accuracy_on_new_regime(store, 1), accuracy_on_new_regime(store, champion)
    assert after > before + 0.05, f"the new champion v{champion} ({after:.3f}) beats v1 ({before:.3f}) after the change"
