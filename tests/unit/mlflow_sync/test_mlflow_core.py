"""The pure mapping of driftloop runs, versions and aliases onto MLflow (services/mlflow_sync/core.py).

Covered: a version's run is a function of its card alone (same card, same run: params, metric
values and timestamps), with the lineage the issue names (params, seed, dataset version and
manifest hash, holdout and champion metrics, gate verdict, trigger); estimator params that
collide with driftloop's names are kept apart; values and names are made acceptable to MLflow;
a failed run is keyed by its event; the alias plan touches only driftloop's aliases and waits
for unmirrored versions; artifact paths of the server's proxy are recognised.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.mlflow_sync import core
from shared.events import GateVerdict, TrainingCompleted
from shared.reference import PredictionReference, Reference
from shared.registry import CodeVersion, InputSchema, ModelCard

CREATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def a_card(version: int = 3, **fields: Any) -> ModelCard:
    values: dict[str, Any] = {
        "model": "credit",
        "version": version,
        "created_at": CREATED,
        "dataset_version": 5,
        "dataset_manifest_sha256": "d" * 64,
        "window": {"run_id": "r-1", "last_rows": 5000, "rows": 400, "since_change": False},
        "code": CodeVersion(package="0.9.0", git_commit="a" * 40),
        "estimator": "LogisticRegression",
        "params": {"C": 0.5, "max_iter": 200},
        "seed": 7,
        "training_rows": 300,
        "holdout_rows": 100,
        "metrics": {"accuracy": 0.91, "f1_macro": 0.9},
        "champion_version": 2,
        "champion_metrics": {"accuracy": 0.85},
        "gate": GateVerdict(passed=True, reasons=["accuracy 0.91 >= 0.7", "+0.06 vs champion"]),
        "onnx_opset": 17,
        "input_schema": InputSchema(features=["x"], label_values=["0", "1"]),
        "output_names": ["label", "probabilities"],
        "artifact_key": f"registry/credit/versions/{version}/model.onnx",
        "artifact_sha256": "e" * 64,
        "artifact_bytes": 10,
        "training_seconds": 2.5,
        "reference": Reference(
            features={}, predictions=PredictionReference(label_distribution={"0": 1.0}, probability_histograms={})
        ),
        "trigger": "drift (concept)",
        "trigger_event_id": str(uuid.UUID(int=1)),
    }
    values.update(fields)
    return ModelCard(**values)


def test_a_versions_run_carries_its_lineage_metrics_and_verdict() -> None:
    run = core.run_of_card(a_card())
    assert run.key == "version-3" and run.version == 3 and run.name == "credit v3" and run.status == "FINISHED"
    assert {k: run.params[k] for k in ("estimator", "seed", "dataset_version", "dataset_manifest_sha256")} == {
        "estimator": "LogisticRegression",
        "seed": "7",
        "dataset_version": "5",
        "dataset_manifest_sha256": "d" * 64,
    }
    assert run.params["trigger"] == "drift (concept)" and run.params["C"] == "0.5" and run.params["max_iter"] == "200"
    assert run.params["window.rows"] == "400" and "window.run_id" not in run.params
    assert run.metrics == {
        "accuracy": 0.91,
        "f1_macro": 0.9,
        "champion_accuracy": 0.85,
        "gate_passed": 1.0,
        "training_seconds": 2.5,
    }
    assert run.tags[core.RUN_KEY_TAG] == "version-3" and run.tags["driftloop.gate"] == "passed"
    assert run.tags["driftloop.gate_reasons"] == "accuracy 0.91 >= 0.7; +0.06 vs champion"
    assert run.tags["driftloop.run_id"] == "r-1" and run.tags["mlflow.source.git.commit"] == "a" * 40
    assert run.ended_ms == core.millis(CREATED) and run.started_ms == run.ended_ms - 2500


def test_the_same_card_always_gives_the_same_run() -> None:
    assert core.run_of_card(a_card()) == core.run_of_card(a_card())
    assert core.run_of_card(a_card(version=4)).key == "version-4"


def test_a_rejected_version_says_so_and_has_no_champion_metrics_when_there_was_none() -> None:
    card = a_card(gate=GateVerdict(passed=False, reasons=["accuracy 0.6 < 0.7"]), champion_metrics=None)
    run = core.run_of_card(card)
    assert run.tags["driftloop.gate"] == "rejected" and run.metrics["gate_passed"] == 0.0
    assert not any(k.startswith("champion_") for k in run.metrics)
    assert run.status == "FINISHED", "a rejected candidate is a finished run: it trained and was judged"


def test_estimator_params_that_share_a_lineage_name_are_kept_apart_and_values_fit_mlflow() -> None:
    params = core.card_params(a_card(params={"seed": 1, "class_weight[0]": None, "long": "x" * 7000, "flag": True}))
    assert params["seed"] == "7" and params["estimator.seed"] == "1"
    assert params["class_weight_0_"] == "None" and params["flag"] == "true"
    assert len(params["long"]) == core.MAX_PARAM_VALUE and params["long"].endswith("…")


def test_non_finite_metrics_are_left_out_since_json_cannot_carry_them() -> None:
    run = core.run_of_card(a_card(metrics={"accuracy": 0.9, "log_loss": float("inf"), "roc_auc": float("nan")}))
    assert "log_loss" not in run.metrics and "roc_auc" not in run.metrics and run.metrics["accuracy"] == 0.9


def failed_event(**fields: Any) -> TrainingCompleted:
    values: dict[str, Any] = {
        "model": "credit",
        "version": None,
        "trigger": "new_labels",
        "dataset_version": 4,
        "metrics": {},
        "gate": GateVerdict(passed=False, reasons=["run failed: ValueError: one class only"]),
        "occurred_at": CREATED,
        "event_id": uuid.UUID(int=9),
    }
    values.update(fields)
    return TrainingCompleted(**values)


def test_a_run_that_failed_before_registering_is_keyed_by_its_event() -> None:
    run = core.run_of_failure(failed_event())
    assert run.key == f"event-{uuid.UUID(int=9)}" and run.status == "FAILED" and run.version is None
    assert run.params == {"dataset_version": "4", "trigger": "new_labels"}
    assert run.tags["driftloop.gate"] == "failed" and "one class only" in run.tags["driftloop.gate_reasons"]
    with pytest.raises(ValueError, match="mirror it from its card"):
        core.run_of_failure(failed_event(version=2))


def test_the_published_verdict_replaces_the_cards_when_it_says_more() -> None:
    event = failed_event(
        version=3, gate=GateVerdict(passed=True, reasons=["ok", "not rolled out: a drift arrived while it ran"])
    )
    tags = core.event_tags(event)
    assert tags["driftloop.gate"] == "passed" and tags["driftloop.gate_reasons"].endswith("while it ran")
    assert tags["driftloop.event_id"] == str(event.event_id)


def test_the_alias_plan_moves_only_driftloops_aliases_to_mirrored_versions() -> None:
    plan = core.plan_aliases(
        wanted={"production": 3, "canary": 4},
        mirrored={1: "1", 2: "2", 3: "3"},
        current={"production": "2", "shadow": "1", "champion": "1"},
    )
    assert plan.set == {"production": "3"}, "canary waits until v4 is mirrored"
    assert plan.delete == ["shadow"], "driftloop cleared shadow; the team's own 'champion' alias stays"
    assert core.plan_aliases({"production": 3}, {3: "3"}, {"production": "3"}) == core.AliasPlan(set={}, delete=[])


def test_artifact_paths_under_the_servers_proxy_are_recognised() -> None:
    assert core.artifact_path("mlflow-artifacts:/7/abc/artifacts") == "7/abc/artifacts"
    assert core.artifact_path("mlflow-artifacts://mlflow:5000/7/abc/artifacts") == "7/abc/artifacts"
    assert core.artifact_path("file:///tmp/mlruns/7/abc/artifacts") is None


def test_params_and_tags_are_sent_in_batches_mlflow_takes() -> None:
    run = core.run_of_card(a_card(params={f"p{i}": i for i in range(150)}))
    chunks = core.batches(run.params)
    assert len(chunks) == 2 and all(len(c) <= core.MAX_PER_BATCH for c in chunks)
    assert {k: v for c in chunks for k, v in c.items()} == run.params
    assert core.batches({}) == [{}]


def test_names_are_cleaned_and_times_are_milliseconds() -> None:
    assert core.clean_key("a:b") == "a_b" and len(core.clean_key("k" * 300)) == core.MAX_KEY
    assert core.millis(CREATED + timedelta(milliseconds=1)) - core.millis(CREATED) == 1
    assert core.run_key(None, "x") == "event-x"
    with pytest.raises(ValueError):
        core.run_key(None, None)
