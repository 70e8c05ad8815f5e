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


def check_record(spec: ModelSpec | None, event: AnnotationSubmitted) -> AcceptedRecord | list[RejectionReason]:
    """The stored form of a valid record, or every rule it fails."""
    if spec is None:
        return [
            RejectionReason(
                field="model",
                rule="known_model",
                message=f"no spec is applied for model {event.model!r}; run `driftloop specs apply`",
            )
        ]
    reasons: list[RejectionReason] = []
    values: list[float | None] = []
    for feature in spec.features:
        field = f"features.{feature.name}"
        value = event.features.get(feature.name)
        if value is None:
            if not feature.allow_missing:
                reasons.append(RejectionReason(field=field, rule="missing", message=f"{feature.name} is missing"))
            values.append(None)
            continue
        if not math.isfinite(value):
            reasons.append(RejectionReason(field=field, rule="finite", message=f"{feature.name} is {value}"))
        elif feature.min is not None and value < feature.min:
            reasons.append(
                RejectionReason(field=field, rule="range", message=f"{feature.name}={value} is below min {feature.min}")
            )
        elif feature.max is not None and value > feature.max:
            reasons.append(
                RejectionReason(field=field, rule="range", message=f"{feature.name}={value} is above max {feature.max}")
            )
        values.append(value)
    declared = set(spec.feature_names)
    for name in event.features:
        if name not in declared:
            reasons.append(
                RejectionReason(
                    field=f"features.{name}", rule="unknown_feature", message=f"{name} is not a feature of {spec.name}"
                )
            )
    label = spec.canonical_label(event.label)
    if label is None:
        allowed = ", ".join(repr(v) for v in spec.label.values)
        reasons.append(RejectionReason(field="label", rule="label", message=f"{event.label!r} is not one of {allowed}"))
    if event.confidence < spec.validation.min_confidence:
        reasons.append(
            RejectionReason(
                field="confidence",
                rule="min_confidence",
                message=f"confidence {event.confidence} is below {spec.validation.min_confidence}",
            )
        )
    if reasons or label is None:
        return reasons
    return AcceptedRecord(
        record_id=event.record_id,
        occurred_at=event.occurred_at,
        label=label,
        confidence=event.confidence,
        annotator=event.annotator,
        inference_id=event.inference_id,
        features=tuple(values),
    )
