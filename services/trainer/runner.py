"""One training run, start to finish: load the window, fit, export, check, score, gate, register.

Synchronous and blocking (scikit-learn, skl2onnx, the object store): the service runs it in a
worker thread, the CLI (``driftloop models train``) calls it directly. It publishes nothing;
it returns a :class:`RunResult` the caller turns into events.

An all-numeric spec trains as it always did (a matrix in, one ``input`` tensor in the graph); a
spec with categorical or boolean features trains one pipeline on the dataset's typed columns,
exports a graph with one input per feature, and checks parity on the holdout plus probes of
unseen categories and missing values. The champion is scored on the same holdout, fed in its
own card's layout, when its features, their types and its task are the spec's.

A regression spec (``label: {type: regression}``) trains the same way on float targets: its
graph answers ``prediction``, its metrics are ``mae`` / ``rmse`` / ``r2``
(:func:`services.trainer.core.evaluate_regression`), its expected error is the holdout's miss
threshold and rate (:meth:`shared.reference.ExpectedError.of_errors`) and its reference holds
the histogram of its predicted values.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.trainer import core
from services.trainer.estimators import build_estimator, build_typed_estimator, empty_features, one_hot_categories
from services.trainer.export import TypedColumns, check_parity, run_graph, to_onnx
from shared import __version__
from shared.datasets import DatasetRepository, manifest_key
from shared.errors import BrokerUnavailable, DriftloopError, InvalidInput, StoreError
from shared.events import GateVerdict
from shared.features import CATEGORICAL, COLUMNS, MISSING_CATEGORY, TaskKind
from shared.reference import (
    ExpectedError,
    PredictionReference,
    build_reference,
    build_typed_reference,
    prediction_reference,
    regression_prediction_reference,
)
from shared.registry import PRODUCTION, CodeVersion, InputSchema, ModelCard, Registry
from shared.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run produced. ``card`` is None when the run failed before registering."""

    model: str
    run_id: str
    trigger: str
    trigger_event_id: str | None
    dataset_version: int
    card: ModelCard | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    champion_version: int | None = None
    champion_metrics: dict[str, float] | None = None
    gate: GateVerdict = field(default_factory=lambda: GateVerdict(passed=False, reasons=[]))
    error: str | None = None
    transient: bool = False
    """The run failed for a reason that may pass (store or broker down): its triggers are retried."""
    timings: dict[str, float] = field(default_factory=dict)
    since: datetime | None = None
    """The change point the window started at (None: the plain ``last_rows`` window)."""
    window_rows: int | None = None
    """Rows in the window (training and holdout), once loaded."""

    @property
    def passed(self) -> bool:
        """True when a registered candidate passed the gate."""
        return self.card is not None and self.gate.passed and self.error is None


def git_commit() -> str | None:
    """The source checkout's commit, when driftloop runs from one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def predict_onnx(onnx: bytes, X: NDArray[np.float64] | TypedColumns) -> tuple[NDArray[Any], NDArray[np.float32]]:
    """Labels and class probabilities from an ONNX model, as serving computes them; for a
    regressor's graph its predictions (float64 ``[N]``) and an empty ``[N, 0]`` probability
    matrix (:func:`services.trainer.export.run_graph`), so every caller unpacks one shape.

    ``X`` is a matrix for a graph of the ``matrix`` layout, :class:`TypedColumns` for one of
    the ``columns`` layout (one input per feature).
    """
    return run_graph(onnx, X)


Rows = NDArray[np.float64] | TypedColumns
"""A model's input rows: a matrix (all-numeric spec) or typed columns."""


def rows_for(layout: str, names: Sequence[str], rows: Rows) -> Rows:
    """``rows`` in the form a graph of ``layout`` takes (a card's ``input_schema.layout``)."""
    if layout == COLUMNS:
        return rows if isinstance(rows, TypedColumns) else TypedColumns.of_matrix(names, rows)
    return rows.matrix() if isinstance(rows, TypedColumns) else rows


