"""Model specs: the YAML an operator applies with ``driftloop specs apply``.

A spec names a model's features, label set, validation rules, training recipe, triggers,
gate, rollout and monitoring. It is validated strictly (unknown keys and bad values are
refused with the path of the field) and stored as ``specs/<model>.yaml``; services read it
through :class:`SpecCatalog`, which notices new and changed specs without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.errors import InvalidSpec, KeyNotFound
from shared.events import Label, ModelName, Target
from shared.features import TaskKind, graph_outputs

if TYPE_CHECKING:
    from shared.store import ObjectStore

log = logging.getLogger(__name__)

SPEC_PREFIX = "specs/"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> timedelta:
    """``"90s"``, ``"5m"``, ``"24h"``, ``"1d"`` or a number of seconds → timedelta.

    >>> parse_duration("5m")
    datetime.timedelta(seconds=300)
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as 30s, 5m, 24h or 1d, got {value!r}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, Field(description="30s, 5m, 24h, 1d or seconds")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_timedelta="float")


class FeatureSpec(_Section):
    """An input feature: its type, and what a valid value is.

    ``numeric`` (the default, so older specs keep working) takes numbers, with an optional
    declared range; ``categorical`` takes strings (integers are read as their text), from the
    declared ``values`` when there are any; ``boolean`` takes true / false. ``allow_missing``
    lets a value be null or absent, for every type.
    """

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")]
    type: Literal["numeric", "categorical", "boolean"] = "numeric"
    min: float | None = None
    max: float | None = None
    values: Annotated[list[Annotated[str, Field(max_length=256)]], Field(min_length=1)] | None = None
    """Declared categories (categorical only); a value outside them is rejected at ingest."""
    allow_missing: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.type != "numeric" and (self.min is not None or self.max is not None):
            raise ValueError(f"min and max apply to numeric features; {self.name} is {self.type}")
        if self.type != "categorical" and self.values is not None:
            raise ValueError(f"values apply to categorical features; {self.name} is {self.type}")
        if self.values is not None and len(set(self.values)) != len(self.values):
            raise ValueError(f"the values of {self.name} must be distinct")
        if self.values is not None and "" in self.values:
            raise ValueError(f"{self.name}: the empty string is not a category (it stands for a missing value)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


CLASSIFICATION: Final = "classification"
REGRESSION: Final = "regression"


class LabelSpec(_Section):
    """What the model predicts: one of two or more classes, or a number.

    ``{values: [...]}`` (``type`` defaults to ``classification``, so older specs keep working)
    declares the classes; ``{type: regression}`` a number per record, with an optional declared
    range (``min`` / ``max``: a label outside it is rejected at ingest).
    """

    type: TaskKind = CLASSIFICATION
    values: list[Label] = Field(default_factory=list)
    """The classes (classification only)."""
    min: float | None = None
    max: float | None = None
    """The range of a regression label (both optional)."""

    @model_validator(mode="after")
    def _consistent(self) -> LabelSpec:
        if self.type == REGRESSION:
            if self.values:
                raise ValueError("values apply to classification labels; a regression label is a number")
            for bound in (self.min, self.max):
                if bound is not None and not math.isfinite(bound):
                    raise ValueError("min and max of a regression label must be finite numbers")
            if self.min is not None and self.max is not None and self.min >= self.max:
                raise ValueError(f"label min {self.min} must be below max {self.max}")
            return self
        if self.min is not None or self.max is not None:
            raise ValueError("min and max apply to regression labels ({type: regression}); classes take values")
        if len(self.values) < 2:
            raise ValueError(
                "a classification label needs at least two values (label: {values: [...]}); "
                "for a number per record use label: {type: regression}"
            )
        if len({str(v) for v in self.values}) != len(self.values):
            raise ValueError("label values must be distinct")
        return self


class ValidationSpec(_Section):
    """Ingest's per-record and per-window rules."""

    min_confidence: Fraction = 0.0
    max_rejection_rate: Fraction = 0.2
    label_shift_alert: Fraction = 0.2
    min_batch_rows: Annotated[int, Field(ge=1)] = 100
    """Records a batch needs before its label shift and rejection rate are judged; smaller
    flushes are carried into the next one's checks (a few rows' label mix says nothing)."""


class WindowSpec(_Section):
    """Which rows of the newest dataset version a training run uses."""

    last_rows: Annotated[int, Field(ge=10)] = 50_000
    since_change: bool = False
    min_rows_after_change: Annotated[int, Field(ge=10)] = 1000


CLASSIFIERS: Final = (
    "LogisticRegression",
    "SGDClassifier",
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
)
REGRESSORS: Final = (
    "Ridge",
    "SGDRegressor",
    "RandomForestRegressor",
    "ExtraTreesRegressor",
    "GradientBoostingRegressor",
    "HistGradientBoostingRegressor",
)
"""The allow-listed estimators by task (built in :mod:`services.trainer.estimators`)."""


class TrainingSpec(_Section):
    """The training recipe."""

    estimator: Literal[CLASSIFIERS + REGRESSORS] = "HistGradientBoostingClassifier"  # type: ignore[valid-type]
    """The default follows the label: ``HistGradientBoostingRegressor`` for a regression label."""
    params: dict[str, Any] = Field(default_factory=dict)
    window: WindowSpec = WindowSpec()
    holdout: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    seed: int = 42


class TriggerSpec(_Section):
    """When the trainer retrains, and how often it may."""

    on_drift: bool = True
    new_labels: Annotated[int, Field(ge=1)] | None = 5000
    schedule: Duration | None = None
    cooldown: Duration = timedelta(minutes=5)
    max_runs_per_hour: Annotated[int, Field(ge=1)] = 6

    @field_validator("schedule", "cooldown", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value)


CLASSIFICATION_METRICS: Final = ("accuracy", "f1_macro", "balanced_accuracy", "log_loss_neg")
REGRESSION_METRICS: Final = ("mae", "rmse", "r2")
LOWER_IS_BETTER: Final = frozenset({"mae", "rmse"})
"""Gate metrics where a lower value is better (every other one: higher is better)."""


def improvement(metric: str, value: float, baseline: float) -> float:
    """How much better ``value`` is than ``baseline`` in ``metric``'s own good direction.

    >>> improvement("accuracy", 0.91, 0.90) > 0, improvement("mae", 9.0, 10.0)
    (True, 1.0)
    """
    return baseline - value if metric in LOWER_IS_BETTER else value - baseline


class GateSpec(_Section):
    """What a candidate must reach to be offered for rollout.

    ``min`` bounds a higher-is-better metric, ``max`` a lower-is-better one (``mae``, ``rmse``);
    ``min_delta_vs_champion`` is always how much better than the champion, in the metric's own
    good direction (0.0: at least as good; -0.005: may be 0.005 worse). The metric defaults to
    ``accuracy``, or ``mae`` for a regression label.
    """

    metric: Literal[CLASSIFICATION_METRICS + REGRESSION_METRICS] = "accuracy"  # type: ignore[valid-type]
    min: float | None = None
    max: float | None = None
    min_delta_vs_champion: float = 0.0

    @model_validator(mode="after")
    def _bound_in_direction(self) -> GateSpec:
        if self.metric in LOWER_IS_BETTER and self.min is not None:
            raise ValueError(f"{self.metric} is lower-is-better: bound it with max, not min")
        if self.metric not in LOWER_IS_BETTER and self.max is not None:
            raise ValueError(f"{self.metric} is higher-is-better: bound it with min, not max")
        return self

    def bound(self) -> tuple[str, float] | None:
        """``("min", x)`` or ``("max", x)``: the absolute bound the candidate must meet, if any."""
        if self.max is not None:
            return "max", self.max
        if self.metric not in LOWER_IS_BETTER:
            return "min", self.min if self.min is not None else 0.0
        return None


class PromoteAfter(_Section):
    """When the monitor judges a canary.

    ``max_error_delta`` is how much worse than the champion's error the canary may be: in
    error rate for a classifier, relative to the champion's MAE for a regressor (0.1 = 10 %).
    """

    labelled_samples: Annotated[int, Field(ge=1)] = 500
    max_error_delta: float = 0.0


class RollbackOn(_Section):
    """When the monitor rolls a new champion back (``error_increase`` as ``max_error_delta``:
    in error rate, or relative to the previous champion's MAE for a regressor)."""

    error_increase: Annotated[float, Field(ge=0.0)] = 0.05


class DeploymentSpec(_Section):
    """How a passed candidate reaches traffic."""

    strategy: Literal["canary", "shadow", "direct"] = "canary"
    canary_traffic: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    promote_after: PromoteAfter = PromoteAfter()
    rollback_on: RollbackOn = RollbackOn()


class MonitoringSpec(_Section):
    """Drift detection and alarm hygiene."""

    data_detector: Literal["ADWIN", "KSWIN"] = "ADWIN"
    concept_detector: Literal["ADWIN", "DDM", "HDDM_A", "HDDM_W"] = "ADWIN"
    psi_alert: Annotated[float, Field(gt=0.0)] = 0.2
    confirmation_samples: Annotated[int, Field(ge=1)] = 200
    alarm_cooldown: Duration = timedelta(minutes=10)
    join_retention: Duration = timedelta(hours=1)

    @field_validator("alarm_cooldown", "join_retention", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> timedelta:
        return parse_duration(value)


class ModelSpec(_Section):
    """Everything driftloop needs to know about one model."""

    name: ModelName
    features: Annotated[list[FeatureSpec], Field(min_length=1)]
    label: LabelSpec
    validation: ValidationSpec = ValidationSpec()
    training: TrainingSpec = TrainingSpec()
    triggers: TriggerSpec = TriggerSpec()
    gate: GateSpec = GateSpec()
    deployment: DeploymentSpec = DeploymentSpec()
    monitoring: MonitoringSpec = MonitoringSpec()

    @model_validator(mode="before")
    @classmethod
    def _defaults_follow_the_label(cls, data: Any) -> Any:
        """A regression label's estimator and gate metric default to regression ones."""
        if not isinstance(data, dict) or not isinstance(data.get("label"), dict):
            return data
        if data["label"].get("type") != REGRESSION:
            return data
        data = dict(data)
        for section, key, default in (("training", "estimator", REGRESSORS[-1]), ("gate", "metric", "mae")):
            given = data.get(section)
            if given is None or (isinstance(given, dict) and key not in given):
                data[section] = {**(given or {}), key: default}
        return data

    @model_validator(mode="after")
    def _one_task(self) -> ModelSpec:
        regression = self.label.type == REGRESSION
        estimator, metric = self.training.estimator, self.gate.metric
        if regression and estimator not in REGRESSORS:
            raise ValueError(
                f"training.estimator: {estimator} is a classifier and the label is a regression label; "
                f"use one of {', '.join(REGRESSORS)}"
            )
        if not regression and estimator not in CLASSIFIERS:
            raise ValueError(
                f"training.estimator: {estimator} is a regressor and the label has classes; "
                f"use one of {', '.join(CLASSIFIERS)} (or label: {{type: regression}})"
            )
        if regression and metric not in REGRESSION_METRICS:
            raise ValueError(f"gate.metric: {metric} is a classification metric; use {', '.join(REGRESSION_METRICS)}")
        if not regression and metric not in CLASSIFICATION_METRICS:
            raise ValueError(f"gate.metric: {metric} is a regression metric; use {', '.join(CLASSIFICATION_METRICS)}")
        clashing = sorted(set(self.feature_names) & set(self.outputs)) if self.typed else []
        if clashing:  # a per-feature input cannot share a name with an output
            raise ValueError(
                f"{', '.join(clashing)}: a model with categorical or boolean features takes one input per "
                "feature, and these names are its outputs; rename the feature"
            )
        return self

    @field_validator("features")
    @classmethod
    def _unique_features(cls, features: list[FeatureSpec]) -> list[FeatureSpec]:
        names = [f.name for f in features]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"feature names must be unique; repeated: {', '.join(duplicated)}")
        return features

    @property
    def feature_names(self) -> list[str]:
        """Feature names in spec order: the column order of every matrix driftloop builds."""
        return [f.name for f in self.features]

    @property
    def regression(self) -> bool:
        """True when the model predicts a number (``label: {type: regression}``)."""
        return self.label.type == REGRESSION

    @property
    def outputs(self) -> tuple[str, ...]:
        """The outputs of this model's graph (:mod:`shared.features`)."""
        return graph_outputs(self.regression)

    def canonical_label(self, label: Target) -> Target | None:
        """The spec's own value for ``label``, or None when it is not a valid one.

        Classification: the declared class (``1``, ``1.0`` and ``"1"`` match). Regression: the
        label as a float when it is a finite number within ``min`` / ``max`` (booleans and text
        are not numbers).
        """
        if isinstance(label, bool):
            return None
        if self.regression:
            return regression_target(label, self.label.min, self.label.max)
        if isinstance(label, float):
            if not (math.isfinite(label) and label.is_integer()):
                return None
            label = int(label)
        wanted = str(label)
        for value in self.label.values:
            if str(value) == wanted:
                return value
        return None

    @property
    def feature_types(self) -> list[str]:
        """Each feature's type, in spec order."""
        return [f.type for f in self.features]

    @property
    def typed(self) -> bool:
        """True when any feature is categorical or boolean (the model takes one input per feature)."""
        return any(f.type != "numeric" for f in self.features)

    def schema_hash(self) -> str:
        """sha256 of what shapes a dataset: feature names, order and types, and the label set
        (``regression`` for a regression label: its range does not shape the data).

        An all-numeric spec hashes as it did before features had types, so its datasets go on.
        """
        labels = [REGRESSION] if self.regression else [str(v) for v in self.label.values]
        shape: tuple[Any, ...] = (self.feature_names, labels)
        if self.typed:
            shape = (*shape, self.feature_types)
        return hashlib.sha256(repr(shape).encode()).hexdigest()


def regression_target(value: Any, low: float | None = None, high: float | None = None) -> float | None:
    """A regression label as a float: a finite number within ``[low, high]``; None otherwise.

    >>> regression_target(3), regression_target(2.5, 0, 10), regression_target(-1, 0), regression_target("3")
    (3.0, 2.5, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range (JSON allows one)
        return None
    if not math.isfinite(number):
        return None
    if (low is not None and number < low) or (high is not None and number > high):
        return None
    return number


def spec_key(model: str) -> str:
    """Object-store key of a model's spec."""
    return f"{SPEC_PREFIX}{model}.yaml"


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "<root>"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def parse_spec(text: str | bytes, source: str = "spec") -> ModelSpec:
    """Parse and validate a spec's YAML; :class:`InvalidSpec` names each bad field's path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidSpec(f"{source} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise InvalidSpec(f"{source} must be a YAML mapping with at least name, features and label")
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as err:
        raise InvalidSpec(f"{source} is invalid: {_describe(err)}") from None


def dump_spec(spec: ModelSpec) -> bytes:
    """The spec as YAML, durations in seconds, as it is stored."""
    data = spec.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False).encode()


def apply_spec(store: ObjectStore, text: str | bytes, source: str = "spec") -> tuple[ModelSpec, bool]:
    """Validate and store a spec; returns it and whether the stored spec changed."""
    spec = parse_spec(text, source)
    data = dump_spec(spec)
    key = spec_key(spec.name)
    try:
        changed = store.get(key) != data
    except KeyNotFound:
        changed = True
    if changed:
        store.put(key, data)
    return spec, changed


class SpecCatalog:
    """The specs in the store, reloaded when they change (checked at most every ``refresh_s``).

    Services ask it for a model's spec on every use; it costs a dictionary lookup except once
    per refresh interval, when it lists ``specs/`` and re-reads what changed.
    """

    def __init__(self, store: ObjectStore, refresh_s: float = 2.0) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._specs: dict[str, ModelSpec] = {}
        self._digests: dict[str, str] = {}
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def refresh(self) -> list[str]:
        """Re-read changed specs now; returns the names of models whose spec changed."""
        with self._lock:
            changed: list[str] = []
            keys = [k for k in self._store.list(SPEC_PREFIX) if k.endswith(".yaml")]
            present = set()
            for key in keys:
                name = key[len(SPEC_PREFIX) : -len(".yaml")]
                present.add(name)
                try:
                    data = self._store.get(key)
                except KeyNotFound:
                    continue
                digest = hashlib.sha256(data).hexdigest()
                if self._digests.get(name) == digest:
                    continue
                try:
                    self._specs[name] = parse_spec(data, key)
                except InvalidSpec as err:
                    log.error("ignoring stored spec %s: %s", key, err.message)
                    continue
                self._digests[name] = digest
                changed.append(name)
            for gone in set(self._specs) - present:
                del self._specs[gone]
                self._digests.pop(gone, None)
                changed.append(gone)
            self._checked_at = time.monotonic()
            if changed:
                log.info("specs loaded or changed: %s", ", ".join(sorted(changed)))
            return changed

    def due(self, model: str | None = None) -> bool:
        """True when the store should be looked at again (always soon for an unknown model)."""
        age = time.monotonic() - self._checked_at
        return age >= self._refresh_s or (model is not None and model not in self._specs and age >= 0.5)

    def cached(self, model: str) -> ModelSpec | None:
        """The spec as last read, without touching the store (for hot paths)."""
        return self._specs.get(model)

    def get(self, model: str) -> ModelSpec | None:
        """The current spec of ``model``, or None if no spec was applied for it."""
        if self.due(model):
            self.refresh()
        return self._specs.get(model)

    def all(self) -> dict[str, ModelSpec]:
        """Every known spec by model name."""
        if time.monotonic() - self._checked_at >= self._refresh_s:
            self.refresh()
        return dict(self._specs)
