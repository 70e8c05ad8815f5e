"""What a driftloop training run and a registered version look like in MLflow: the pure mapping.

The mirror (:mod:`services.mlflow_sync.handlers`) writes what this module computes; nothing here
does I/O, so the mapping is tested with plain values.

Identity, which makes the mirror idempotent:

* **A run** carries the tag ``driftloop.run_key``: ``version-<n>`` for a run that registered
  version ``n`` (a version is registered once, so a redelivered ``TrainingCompleted`` or a run
  resumed after a crash finds the same MLflow run), ``event-<event_id>`` for a run that failed
  before registering anything (it exists only as its event).
* **A model version** carries the tag ``driftloop.version``. MLflow numbers versions itself, 1,
  2, 3 ... in the order they are created; the mirror creates them in driftloop's order, so the
  numbers agree unless driftloop's numbering has a gap (a crash between claim and card), and
  the tag is what maps one to the other.

Everything written for a run is a pure function of the card (or of the event, for a failed
run) -- params, metric values and their timestamps -- so writing it twice writes the same
rows: MLflow accepts a param logged again with the same value and keeps one metric row per
(key, value, timestamp, step).

>>> run_key(3, None), run_key(None, "5f0c")
('version-3', 'event-5f0c')
>>> plan_aliases({"production": 2}, {1: "1", 2: "2"}, {"production": "1", "canary": "2"}).model_dump()
{'set': {'production': '2'}, 'delete': ['canary']}
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from shared.events import DeploymentChanged, TrainingCompleted
from shared.registry import ALIASES, ModelCard

RUN_KEY_TAG = "driftloop.run_key"
"""The tag that names the driftloop run an MLflow run mirrors (see the module docstring)."""
VERSION_TAG = "driftloop.version"
"""The tag that names the driftloop version an MLflow model version mirrors."""
DEPLOYMENT_TAG = "driftloop.last_deployment"
"""The model-version tag that says how the version's last alias move came about."""
ARTIFACTS_TAG = "driftloop.artifacts"
"""Set on a run whose artifacts could not be uploaded, saying why."""
CARD_ARTIFACT = "card.json"
ONNX_ARTIFACT = "model.onnx"

MAX_PARAM_VALUE = 6000
"""MLflow's limit on a param value (``MAX_PARAM_VAL_LENGTH``); longer values are cut."""
MAX_TAG_VALUE = 8000
"""MLflow's limit on a run tag value (``MAX_TAG_VAL_LENGTH``)."""
MAX_KEY = 250
"""MLflow's limit on a param, metric or tag name (``MAX_ENTITY_KEY_LENGTH``)."""
MAX_PER_BATCH = 100
"""Params, and separately tags, one ``runs/log-batch`` call takes (``MAX_PARAMS_TAGS_PER_BATCH``)."""

_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
"""What MLflow refuses in a param, metric or tag name."""
_OWN_PARAMS = (
    "estimator",
    "seed",
    "dataset_version",
    "dataset_manifest_sha256",
    "training_rows",
    "holdout_rows",
    "trigger",
    "champion_version",
    "onnx_opset",
    "code_package",
    "code_git_commit",
    "reused_from",
)
"""Param names of driftloop's lineage; an estimator param of the same name is logged as ``estimator.<name>``."""