def fit_pipeline(spec: ModelSpec, rows: Rows, y: NDArray[Any]) -> tuple[Any, dict[str, list[str]]]:
    """The spec's pipeline fitted on ``rows``, and each categorical feature's training categories.

    An all-numeric spec fits its estimator (with its scaler) on the matrix, as before features
    had types; a typed spec fits one pipeline on the training frame, its one-hot categories
    taken from these rows. The categories (sorted, missing excluded) are what the card records.
    """
    training = spec.training
    if not isinstance(rows, TypedColumns):
        return build_estimator(training.estimator, training.params, training.seed).fit(rows, y), {}
    frame = rows.frame()
    names, types = rows.names, rows.types
    encoded = one_hot_categories(frame, names, types)
    empty = empty_features(frame, names, types)
    pipeline = build_typed_estimator(training.estimator, training.params, training.seed, names, types, encoded, empty)
    pipeline.fit(frame, y)
    categories = {
        name: sorted(set(frame[name]) - {MISSING_CATEGORY})
        for name, kind in zip(names, types, strict=True)
        if kind == CATEGORICAL
    }
    return pipeline, categories


def find_run(registry: Registry, model: str, run_id: str) -> ModelCard | None:
    """The version a run registered before a crash, so a re-run does not register it twice."""
    for version in reversed(registry.versions(model)):
        card = registry.card(model, version)
        if card.window.get("run_id") == run_id:
            return card
    return None


def train(
    spec: ModelSpec,
    repo: DatasetRepository,
    registry: Registry,
    dataset_version: int,
    run_id: str,
    trigger: str,
    trigger_event_id: str | None,
    since: datetime | None = None,
) -> RunResult:
    """Run one training and register the candidate (passed or not). Never raises for a failed run.

    With ``since`` (a drift's change point), the window holds only the rows recorded at or
    after it — the newest ``last_rows`` of them — so the holdout, and with it the champion's
    score, come from the new regime alone.
    """
    model = spec.name
    result = RunResult(model, run_id, trigger, trigger_event_id, dataset_version, since=since)
    try:
        existing = find_run(registry, model, run_id)
        if existing is not None:  # the run finished before a crash: report it, do not register twice
            log.info("%s: run %s already registered version %d", model, run_id, existing.version)
            return _from_card(result, existing)
        _train(spec, repo, registry, result)
    except (StoreError, BrokerUnavailable, OSError) as err:
        result.error = str(err)
        result.transient = True
    except DriftloopError as err:
        result.error = err.message
    except Exception as err:  # a failed run is reported, not raised: the trigger is recorded in the event
        log.exception("%s: training run %s failed", model, run_id)
        result.error = f"{type(err).__name__}: {err}"
    if result.error:
        result.gate = GateVerdict(passed=False, reasons=[f"run failed: {result.error}"])
    return result


def _from_card(result: RunResult, card: ModelCard) -> RunResult:
    result.card = card
    result.window_rows = card.window.get("rows")
    result.metrics = card.metrics
    result.champion_version = card.champion_version
    result.champion_metrics = card.champion_metrics
    result.gate = card.gate
    return result


