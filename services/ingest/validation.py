"""Per-record validation of annotations against the model's spec. Pure: no I/O.

Every failed rule becomes a :class:`RejectionReason` (field, rule, message); a record is
accepted only when none failed. Rules:

============== ==========================================================================
schema         the message is JSON but not an ``AnnotationSubmitted`` (missing or mistyped field)
known_model    no spec was applied for the record's model
missing        a spec feature is absent or null (unless the spec allows it to be missing)
unknown_feature a feature the spec does not declare
finite         NaN or an infinity
range          below the feature's ``min`` or above its ``max``
label          the label is not in the spec's label set
min_confidence the annotator's confidence is below ``validation.min_confidence``
============== ==========================================================================
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json

from shared.datasets import AcceptedRecord
from shared.errors import InvalidEvent
from shared.events import AnnotationSubmitted, RejectionReason
from shared.spec import ModelSpec

UNKNOWN_MODEL = "unknown"


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


class RecordValidator:
    """A spec's per-record rules, compiled once for the hot path (a spec changes rarely)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._names = tuple(spec.feature_names)
        # Bounds default to the largest finite floats, so one chained comparison also refuses
        # infinities (NaN fails every comparison, and None raises TypeError).
        self._lows = tuple(-sys.float_info.max if f.min is None else f.min for f in spec.features)
        self._highs = tuple(sys.float_info.max if f.max is None else f.max for f in spec.features)
        self._optional = frozenset(f.name for f in spec.features if f.allow_missing)
        self._declared = frozenset(self._names)
        self._labels = {str(v): v for v in spec.label.values}
        self._min_confidence = spec.validation.min_confidence

    def check(self, event: AnnotationSubmitted) -> AcceptedRecord | list[RejectionReason]:
        """The stored form of a valid record, or every rule it fails."""
        features = event.features
        values = [features.get(name) for name in self._names]
        try:
            in_range = all(low <= v <= high for v, low, high in zip(values, self._lows, self._highs, strict=True))  # type: ignore[operator]
        except TypeError:  # a missing value: allowed only for optional features
            in_range = all(
                (v is None and name in self._optional) or (v is not None and low <= v <= high)
                for v, name, low, high in zip(values, self._names, self._lows, self._highs, strict=True)
            )
        label = None if isinstance(event.label, bool) else self._labels.get(str(event.label))
        if (
            not in_range
            or label is None
            or event.confidence < self._min_confidence
            or len(features) > len(values)
            or not self._declared.issuperset(features)
        ):
            return self._reasons(event)
        return AcceptedRecord(
            event.record_id,
            event.occurred_at,
            label,
            event.confidence,
            event.annotator,
            event.inference_id,
            tuple(values),
        )

    def _reasons(self, event: AnnotationSubmitted) -> list[RejectionReason]:
        spec = self.spec
        reasons: list[RejectionReason] = []
        for feature in spec.features:
            field = f"features.{feature.name}"
            value = event.features.get(feature.name)
            if value is None:
                if not feature.allow_missing:
                    reasons.append(RejectionReason(field=field, rule="missing", message=f"{feature.name} is missing"))
            elif not math.isfinite(value):
                reasons.append(RejectionReason(field=field, rule="finite", message=f"{feature.name} is {value}"))
            elif feature.min is not None and value < feature.min:
                message = f"{feature.name}={value} is below min {feature.min}"
                reasons.append(RejectionReason(field=field, rule="range", message=message))
            elif feature.max is not None and value > feature.max:
                message = f"{feature.name}={value} is above max {feature.max}"
                reasons.append(RejectionReason(field=field, rule="range", message=message))
        for name in event.features:
            if name not in self._declared:
                message = f"{name} is not a feature of {spec.name}"
                reasons.append(RejectionReason(field=f"features.{name}", rule="unknown_feature", message=message))
        if spec.canonical_label(event.label) is None:
            allowed = ", ".join(repr(v) for v in spec.label.values)
            reasons.append(
                RejectionReason(field="label", rule="label", message=f"{event.label!r} is not one of {allowed}")
            )
        if event.confidence < self._min_confidence:
            message = f"confidence {event.confidence} is below {self._min_confidence}"
            reasons.append(RejectionReason(field="confidence", rule="min_confidence", message=message))
        return reasons


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
