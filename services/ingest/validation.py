"""Per-record validation of annotations against the model's spec. Pure: no I/O.

This is the reference statement of the rules and the path that says why a record fails.
Ingest runs a poll's records through :mod:`services.ingest.columnar` first, which checks them
as arrays and only ever accepts what this module accepts; every record it does not accept is
decided here, so rejections and their reasons are always this module's.

Every failed rule becomes a :class:`RejectionReason` (field, rule, message); a record is
accepted only when none failed. Rules:

=============== ===========================================================================
schema          the message is JSON but not an ``AnnotationSubmitted`` (missing or mistyped field)
known_model     no spec was applied for the record's model
missing         a spec feature is absent or null (an empty string, for a categorical feature),
                unless the spec allows it to be missing
type            a value of the wrong kind for the feature's type: a string or a boolean for a
                numeric feature; a boolean or a fraction for a categorical one (strings are
                categories, and an integer is read as its text); anything but true / false
                for a boolean one
finite          NaN or an infinity (numeric)
range           below the feature's ``min`` or above its ``max`` (numeric)
category        a category outside the feature's declared ``values`` (categorical)
unknown_feature a feature the spec does not declare
label           classification: the label is not in the spec's label set (two classes or
                more); regression: the label is not a number (text, a boolean), not finite
                (NaN, an infinity, an integer too large for a float), or outside the label's
                ``min`` / ``max``
min_confidence  the annotator's confidence is below ``validation.min_confidence``
=============== ===========================================================================

An accepted record's features are stored in spec order, each in its type's dataset form
(:mod:`shared.features`): a float for a numeric feature, the category's text for a
categorical one, a bool for a boolean one, and None where a value is missing. Its label is
the spec's own class, or a float for a regression spec.

A JSON ``true`` / ``false`` label stays a boolean in the event (:data:`shared.events.Target`):
a regression label refuses it, a classification label takes it as 1 / 0, as it always did.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json

from shared.datasets import AcceptedRecord
from shared.errors import InvalidEvent
from shared.events import AnnotationSubmitted, FeatureValue, RejectionReason, Target
from shared.features import BOOLEAN, CATEGORICAL, NUMERIC, category_text
from shared.spec import FeatureSpec, ModelSpec

UNKNOWN_MODEL = "unknown"
ALLOWED_SHOWN = 5
"""How many declared categories a ``category`` rejection lists."""
_SHOWN_TEXT = 60
_FLOATS = {float}


@dataclass(frozen=True)
class SchemaRejection:
    """A JSON message that is not a valid annotation: rejected with reasons, not dead-lettered."""

    model: str
    payload: bytes
    reasons: list[RejectionReason]


def parse_annotation(topic: str, data: bytes) -> AnnotationSubmitted | SchemaRejection:
    """Decode a message from ``annotations``.

    Bytes that are not a JSON object cannot be attributed to anyone: :class:`InvalidEvent`
    sends them to the DLQ. A JSON object that breaks the annotation schema is a rejection
    with one ``schema`` reason per bad field.
    """
    try:
        return AnnotationSubmitted.model_validate_json(data)
    except ValidationError as err:
        errors = err.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        raise InvalidEvent(f"not JSON: {errors[0]['msg']}")
    if any(e["type"] == "model_type" and not e["loc"] for e in errors):
        raise InvalidEvent("expected a JSON object")
    body = from_json(data, allow_inf_nan=True)
    model = body.get("model")
    valid_name = isinstance(model, str) and model[:1].isalnum() and len(model) <= 128
    return SchemaRejection(
        model=model if valid_name else UNKNOWN_MODEL,
        payload=data,
        reasons=[_schema_reason(item) for item in errors],
    )


def _schema_reason(item: Any) -> RejectionReason:
    field = ".".join(str(p) for p in item["loc"]) or "<root>"
    return RejectionReason(field=field, rule="schema", message=str(item["msg"]))


@dataclass(frozen=True, slots=True)
class _FeatureRule:
    """One feature's rule, compiled for the hot path."""

    kind: str
    optional: bool
    low: float
    high: float
    allowed: frozenset[str] | None