def _train(spec: ModelSpec, repo: DatasetRepository, registry: Registry, result: RunResult) -> None:
    model = spec.name
    training = spec.training
    started = time.perf_counter()
    manifest_bytes = repo.store.get(manifest_key(model, result.dataset_version))
    manifest = repo.manifest(model, result.dataset_version)
    if manifest.features != spec.feature_names:
        raise InvalidInput(
            f"dataset v{manifest.version} has features {manifest.features}, the spec {spec.feature_names}: "
            "wait for data on the new schema"
        )
    if list(manifest.feature_types) != spec.feature_types:
        raise InvalidInput(
            f"dataset v{manifest.version} has feature types {manifest.feature_types}, the spec "
            f"{spec.feature_types}: wait for data on the new schema"
        )
    if bool(manifest.label_values) == spec.regression:  # a regression dataset has no classes
        held = f"the classes {manifest.label_values}" if manifest.label_values else "a number per row"
        raise InvalidInput(
            f"dataset v{manifest.version} holds {held}, the spec is a {spec.label.type} one: "
            "wait for data on the new schema"
        )
    data = repo.load(model, result.dataset_version, last_rows=training.window.last_rows, since=result.since)
    result.window_rows = int(len(data.y))
    train_rows, test_rows = core.time_split(len(data.y), training.holdout)
    task = spec.label.type
    y = core.regression_targets(data.y) if spec.regression else data.y
    y_train, y_test = y[train_rows], y[test_rows]
    core.check_training_targets(y_train, spec.regression)
    names, types = spec.feature_names, spec.feature_types
    train_in: Rows
    test_in: Rows
    if spec.typed:
        rows = TypedColumns.of(names, types, data.columns)
        train_in, test_in = rows.take(train_rows), rows.take(test_rows)
    else:
        train_in, test_in = data.X[train_rows], data.X[test_rows]
    result.timings["load_s"] = time.perf_counter() - started

    fit_started = time.perf_counter()
    pipeline, categories = fit_pipeline(spec, train_in, y_train)
    result.timings["fit_s"] = time.perf_counter() - fit_started

    export_started = time.perf_counter()
    onnx, opset = to_onnx(pipeline, names, types) if spec.typed else to_onnx(pipeline, len(names))
    result.timings["export_s"] = time.perf_counter() - export_started
    probed = test_in.with_probes(seed=training.seed) if isinstance(test_in, TypedColumns) else test_in
    parity = check_parity(onnx, pipeline, probed)
    if not parity.passed:
        raise InvalidInput(f"ONNX parity check failed: {parity.reason}")

    classes = [] if spec.regression else [c.item() if isinstance(c, np.generic) else c for c in pipeline.classes_]
    y_pred, proba = predict_onnx(onnx, test_in)
    result.metrics = core.evaluate_task(task, y_test, y_pred, proba, classes)

    champion = registry.alias(model, PRODUCTION)
    champion_sha = None
    if champion is not None:
        champion_card = registry.card(model, champion)
        champion_sha = champion_card.artifact_sha256
        if _same_inputs(champion_card, names, types, task):
            result.champion_version = champion
            result.champion_metrics = score_version(registry, champion_card, test_in, y_test).metrics
        else:
            log.warning(
                "%s: champion v%d has other features, feature types or task; the gate judges the candidate alone",
                model,
                champion,
            )
    reused: Scored | None = None
    if result.since is not None:  # the new regime alone: it may be one seen before (A -> B -> A)
        reused = _reusable(spec, registry, test_in, y_test, result.metrics, skip={champion_sha})
    fresh = result.metrics
    if reused is not None:
        log.info(
            "%s: v%d scores %s %.4f on the post-change holdout against %.4f for a fresh fit: registering it again",
            model,
            reused.card.version,
            spec.gate.metric,
            reused.metrics[spec.gate.metric],
            result.metrics[spec.gate.metric],
        )
        # loaded again rather than kept from scoring: only the chosen graph is held in memory
        onnx, opset, classes = registry.load_onnx(model, reused.card.version), reused.card.onnx_opset, reused.classes
        y_pred, proba, result.metrics = reused.labels, reused.proba, reused.metrics
    result.gate = core.gate(spec.gate, result.metrics, result.champion_metrics)
    if reused is not None:
        note = f"reused v{reused.card.version}'s graph: {spec.gate.metric} {reused.metrics[spec.gate.metric]:.4f} "
        note += f"on the post-change holdout, {fresh[spec.gate.metric]:.4f} for a fresh fit"
        result.gate = GateVerdict(passed=result.gate.passed, reasons=[note, *result.gate.reasons])
    expected: ExpectedError | None
    predictions: PredictionReference
    if spec.regression:  # the monitor's misses: errors above the holdout's 80th percentile
        expected = ExpectedError.of_errors(np.abs(np.asarray(y_test, dtype=np.float64) - y_pred))
        predictions = regression_prediction_reference(y_pred)
    else:
        expected = ExpectedError.of(result.metrics["accuracy"], len(y_test)) if "accuracy" in result.metrics else None
        predictions = prediction_reference(y_pred, proba, classes)
    if isinstance(train_in, TypedColumns):
        ref = build_typed_reference(train_in.columns, names, types, expected_error=expected, predictions=predictions)
    else:
        ref = build_reference(train_in, names, expected_error=expected, predictions=predictions)
    result.timings["total_s"] = time.perf_counter() - started

    def build_card(version: int, artifact_key: str, sha256: str) -> ModelCard:
        return ModelCard(
            model=model,
            version=version,
            dataset_version=result.dataset_version,
            dataset_manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
            window={
                "run_id": result.run_id,
                "last_rows": training.window.last_rows,
                "rows": int(len(data.y)),
                "first_record_id": str(data.record_ids[0]) if len(data.record_ids) else None,
                "since_change": training.window.since_change,
                "change_at": result.since.isoformat() if result.since is not None else None,
            },
            code=CodeVersion(package=__version__, git_commit=git_commit()),
            estimator=reused.card.estimator if reused else training.estimator,
            params=dict(reused.card.params if reused else training.params),
            seed=reused.card.seed if reused else training.seed,
            training_rows=reused.card.training_rows if reused else int(len(y_train)),
            holdout_rows=int(len(y_test)),
            metrics=result.metrics,
            champion_version=result.champion_version,
            champion_metrics=result.champion_metrics,
            gate=result.gate,
            onnx_opset=opset,
            input_schema=reused.card.input_schema if reused else _input_schema(spec, classes, categories),
            output_names=list(reused.card.output_names) if reused else list(spec.outputs),
            artifact_key=artifact_key,
            artifact_sha256=sha256,
            artifact_bytes=len(onnx),
            training_seconds=round(result.timings["total_s"], 3),
            reference=ref,
            trigger=result.trigger,
            trigger_event_id=result.trigger_event_id,
            reused_from=reused.card.version if reused else None,
        )

    result.card = registry.register(model, onnx, build_card)