RunStatus = Literal["FINISHED", "FAILED"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowRun(_Frozen):
    """One training run as MLflow stores it: what ``runs/create`` and ``runs/log-batch`` send."""

    key: str
    """The ``driftloop.run_key`` tag value (:func:`run_key`)."""
    name: str
    started_ms: int
    ended_ms: int
    status: RunStatus
    params: dict[str, str]
    metrics: dict[str, float]
    """Metric values, all logged at step 0 with ``ended_ms`` as their timestamp."""
    tags: dict[str, str]
    version: int | None = None
    """The driftloop version the run registered, when it got that far."""


class AliasPlan(_Frozen):
    """The MLflow alias moves that make MLflow's aliases match driftloop's registry."""

    set: dict[str, str]
    """Alias -> MLflow version to point it at."""
    delete: list[str]
    """Aliases to remove (cleared in driftloop)."""


def run_key(version: int | None, event_id: str | None) -> str:
    """The identity of a mirrored run: its version when it registered one, else its event."""
    if version is not None:
        return f"version-{version}"
    if not event_id:
        raise ValueError("a run that registered no version is known by its event id")
    return f"event-{event_id}"


def experiment_name(prefix: str, model: str) -> str:
    """The MLflow experiment that holds a model's runs (one per model, so its runs compare side by side).

    >>> experiment_name("driftloop/", "credit")
    'driftloop/credit'
    """
    return f"{prefix}{model}"


def millis(at: datetime) -> int:
    """MLflow's clock: milliseconds since 1970 of a timezone-aware time."""
    return int(round(at.timestamp() * 1000))


def cut(value: str, limit: int) -> str:
    """``value`` within ``limit`` characters, a cut marked with an ellipsis.

    >>> cut("abcdef", 4), cut("abc", 4)
    ('abc…', 'abc')
    """
    return value if len(value) <= limit else value[: limit - 1] + "…"


def clean_key(name: str) -> str:
    """A param, metric or tag name MLflow accepts: its characters, its length.

    >>> clean_key("class_weight[0]")
    'class_weight_0_'
    """
    return cut(_KEY_CHARS.sub("_", name), MAX_KEY) or "_"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "None"
    return str(value)


def _finite(metrics: dict[str, float] | None, prefix: str = "") -> dict[str, float]:
    """Metrics MLflow can store (JSON has no NaN or infinity), under clean names."""
    return {clean_key(prefix + k): float(v) for k, v in (metrics or {}).items() if math.isfinite(v)}


def gate_word(passed: bool, failed: bool) -> str:
    """The gate's verdict in one word: ``passed``, ``rejected`` or ``failed`` (the run broke)."""
    return "failed" if failed else ("passed" if passed else "rejected")


def card_params(card: ModelCard) -> dict[str, str]:
    """The params of a version's run: its lineage (data, code, seed, window) and the estimator's params.

    An estimator param is logged under its own name (``C``, ``max_iter``), or as
    ``estimator.<name>`` where that name is one of driftloop's (``seed``); values are text, as
    MLflow keeps them, cut to :data:`MAX_PARAM_VALUE`.
    """
    own: dict[str, Any] = {
        "estimator": card.estimator,
        "seed": card.seed,
        "dataset_version": card.dataset_version,
        "dataset_manifest_sha256": card.dataset_manifest_sha256,
        "training_rows": card.training_rows,
        "holdout_rows": card.holdout_rows,
        "trigger": card.trigger,
        "champion_version": card.champion_version,
        "onnx_opset": card.onnx_opset,
        "code_package": card.code.package,
        "code_git_commit": card.code.git_commit,
        "reused_from": card.reused_from,
    }
    params = {name: _text(value) for name, value in own.items()}
    params.update({f"window.{k}": _text(v) for k, v in card.window.items() if k != "run_id"})
    for name, value in card.params.items():
        params[f"estimator.{name}" if name in _OWN_PARAMS or name.startswith("window.") else name] = _text(value)
    return {clean_key(k): cut(v, MAX_PARAM_VALUE) for k, v in params.items()}


def _gate_tags(passed: bool, reasons: list[str], failed: bool) -> dict[str, str]:
    return {
        "driftloop.gate": gate_word(passed, failed),
        "driftloop.gate_reasons": cut("; ".join(reasons) or "-", MAX_TAG_VALUE),
    }


def run_of_card(card: ModelCard, experiment_model: str | None = None) -> MlflowRun:
    """The MLflow run of a registered version, from its card alone (the card is the lineage).

    Times are the card's: the run ends when the version was registered and starts
    ``training_seconds`` earlier, so the same card always gives the same run.
    """
    model = experiment_model or card.model
    ended = millis(card.created_at)
    metrics = {**_finite(card.metrics), **_finite(card.champion_metrics, "champion_")}
    metrics["gate_passed"] = 1.0 if card.gate.passed else 0.0
    metrics["training_seconds"] = float(card.training_seconds)
    tags = {
        RUN_KEY_TAG: run_key(card.version, None),
        "driftloop.model": model,
        "driftloop.version": str(card.version),
        "driftloop.artifact_sha256": card.artifact_sha256,
        "driftloop.run_id": _text(card.window.get("run_id")),
        "driftloop.trigger_event_id": card.trigger_event_id or "-",
        "mlflow.source.name": "driftloop trainer",
        "mlflow.source.type": "JOB",
        "mlflow.user": "driftloop",
        "mlflow.note.content": cut(card_note(card), MAX_TAG_VALUE),
        **_gate_tags(card.gate.passed, card.gate.reasons, failed=False),
    }
    if card.code.git_commit:
        tags["mlflow.source.git.commit"] = card.code.git_commit
    return MlflowRun(
        key=run_key(card.version, None),
        name=f"{model} v{card.version}",
        started_ms=ended - int(round(card.training_seconds * 1000)),
        ended_ms=ended,
        status="FINISHED",
        params=card_params(card),
        metrics=metrics,
        tags=tags,
        version=card.version,
    )


def run_of_failure(event: TrainingCompleted) -> MlflowRun:
    """The MLflow run of a training run that failed before it registered a version."""
    if event.version is not None:
        raise ValueError(f"{event.model} v{event.version} registered a version: mirror it from its card")
    at = millis(event.occurred_at)
    return MlflowRun(
        key=run_key(None, str(event.event_id)),
        name=f"{event.model} run failed",
        started_ms=at,
        ended_ms=at,
        status="FAILED",
        params={"dataset_version": str(event.dataset_version), "trigger": cut(event.trigger, MAX_PARAM_VALUE)},
        metrics={**_finite(event.metrics), **_finite(event.champion_metrics, "champion_"), "gate_passed": 0.0},
        tags={
            RUN_KEY_TAG: run_key(None, str(event.event_id)),
            "driftloop.model": event.model,
            "driftloop.event_id": str(event.event_id),
            "driftloop.trigger_event_id": str(event.trigger_event_id) if event.trigger_event_id else "-",
            "mlflow.source.name": "driftloop trainer",
            "mlflow.source.type": "JOB",
            "mlflow.user": "driftloop",
            **_gate_tags(event.gate.passed, event.gate.reasons, failed=True),
        },
    )


def event_tags(event: TrainingCompleted) -> dict[str, str]:
    """What the run's event adds to a version's run: the published verdict and the event's id.

    The published gate can say more than the card's (a passed candidate held back because a
    drift arrived while it trained), so the event's reasons replace the card's.
    """
    return {"driftloop.event_id": str(event.event_id), **_gate_tags(event.gate.passed, event.gate.reasons, False)}


def card_note(card: ModelCard) -> str:
    """The run's description in MLflow's UI (markdown): what was trained on what, and the verdict."""
    champion = f"champion v{card.champion_version}" if card.champion_version is not None else "no champion"
    lines = [
        f"driftloop **{card.model} v{card.version}**: {card.estimator} on dataset v{card.dataset_version} "
        f"({card.training_rows} training rows, {card.holdout_rows} holdout rows; {champion}).",
        f"Trigger: {card.trigger}.",
        f"Gate {gate_word(card.gate.passed, False)}: {'; '.join(card.gate.reasons) or '-'}.",
    ]
    if card.reused_from is not None:
        lines.append(f"The graph of v{card.reused_from} registered again (a regime seen before came back).")
    return "\n\n".join(lines)


def version_tags(card: ModelCard) -> dict[str, str]:
    """Tags of a mirrored MLflow model version."""
    return {
        VERSION_TAG: str(card.version),
        "driftloop.gate": gate_word(card.gate.passed, False),
        "driftloop.dataset_version": str(card.dataset_version),
        "driftloop.artifact_sha256": card.artifact_sha256,
    }


def deployment_note(change: DeploymentChanged) -> str:
    """The ``driftloop.last_deployment`` tag of the version a deployment event moved.

    >>> from shared.events import DeploymentChanged
    >>> from datetime import UTC, datetime
    >>> deployment_note(DeploymentChanged(model="m", action="promoted", version=2, traffic=1.0,
    ...     reason="canary better", actor="monitor", occurred_at=datetime(2026, 3, 1, tzinfo=UTC)))
    'promoted by monitor at 2026-03-01T00:00:00+00:00: canary better'
    """
    at = change.occurred_at.isoformat(timespec="seconds")
    return cut(f"{change.action} by {change.actor} at {at}: {change.reason}", MAX_TAG_VALUE)


def plan_aliases(wanted: dict[str, int], mirrored: dict[int, str], current: dict[str, str]) -> AliasPlan:
    """The moves that make MLflow's driftloop aliases what the registry says now.

    ``wanted`` is the registry's aliases (alias -> driftloop version), ``mirrored`` maps
    driftloop versions to MLflow versions, ``current`` is MLflow's aliases now (alias -> MLflow
    version). Only driftloop's own aliases (:data:`shared.registry.ALIASES`) are touched, so
    aliases a team set in MLflow by hand stay. An alias whose version is not mirrored yet is
    left as it is (the caller mirrors the version first).
    """
    moves: dict[str, str] = {}
    delete: list[str] = []
    for alias in ALIASES:
        version = wanted.get(alias)
        if version is None:
            if alias in current:
                delete.append(alias)
            continue
        target = mirrored.get(version)
        if target is not None and current.get(alias) != target:
            moves[alias] = target
    return AliasPlan(set=moves, delete=delete)


def artifact_path(artifact_uri: str) -> str | None:
    """Where a run's artifacts go under the server's artifact proxy (``mlflow-artifacts:/``), or None.

    A run's artifact URI is ``mlflow-artifacts:/<experiment>/<run>/artifacts`` when the server
    serves artifacts (``mlflow server``'s default); any other store (``s3://``, a local path)
    is not reachable through the REST API, and the artifacts are then not uploaded.

    >>> artifact_path("mlflow-artifacts:/1/abc/artifacts"), artifact_path("mlflow-artifacts://host:5000/1/abc/artifacts")
    ('1/abc/artifacts', '1/abc/artifacts')
    >>> artifact_path("s3://bucket/1/abc/artifacts") is None
    True
    """
    parsed = urlsplit(artifact_uri)
    if parsed.scheme != "mlflow-artifacts":
        return None
    return parsed.path.strip("/")


def batches(items: dict[str, Any], size: int = MAX_PER_BATCH) -> list[dict[str, Any]]:
    """``items`` in chunks MLflow takes in one ``runs/log-batch`` call (at least one, maybe empty).

    >>> [len(b) for b in batches({str(i): i for i in range(250)})]
    [100, 100, 50]
    """
    keys = list(items)
    chunks = [{k: items[k] for k in keys[i : i + size]} for i in range(0, len(keys), size)]
    return chunks or [{}]