class RecordValidator:
    """A spec's per-record rules, compiled once for the hot path (a spec changes rarely).

    Two paths give the same verdict. An all-numeric spec first tries one pass of chained
    comparisons over values that are all floats (the common case, and what the benchmark
    times); everything else (typed specs, missing values) goes through one loop over the
    compiled rules. Only a record that fails is looked at again, rule by rule, to say why.
    ``lows`` / ``highs``, ``min_confidence`` and :meth:`label_of` are shared with the columnar
    validator, so both compare with the same bounds and read labels alike.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._names = tuple(spec.feature_names)
        # Bounds default to the largest finite floats, so one chained comparison also refuses
        # infinities (NaN fails every comparison).
        self.lows = tuple(-sys.float_info.max if f.min is None else f.min for f in spec.features)
        self.highs = tuple(sys.float_info.max if f.max is None else f.max for f in spec.features)
        self._numeric_only = not spec.typed
        self._rules = tuple(
            _FeatureRule(
                kind=f.type,
                optional=f.allow_missing,
                low=low,
                high=high,
                allowed=None if f.values is None else frozenset(f.values),
            )
            for f, low, high in zip(spec.features, self.lows, self.highs, strict=True)
        )
        self._declared = frozenset(self._names)
        self._labels = {str(v): v for v in spec.label.values}
        self._regression = spec.regression
        self._label_low = -sys.float_info.max if spec.label.min is None else spec.label.min
        self._label_high = sys.float_info.max if spec.label.max is None else spec.label.max
        self.min_confidence = spec.validation.min_confidence

    def check(self, event: AnnotationSubmitted) -> AcceptedRecord | list[RejectionReason]:
        """The stored form of a valid record, or every rule it fails."""
        features = event.features
        values = [features.get(name) for name in self._names]
        label = self.label_of(event.label)
        if (
            label is None
            or event.confidence < self.min_confidence
            or len(features) > len(values)
            or not self._declared.issuperset(features)
        ):
            return self._reasons(event)
        stored: tuple[FeatureValue, ...] | None
        if (
            self._numeric_only
            and set(map(type, values)) == _FLOATS
            and all(low <= v <= high for v, low, high in zip(values, self.lows, self.highs, strict=True))  # type: ignore[operator]
        ):
            stored = tuple(values)
        else:
            stored = self._typed(values)
        if stored is None:
            return self._reasons(event)
        return AcceptedRecord(
            event.record_id,
            event.occurred_at,
            label,
            event.confidence,
            event.annotator,
            event.inference_id,
            stored,
        )

    def label_of(self, raw: Target) -> Target | None:
        """The label as stored (the spec's own class, or a float), or None when
        :func:`label_reason` has a reason: a JSON boolean is the class 1 / 0, never a number."""
        if self._regression:
            return self._number(raw)
        return self._labels.get(str(int(raw) if raw.__class__ is bool else raw))

    def _number(self, label: Target) -> float | None:
        """A regression label as a float, or None when :func:`label_reason` has a reason.

        Bounds default to the largest finite floats, so the one chained comparison also refuses
        infinities and NaN.
        """
        if label.__class__ is float:
            number = label
        elif label.__class__ is int:
            try:
                number = float(label)
            except OverflowError:
                return None
        else:
            return None
        return number if self._label_low <= number <= self._label_high else None

    def _typed(self, values: Sequence[FeatureValue]) -> tuple[FeatureValue, ...] | None:
        """Each value in its stored form, or None as soon as one breaks its feature's rule."""
        out: list[FeatureValue] = []
        append = out.append
        for value, rule in zip(values, self._rules, strict=True):
            if value is None:
                if not rule.optional:
                    return None
                append(None)
            elif rule.kind == NUMERIC:
                if not isinstance(value, float) or not rule.low <= value <= rule.high:
                    return None
                append(value)
            elif rule.kind == CATEGORICAL:
                text = value if value.__class__ is str else category_text(value)
                if text is None:
                    return None
                if text == "":  # not a category: the form a missing value takes (shared.features)
                    if not rule.optional:
                        return None
                    append(None)
                elif rule.allowed is not None and text not in rule.allowed:
                    return None
                else:
                    append(text)
            elif value.__class__ is bool:
                append(value)
            else:
                return None
        return tuple(out)

    def _reasons(self, event: AnnotationSubmitted) -> list[RejectionReason]:
        spec = self.spec
        reasons: list[RejectionReason] = []
        for feature in spec.features:
            reason = feature_reason(feature, event.features.get(feature.name))
            if reason is not None:
                reasons.append(reason)
        for name in event.features:
            if name not in self._declared:
                message = f"{name} is not a feature of {spec.name}"
                reasons.append(RejectionReason(field=f"features.{name}", rule="unknown_feature", message=message))
        reason = label_reason(spec, event.label)
        if reason is not None:
            reasons.append(reason)
        if event.confidence < self.min_confidence:
            message = f"confidence {event.confidence} is below {self.min_confidence}"
            reasons.append(RejectionReason(field="confidence", rule="min_confidence", message=message))
        return reasons


def feature_reason(feature: FeatureSpec, value: Any) -> RejectionReason | None:
    """The rule ``value`` breaks for ``feature`` (None when it is a valid value).

    The one statement of the per-feature rules, in the order they are checked; the
    validator's fast paths only ever accept what this accepts.
    """
    name = feature.name
    field = f"features.{name}"
    if value is None or (feature.type == CATEGORICAL and value == ""):
        if feature.allow_missing:
            return None
        message = f"{name} is missing" + ("" if value is None else " (an empty string is not a category)")
        return RejectionReason(field=field, rule="missing", message=message)
    if feature.type == NUMERIC:
        if isinstance(value, bool) or not isinstance(value, float):
            message = f"{name} is numeric, got {_describe(value)}"
            return RejectionReason(field=field, rule="type", message=message)
        if not math.isfinite(value):
            return RejectionReason(field=field, rule="finite", message=f"{name} is {value}")
        if feature.min is not None and value < feature.min:
            message = f"{name}={value} is below min {feature.min}"
            return RejectionReason(field=field, rule="range", message=message)
        if feature.max is not None and value > feature.max:
            message = f"{name}={value} is above max {feature.max}"
            return RejectionReason(field=field, rule="range", message=message)
        return None
    if feature.type == CATEGORICAL:
        text = category_text(value)
        if text is None:
            message = f"{name} is categorical (a string, or an integer code), got {_describe(value)}"
            return RejectionReason(field=field, rule="type", message=message)
        if feature.values is not None and text not in feature.values:
            shown = ", ".join(repr(v) for v in feature.values[:ALLOWED_SHOWN])
            more = len(feature.values) - ALLOWED_SHOWN
            if more > 0:
                shown += f", … ({more} more)"
            message = f"{name}={_clip(text)!r} is not a declared category; allowed: {shown}"
            return RejectionReason(field=field, rule="category", message=message)
        return None
    assert feature.type == BOOLEAN
    if isinstance(value, bool):
        return None
    message = f"{name} is boolean (true or false), got {_describe(value)}"
    return RejectionReason(field=field, rule="type", message=message)


def label_reason(spec: ModelSpec, value: Target) -> RejectionReason | None:
    """Why ``value`` is not a valid label for ``spec`` (None when it is one).

    The one statement of the label rule; :meth:`RecordValidator.check` only ever accepts what
    this accepts. A classification label must be one of the declared classes (a JSON boolean
    counts as 1 / 0); a regression label a finite number (not text, not a boolean) within
    ``min`` / ``max``.
    """
    label = spec.label
    if not spec.regression:
        value = int(value) if isinstance(value, bool) else value  # what the event's type made of it before
        if spec.canonical_label(value) is not None:
            return None
        allowed = ", ".join(repr(v) for v in label.values)
        return _label_rejection(f"{value!r} is not one of {allowed}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _label_rejection(f"label {_describe_label(value)} is not a number: a regression label is a number")
    try:
        number = float(value)
    except OverflowError:
        return _label_rejection(f"label {_clip(str(value))} is too large to be a number (beyond the float range)")
    if not math.isfinite(number):
        return _label_rejection(f"label {number} is not finite")
    if label.min is not None and number < label.min:
        return _label_rejection(f"label {number} is below min {label.min}")
    if label.max is not None and number > label.max:
        return _label_rejection(f"label {number} is above max {label.max}")
    return None


def _label_rejection(message: str) -> RejectionReason:
    return RejectionReason(field="label", rule="label", message=message)


def _describe_label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(_clip(value)) if isinstance(value, str) else repr(value)


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN_TEXT else text[: _SHOWN_TEXT - 1] + "…"


def _describe(value: Any) -> str:
    """A value as a rejection message names it, as the annotator wrote it in JSON."""
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, str):
        return f"the string {_clip(value)!r}"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"a {type(value).__name__}"


def check_record(spec: ModelSpec | None, event: AnnotationSubmitted) -> AcceptedRecord | list[RejectionReason]:
    """The stored form of a valid record, or every rule it fails (compiles the spec each call)."""
    if spec is None:
        return [unknown_model(event.model)]
    return RecordValidator(spec).check(event)


def unknown_model(model: str) -> RejectionReason:
    """The reason for a record whose model has no spec."""
    return RejectionReason(
        field="model",
        rule="known_model",
        message=f"no spec is applied for model {model!r}; run `driftloop specs apply`",
    )