def _same_inputs(card: ModelCard, names: Sequence[str], types: Sequence[str], task: TaskKind) -> bool:
    """True when a version takes the spec's features with their types and answers the spec's
    task (it can be scored on the holdout: a classifier's accuracy means nothing beside a
    regressor's MAE, so after a spec changed task the candidate is judged alone)."""
    schema = card.input_schema
    return schema.features == list(names) and schema.feature_types == list(types) and schema.task == task


@dataclass(frozen=True)
class Scored:
    """A registered version's predictions and metrics on a run's holdout (a regressor's
    ``labels`` are its predicted numbers, ``proba`` is ``[N, 0]`` and ``classes`` empty)."""

    card: ModelCard
    labels: NDArray[Any]
    proba: NDArray[np.float32]
    classes: list[Any]
    metrics: dict[str, float]


def score_version(registry: Registry, card: ModelCard, test_in: Rows, y_test: NDArray[Any]) -> Scored:
    """``card``'s version on the holdout, fed in its own card's layout, scored as its task is."""
    schema = card.input_schema
    rows = rows_for(schema.layout, schema.features, test_in)
    labels, proba = predict_onnx(registry.load_onnx(card.model, card.version), rows)
    classes = [] if schema.task == "regression" else _classes_of(card, proba.shape[1])
    return Scored(card, labels, proba, classes, core.evaluate_task(schema.task, y_test, labels, proba, classes))


def _reusable(
    spec: ModelSpec,
    registry: Registry,
    test_in: Rows,
    y_test: NDArray[Any],
    fresh: dict[str, float],
    skip: set[str | None],
) -> Scored | None:
    """An earlier version that beats the fresh fit on the post-change holdout (:func:`core.choose_reuse`).

    Scored: the newest :data:`core.REUSE_LOOKBACK` distinct graphs that passed their gate and
    take the spec's features, other than the champion's (``skip`` holds artifact digests).
    """
    seen = set(skip)
    scored: list[Scored] = []
    for version in reversed(registry.versions(spec.name)):
        if len(scored) >= core.REUSE_LOOKBACK:
            break
        card = registry.card(spec.name, version)
        if card.artifact_sha256 in seen or not card.gate.passed:
            continue
        seen.add(card.artifact_sha256)
        if _same_inputs(card, spec.feature_names, spec.feature_types, spec.label.type):
            scored.append(score_version(registry, card, test_in, y_test))
    chosen = core.choose_reuse(
        fresh,
        [(s.card.version, s.metrics) for s in scored],
        spec.gate.metric,
        spec.gate.min_delta_vs_champion,
    )
    return next((s for s in scored if s.card.version == chosen), None)


def _input_schema(spec: ModelSpec, classes: list[Any], categories: dict[str, list[str]]) -> InputSchema:
    """What the version takes and answers: an all-numeric classifier's card stays as it was before
    features had types; a regressor's says ``task="regression"`` and has no label values."""
    if not spec.typed:
        return InputSchema(features=spec.feature_names, dtype="float32", label_values=classes, task=spec.label.type)
    return InputSchema(
        features=spec.feature_names,
        dtype="float32",
        label_values=classes,
        types=[f.type for f in spec.features],
        layout="columns",
        categories=categories,
        task=spec.label.type,
    )


def _classes_of(card: ModelCard, n: int) -> list[Any]:
    labels = list(card.input_schema.label_values)
    return labels if len(labels) == n else list(range(n))
