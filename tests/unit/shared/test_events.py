"""Event contracts: every event round-trips through JSON; bad input is refused readably."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from shared import topics
from shared.errors import InvalidEvent
from shared.events import (
    EVENT_FOR_TOPIC,
    AnnotationRejected,
    AnnotationSubmitted,
    DatasetVersionCreated,
    DeadLetter,
    DeploymentChanged,
    DriftDetected,
    Event,
    GateVerdict,
    PredictionsLogged,
    RejectionReason,
    SourcePosition,
    TrainingCompleted,
    decode_event,
    encode_event,
    topic_of,
)

SAMPLES: list[Event] = [
    AnnotationSubmitted(
        model="credit",
        record_id="r-1",
        features={"income": 52000.0, "age": 41.0},
        label="good",
        confidence=0.97,
        annotator="team-a",
        inference_id="inf-9",
    ),
    AnnotationRejected(
        model="credit",
        payload='{"record_id": "r-2"}',
        reasons=[RejectionReason(field="features.age", rule="range", message="age 7 is below min 18")],
        source=SourcePosition(topic=topics.ANNOTATIONS, partition=2, offset=41),
    ),
    DatasetVersionCreated(
        model="credit",
        version=3,
        manifest_key="datasets/credit/versions/3.json",
        rows_total=15000,
        rows_added=5000,
        label_counts={"good": 9000, "bad": 6000},
        schema_hash="ab" * 32,
    ),
    DriftDetected(
        model="credit",
        model_version=2,
        kind="concept",
        feature=None,
        detector="ADWIN",
        statistic=0.31,
        threshold=0.002,
        samples=1800,
        severity="high",
        change_samples=420,
        change_started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    ),
    TrainingCompleted(
        model="credit",
        version=4,
        trigger="drift",
        trigger_event_id=uuid.uuid4(),
        dataset_version=3,
        metrics={"accuracy": 0.91},
        champion_metrics={"accuracy": 0.83},
        gate=GateVerdict(passed=True, reasons=["accuracy 0.91 >= min 0.7", "delta +0.08 >= -0.005"]),
        artifact_key="registry/credit/versions/4/model.onnx",
        sha256="0f" * 32,
    ),
    DeploymentChanged(
        model="credit",
        action="canary_started",
        version=4,
        previous_version=3,
        traffic=0.1,
        reason="gate passed",
        actor="trainer",
    ),
    PredictionsLogged(
        model="credit",
        version=4,
        variant="champion",
        feature_names=["income", "age"],
        classes=["bad", "good"],
        inference_ids=["inf-10", "inf-11"],
        features=[[52000.0, 41.0], [31000.0, None]],
        labels=["good", "bad"],
        probabilities=[[0.2, 0.8], [0.9, 0.1]],
        latency_ms=[0.5, 0.6],
        predicted_at=[datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC)],
    ),
]


def test_every_topic_has_an_event_and_a_sample() -> None:
    assert set(EVENT_FOR_TOPIC) == set(topics.ALL)
    assert {type(e) for e in SAMPLES} == set(EVENT_FOR_TOPIC.values())


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip(event: Event) -> None:
    data = encode_event(event)
    decoded = decode_event(topic_of(event), data)
    assert decoded == event
    assert type(decoded) is type(event)
    body = json.loads(data)
    assert body["schema_version"] == 1
    assert body["model"] == "credit"
    assert body["occurred_at"].endswith("Z")
    uuid.UUID(body["event_id"])


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_unknown_field_is_rejected_with_its_name(event: Event) -> None:
    body = json.loads(encode_event(event))
    body["surprise_field"] = 1
    with pytest.raises(InvalidEvent, match=r"surprise_field: Extra inputs are not permitted"):
        decode_event(topic_of(event), json.dumps(body))


def test_wrong_types_are_rejected_readably() -> None:
    body = json.loads(encode_event(SAMPLES[0]))
    body["features"]["age"] = "old"
    body["confidence"] = 1.5
    with pytest.raises(InvalidEvent) as info:
        decode_event(topics.ANNOTATIONS, json.dumps(body))
    message = info.value.message
    assert message.startswith("invalid AnnotationSubmitted: ")
    assert "features.age: Input should be a valid number" in message
    assert "(got 'old')" in message
    assert "confidence: Input should be less than or equal to 1" in message


def test_missing_required_field_is_named() -> None:
    body = json.loads(encode_event(SAMPLES[2]))
    del body["version"]
    with pytest.raises(InvalidEvent, match=r"version: Field required"):
        decode_event(topics.DATASETS, json.dumps(body))


def test_not_json_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="Invalid JSON"):
        decode_event(topics.ANNOTATIONS, b"\xff\x00 not json")


def test_unknown_topic_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="no event is defined for topic 'nope'"):
        decode_event("nope", b"{}")


def test_naive_timestamp_is_rejected() -> None:
    body = json.loads(encode_event(SAMPLES[5]))
    body["occurred_at"] = "2026-03-01T12:00:00"
    with pytest.raises(InvalidEvent, match="occurred_at: Input should have timezone info"):
        decode_event(topics.DEPLOYMENTS, json.dumps(body))


def test_timestamps_are_normalised_to_utc() -> None:
    body = json.loads(encode_event(SAMPLES[5]))
    body["occurred_at"] = "2026-03-01T12:00:00+02:00"
    event = decode_event(topics.DEPLOYMENTS, json.dumps(body))
    assert event.occurred_at == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    local = DriftDetected(
        model="m",
        kind="data",
        detector="KSWIN",
        statistic=0.2,
        threshold=0.1,
        samples=10,
        severity="low",
        occurred_at=datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=-5))),
    )
    assert local.occurred_at.tzinfo == UTC and local.occurred_at.hour == 17


def test_default_timestamp_is_aware_utc_and_ids_unique() -> None:
    a = DeploymentChanged(model="m", action="promoted", version=2, traffic=1.0, reason="r", actor="cli")
    b = DeploymentChanged(model="m", action="promoted", version=2, traffic=1.0, reason="r", actor="cli")
    assert a.occurred_at.tzinfo == UTC
    assert a.event_id != b.event_id


def test_events_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        SAMPLES[0].model = "other"  # type: ignore[misc]


def test_bad_model_name_is_rejected() -> None:
    body = json.loads(encode_event(SAMPLES[5]))
    body["model"] = "../etc"
    with pytest.raises(InvalidEvent, match="model: String should match pattern"):
        decode_event(topics.DEPLOYMENTS, json.dumps(body))


def test_nan_features_travel_as_null() -> None:
    event = AnnotationSubmitted(model="m", record_id="r", features={"x": float("nan")}, label=1)
    assert json.loads(encode_event(event))["features"] == {"x": None}
    assert decode_event(topics.ANNOTATIONS, encode_event(event)).features == {"x": None}


def test_integer_and_string_labels_keep_their_type() -> None:
    for label in (0, "0", "bad"):
        event = AnnotationSubmitted(model="m", record_id="r", features={}, label=label)
        assert decode_event(topics.ANNOTATIONS, encode_event(event)).label == label


def test_dead_letter_keeps_exact_bytes() -> None:
    raw = b"\xff\xfe{broken"
    letter = DeadLetter.of("cannot decode", SourcePosition(topic="annotations", partition=1, offset=7), b"m", raw)
    again = DeadLetter.model_validate_json(encode_event(letter))
    assert again.original_bytes() == raw
    assert again.key == "m"
    assert again.source.offset == 7


def test_prediction_columns_must_line_up() -> None:
    good = SAMPLES[-1].model_dump()
    with pytest.raises(ValidationError, match="labels has 1 rows, inference_ids has 2"):
        PredictionsLogged.model_validate({**good, "labels": ["good"]})
    with pytest.raises(ValidationError, match="every features row must have 2 values"):
        PredictionsLogged.model_validate({**good, "features": [[1.0], [2.0, 3.0]]})
    event = PredictionsLogged.model_validate(good)
    assert event.features[1] == [31000.0, None] and event.labels[1] == "bad"
    assert event.probabilities[1] == [0.9, 0.1] and event.latency_ms[1] == 0.6


def test_prediction_columns_encode_with_exactly_the_events_fields() -> None:
    import numpy as np

    columns = {
        "model": "credit",
        "version": 2,
        "variant": "champion",
        "feature_names": ["income", "age"],
        "classes": ["bad", "good"],
        "inference_ids": ["a", "b"],
        "features": np.array([[1.5, np.nan], [2.0, 3.0]], dtype=np.float32),
        "labels": np.array([0, 1]),
        "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32),
        "latency_ms": [0.4, 0.4],
        "predicted_at": ["2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z"],
    }
    event = decode_event(topics.PREDICTIONS, PredictionsLogged.encode_columns(**columns))
    assert isinstance(event, PredictionsLogged) and event.features == [[1.5, None], [2.0, 3.0]]
    with pytest.raises(ValueError, match="do not match its fields: latency"):
        PredictionsLogged.encode_columns(**{k: v for k, v in columns.items() if k != "latency_ms"})
    with pytest.raises(ValueError, match="extra"):
        PredictionsLogged.encode_columns(**columns, extra=1)
