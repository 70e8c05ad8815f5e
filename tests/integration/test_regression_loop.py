"""Regression through the whole loop: minutes a delivery takes, on a table with a region, a flag
and missing weights.

The delivery scenario goes through the embedded stack as the classification ones do: numeric
labels (and the mistakes an upstream makes with them, rejected by rule), a first regressor
trained on typed Parquet columns and exported as one ONNX graph whose output is ``prediction``,
served over KServe V1 and the Open Inference Protocol, and a change of the relation everywhere —
detected on the error stream, retrained on, canaried and promoted on live MAE.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
from rich.console import Console

from services.demo import DELIVERY_CHANGE, DemoPlan, delivery, run_loop, v2_inputs
from services.inference.runtime import load_version
from services.stack import LocalStack, StackConfig
from shared.datasets import DatasetRepository
from shared.features import onnx_feeds
from shared.registry import Registry
from shared.store import FileStore

pytestmark = pytest.mark.integration


def mae_on_new_regime(store: FileStore, version: int) -> float:
    samples = delivery(2000, 99, changed=True)
    columns = {name: [x.get(name) for x, _ in samples] for name in DELIVERY_CHANGE.features}
    loaded = load_version(Registry(store), DELIVERY_CHANGE.model, version)
    (predicted,) = loaded.session.run(
        ["prediction"], onnx_feeds(DELIVERY_CHANGE.features, DELIVERY_CHANGE.types, columns)
    )
    truth = np.array([y for _, y in samples], dtype=np.float64)
    return float(np.mean(np.abs(np.asarray(predicted, dtype=np.float64).ravel() - truth)))


@pytest.mark.timeout(480)  # the loop runs in wall-clock time; on a loaded 2-core CI machine it takes minutes
def test_a_regression_table_runs_the_whole_loop(tmp_path: Path) -> None:
    ports = {"kafka": 0, "inference": 0, "ingest": 0, "monitor": 0, "trainer": 0}
    config = StackConfig(
        data_dir=tmp_path, ports=ports, log_level="WARNING", service_env={"DRIFTLOOP_FLUSH_ROWS": "500"}
    )
    plan = DemoPlan(
        scenario=DELIVERY_CHANGE,
        bootstrap=1500,
        before_drift=1500,
        after_promotion=500,
        max_after_drift=12000,
        rate=400,
    )
    model = DELIVERY_CHANGE.model
    row, minutes = delivery(1, 5)[0]
    stack = LocalStack(config)
    with stack.running():
        bootstrap, result, served, timeline = asyncio.run(run_loop(stack, Console(quiet=True), plan))
        url = stack.endpoints()["services"]["inference"]
        # one inference id for both: a canary may serve beside the champion, and routing is per id
        same = {"X-Inference-Id": "protocols-agree"}
        instances = {"instances": [row, {**row, "weight_kg": None}]}
        v1 = httpx.post(f"{url}/v1/models/{model}:predict", json=instances, headers=same)
        inputs = {"inputs": v2_inputs(DELIVERY_CHANGE, row)}
        v2 = httpx.post(f"{url}/v2/models/{model}/infer", json=inputs, headers=same)
        metadata = httpx.get(f"{url}/v2/models/{model}").json()

    assert v1.status_code == 200, v1.text
    predictions = v1.json()["predictions"]
    assert len(predictions) == 2 and all(isinstance(p["prediction"], float) for p in predictions), predictions
    assert v2.status_code == 200, v2.text
    (output,) = v2.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("prediction", "FP64", [1])
    assert v1.json()["model_version"] == v2.json()["model_version"], "one inference id, one version"
    assert abs(output["data"][0] - predictions[0]["prediction"]) < 1e-9, "V1 and V2 answer alike"
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [("prediction", "FP64")]

    assert bootstrap["_ok"], repr(bootstrap)
    rejected = bootstrap["rejected by rule"]
    assert {"type", "range", "label", "missing", "min_confidence"} <= set(rejected), rejected

    store = FileStore(tmp_path / "store")
    manifest = DatasetRepository(store).manifest(model)
    assert manifest.feature_types == list(DELIVERY_CHANGE.types) and not manifest.label_counts
    first = Registry(store).card(model, 1)
    assert first.input_schema.task == "regression" and first.output_names == ["prediction"]
    assert {"mae", "rmse", "r2"} <= set(first.metrics) and first.reference.expected_error is not None
    assert first.reference.expected_error.threshold is not None

    kinds = [(e.kind, e.version) for e in timeline]
    story = "\n".join(f"{e.index} {e.kind} {e.text}" for e in timeline)
    drift = next(i for i, e in enumerate(timeline) if e.kind == "drift")
    assert timeline[drift].index >= plan.before_drift, f"no alarm before the change: {kinds}"
    assert any(e.kind == "drift" and "concept" in e.text for e in timeline), story
    assert any(e.kind == "canary_started" and e.version != 1 for e in timeline), story
    promoted = next((i for i, e in enumerate(timeline) if e.kind == "promoted" and e.version != 1), None)
    assert promoted is not None, story
    assert drift < promoted, kinds
    assert not any(e.kind == "rolled_back" for e in timeline), story
    assert result.retrains_before_drift == 0 and result.alarms_before_drift == 0
    assert result.mae_before is not None and result.mae_right_after is not None and result.mae_recovered is not None
    assert result.mae_right_after > 2 * result.mae_before, "the change hurts the model left serving"
    assert result.mae_recovered < 0.6 * result.mae_right_after, f"recovered: {result.rows()}"

    champion = Registry(store).alias(model, "production")
    assert champion is not None and champion != 1
    before, after = mae_on_new_regime(store, 1), mae_on_new_regime(store, champion)
    assert after < 0.5 * before, f"the new champion v{champion} ({after:.2f}) beats v1 ({before:.2f}) after the change"
