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
    body["features"]["age"] = ["old"]  # a number, a category, a flag or null: not a list
    body["confidence"] = 1.5
    with pytest.raises(InvalidEvent) as info:
        decode_event(topics.ANNOTATIONS, json.dumps(body))
    message = info.value.message
    assert message.startswith("invalid AnnotationSubmitted: ")
    assert "features.age" in message and "(got ['old'])" in message
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


# --- bounded to one message ------------------------------------------------------------------

WHERE = SourcePosition(topic=topics.ANNOTATIONS, partition=0, offset=12)


def test_a_dead_letter_that_fits_is_whole_and_says_its_size() -> None:
    raw = b"\xff\xfe{broken" * 1000
    letter = DeadLetter.of("cannot decode", WHERE, b"m", raw)
    assert letter.original_bytes() == raw and not letter.payload_truncated and letter.payload_bytes == len(raw)
    assert letter.payload == raw.decode("utf-8", "replace") and letter.reason == "cannot decode"


@pytest.mark.parametrize(
    "raw",
    [
        b"x" * 2_000_000,
        bytes(range(256)) * 8000,  # control characters: six bytes each in JSON
        "é€𝄞".encode() * 200_000,  # multi-byte characters, cut anywhere
        b'"\\' * 600_000,
    ],
    ids=["ascii", "binary", "multibyte", "escapes"],
)
def test_a_dead_letter_too_large_for_one_message_keeps_the_first_bytes_that_fit(raw: bytes) -> None:
    limit = 1_000_000
    letter = DeadLetter.of("not JSON: " + "why " * 100_000, WHERE, b"k" * 5000, raw, max_bytes=limit)
    data = encode_event(letter)
    assert len(data) + len((letter.key or "").encode()) <= limit == 1_000_000
    again = DeadLetter.model_validate_json(data)
    assert again.payload_truncated and again.payload_bytes == len(raw)
    kept = again.original_bytes()
    assert raw.startswith(kept) and len(kept) > limit // 20, "as much of the value as fits"
    assert again.payload == kept.decode("utf-8", "replace")
    assert again.reason.startswith("not JSON: why") and len(again.reason) <= limit // 4
    assert again.key is not None and again.key.startswith("kkk") and len(again.key) <= 1024


def test_a_huge_ascii_value_keeps_about_a_third_of_the_limit() -> None:
    letter = DeadLetter.of("not JSON", WHERE, None, b"x" * 2_000_000, max_bytes=1_000_000)
    assert 300_000 < len(letter.original_bytes()) <= 333_334 and letter.record_size() <= 1_000_000


def test_dead_letters_and_rejections_written_before_the_size_fields_still_decode() -> None:
    old_letter = {
        "schema_version": 1,
        "failed_at": "2026-01-01T00:00:00Z",
        "reason": "cannot decode",
        "source": {"topic": "annotations", "partition": 0, "offset": 1},
        "key": None,
        "payload": "oops",
        "payload_hex": b"oops".hex(),
    }
    letter = DeadLetter.model_validate_json(json.dumps(old_letter))
    assert letter.original_bytes() == b"oops" and not letter.payload_truncated and letter.payload_bytes is None
    old_rejection = json.loads(encode_event(SAMPLES[1]))
    for name in ("payload_truncated", "payload_bytes", "reasons_omitted"):
        del old_rejection[name]
    rejected = decode_event(topics.ANNOTATIONS_REJECTED, json.dumps(old_rejection))
    assert isinstance(rejected, AnnotationRejected)
    assert (rejected.payload_truncated, rejected.payload_bytes, rejected.reasons_omitted) == (False, None, 0)


def test_a_rejection_that_fits_carries_the_payload_verbatim() -> None:
    why = [RejectionReason(field="features.age", rule="range", message="age 7 is below min 18")]
    raw = '{"record_id": "r-2", "note": "größe"}'.encode()
    event = AnnotationRejected.of("credit", raw, why, WHERE)
    assert event.payload == raw.decode() and event.payload_bytes == len(raw)
    assert not event.payload_truncated and event.reasons == why and event.reasons_omitted == 0


def test_a_rejection_too_large_for_one_message_is_bounded() -> None:
    raw = ('{"features": {"a": "' + "ü" * 1_500_000 + '"}}').encode()
    reasons = [
        RejectionReason(field=f"features.f{i}" + "x" * 3000, rule="unknown_feature", message="m" * 5000)
        for i in range(2000)
    ]
    event = AnnotationRejected.of("credit", raw, reasons, WHERE, max_bytes=200_000)
    assert event.record_size() <= 200_000
    again = decode_event(topics.ANNOTATIONS_REJECTED, encode_event(event))
    assert isinstance(again, AnnotationRejected) and again.payload_truncated and again.payload_bytes == len(raw)
    assert raw.decode().startswith(again.payload) and len(again.payload.encode()) > 50_000
    assert 1 <= len(again.reasons) < 2000 and len(again.reasons) + again.reasons_omitted == 2000
    assert again.reasons[0].field.startswith("features.f0x") and len(again.reasons[0].message) <= 1024


def test_clip_json_text_counts_what_the_text_takes_in_json() -> None:
    import orjson

    from shared.events import clip_json_text

    for text in ("plain" * 100, "é€𝄞" * 100, '"\\\n\x01' * 100):
        for budget in (2, 3, 10, 101, 1000):
            clipped = clip_json_text(text, budget)
            assert text.startswith(clipped) and len(orjson.dumps(clipped)) <= budget
            assert len(orjson.dumps(text[: len(clipped) + 7])) > budget or clipped == text, "not clipped much more"
