"""Event contracts: one pydantic model per topic, and their JSON encoding.

Every event carries ``schema_version``, ``event_id`` (UUID), ``occurred_at`` (timezone-aware,
normalised to UTC) and ``model`` (the model name, which is also the Kafka key). Models are
frozen and forbid unknown fields, so a producer's typo is caught at the consumer's door
instead of silently dropped. Within schema version 1 only optional fields may be added.

>>> e = DeploymentChanged(model="credit", action="promoted", version=3, previous_version=2,
...                       traffic=1.0, reason="canary error 0.08 <= champion 0.09", actor="monitor")
>>> decode_event(topics.DEPLOYMENTS, encode_event(e)) == e
True
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from shared import topics
from shared.errors import InvalidEvent

SCHEMA_VERSION: Literal[1] = 1


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A datetime that must carry a timezone; stored and emitted in UTC."""

ModelName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Label = str | int
"""Class labels: strings (``"good"``) or integers (``0``/``1``) as a data set gives them."""


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def epoch(at: datetime) -> float:
    """Seconds since 1970 of a timezone-aware time (naive times are refused)."""
    if at.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return at.timestamp()


def from_epoch(seconds: float) -> datetime:
    """The UTC time of :func:`epoch` seconds."""
    return datetime.fromtimestamp(seconds, UTC)


def rfc3339(seconds: float) -> str:
    """The UTC text of :func:`epoch` seconds, as events carry times.

    >>> rfc3339(0.5)
    '1970-01-01T00:00:00.500000Z'
    """
    return from_epoch(seconds).isoformat().replace("+00:00", "Z")


class Contract(BaseModel):
    """Base of every value object in an event: immutable, strict about unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Event(Contract):
    """Fields every event has. Subclasses are the events, one per topic."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: UtcDatetime = Field(default_factory=utc_now)
    model: ModelName


# --- annotations ---------------------------------------------------------------------------


class AnnotationSubmitted(Event):
    """A labelled record from an annotation system.

    ``features`` may hold ``None`` (missing) or non-finite numbers: the contract carries
    what the annotator sent, and ingest's validation rejects it with a named rule.
    ``inference_id`` is set when the label is ground truth for an earlier prediction.
    """

    record_id: Annotated[str, Field(min_length=1, max_length=256)]
    features: dict[str, float | None]
    label: Label
    confidence: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    annotator: str | None = None
    inference_id: str | None = None


class RejectionReason(Contract):
    """One rule a record failed."""

    field: str
    rule: str
    message: str


class SourcePosition(Contract):
    """Where a message was read: enough to find it again on the broker."""

    topic: str
    partition: int
    offset: int


class AnnotationRejected(Event):
    """A record ingest refused, with the original payload verbatim and every failed rule."""

    payload: str
    reasons: Annotated[list[RejectionReason], Field(min_length=1)]
    source: SourcePosition


# --- datasets ------------------------------------------------------------------------------


class DatasetVersionCreated(Event):
    """A new immutable dataset version was written (shards and manifest are durable)."""

    version: Annotated[int, Field(ge=1)]
    manifest_key: str
    rows_total: Annotated[int, Field(ge=0)]
    rows_added: Annotated[int, Field(ge=0)]
    label_counts: dict[str, int]
    schema_hash: str


# --- drift ---------------------------------------------------------------------------------


class DriftDetected(Event):
    """A confirmed drift with its evidence.

    ``change_samples`` is the detector's estimate of how many of the most recent samples
    belong to the new regime, and ``change_started_at`` the time of the first of them.
    """

    model_version: int | None = None
    kind: Literal["data", "prediction", "concept"]
    feature: str | None = None
    detector: str
    statistic: float
    threshold: float
    samples: Annotated[int, Field(ge=0)]
    severity: Literal["low", "medium", "high"]
    change_samples: Annotated[int, Field(ge=0)] | None = None
    change_started_at: UtcDatetime | None = None


# --- training.completed --------------------------------------------------------------------


class GateVerdict(Contract):
    """Whether a candidate may be offered for rollout, and why."""

    passed: bool
    reasons: list[str] = Field(default_factory=list)


class TrainingCompleted(Event):
    """A training run ended, passed or not. ``version`` is None when nothing was registered."""

    version: Annotated[int, Field(ge=1)] | None
    trigger: str
    trigger_event_id: uuid.UUID | None = None
    dataset_version: Annotated[int, Field(ge=1)]
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None = None
    gate: GateVerdict
    artifact_key: str | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


# --- deployments ---------------------------------------------------------------------------


class DeploymentChanged(Event):
    """Which version serves which share of traffic changed."""

    action: Literal["canary_started", "shadow_started", "promoted", "rolled_back"]
    version: Annotated[int, Field(ge=1)]
    previous_version: Annotated[int, Field(ge=1)] | None = None
    traffic: Annotated[float, Field(ge=0.0, le=1.0)]
    reason: str
    actor: str


# --- predictions ---------------------------------------------------------------------------


class PredictionsLogged(Event):
    """Predictions of one model version and variant, in columns: the event on ``predictions``.

    Row ``i`` is one prediction: ``inference_ids[i]``, its ``features[i]`` in
    ``feature_names`` order (``null`` = missing), ``labels[i]``, ``probabilities[i]`` in
    ``classes`` order, ``latency_ms[i]`` and ``predicted_at[i]``. Columns, and many predictions
    per message, because one message per prediction costs the serving path 20–75% of its
    throughput (measured; the inference benchmark compares logging on and off).
    """

    version: Annotated[int, Field(ge=1)]
    variant: Literal["champion", "canary", "shadow"]
    feature_names: Annotated[list[str], Field(min_length=1)]
    classes: list[str]
    inference_ids: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    features: list[list[float | None]]
    labels: list[Label]
    probabilities: list[list[float]]
    latency_ms: list[Annotated[float, Field(ge=0.0)]]
    predicted_at: list[UtcDatetime]

    @classmethod
    def encode_columns(cls, **columns: Any) -> bytes:
        """This event's JSON, written straight from the serving path's columns.

        The prediction log writes ~100,000 values a second beside the requests it serves;
        building and serialising the model value by value costs it 5-10 % of its throughput
        (measured with ``benchmarks/bench_inference.py``). So the columns may be numpy arrays
        (float32 ``features`` and ``probabilities``, NaN -- a missing value -- written as
        ``null``; ``predicted_at`` as RFC 3339 text) and orjson writes them as they are. The
        field set is this model's, checked here; ``schema_version``, ``event_id`` and
        ``occurred_at`` are filled in; a contract test decodes the result with
        :func:`decode_event`.
        """
        fields: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "event_id": str(uuid.uuid4()),
            "occurred_at": utc_now(),
            **columns,
        }
        if fields.keys() != cls.model_fields.keys():
            wrong = sorted(fields.keys() ^ cls.model_fields.keys())
            raise ValueError(f"{cls.__name__} columns do not match its fields: {', '.join(wrong)}")
        return orjson.dumps(fields, option=orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY)

    @model_validator(mode="after")
    def _columns_line_up(self) -> PredictionsLogged:
        n = len(self.inference_ids)
        for name in ("features", "labels", "probabilities", "latency_ms", "predicted_at"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, inference_ids has {n}")
        width = len(self.feature_names)
        if any(len(row) != width for row in self.features):
            raise ValueError(f"every features row must have {width} values (one per feature_names)")
        if any(len(row) != len(self.classes) for row in self.probabilities):
            raise ValueError(f"every probabilities row must have {len(self.classes)} values (one per class)")
        return self


# --- dead letters --------------------------------------------------------------------------


class DeadLetter(Contract):
    """What ``<topic>.dlq`` receives: the original bytes and why they could not be handled.

    Not an :class:`Event` (it has no model of its own: the bytes may not even be JSON).
    ``payload`` is the original value decoded as UTF-8 with replacement; ``payload_hex``
    keeps the exact bytes.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    failed_at: UtcDatetime = Field(default_factory=utc_now)
    reason: str
    source: SourcePosition
    key: str | None
    payload: str
    payload_hex: str

    @classmethod
    def of(cls, reason: str, source: SourcePosition, key: bytes | None, value: bytes | None) -> DeadLetter:
        """Build a dead letter from the raw record."""
        raw = value or b""
        return cls(
            reason=reason,
            source=source,
            key=None if key is None else key.decode("utf-8", "replace"),
            payload=raw.decode("utf-8", "replace"),
            payload_hex=raw.hex(),
        )

    def original_bytes(self) -> bytes:
        """The record's value exactly as it was read."""
        return bytes.fromhex(self.payload_hex)


# --- topic ↔ event, encoding ---------------------------------------------------------------

ContractT = TypeVar("ContractT", bound=Contract)

EVENT_FOR_TOPIC: dict[str, type[Event]] = {
    topics.ANNOTATIONS: AnnotationSubmitted,
    topics.ANNOTATIONS_REJECTED: AnnotationRejected,
    topics.DATASETS: DatasetVersionCreated,
    topics.DRIFT: DriftDetected,
    topics.TRAINING_COMPLETED: TrainingCompleted,
    topics.DEPLOYMENTS: DeploymentChanged,
    topics.PREDICTIONS: PredictionsLogged,
}
TOPIC_FOR_EVENT: dict[type[Event], str] = {cls: topic for topic, cls in EVENT_FOR_TOPIC.items()}


def topic_of(event: Event) -> str:
    """The topic an event is published on."""
    try:
        return TOPIC_FOR_EVENT[type(event)]
    except KeyError:
        raise InvalidEvent(f"{type(event).__name__} has no topic") from None


def encode_event(event: Contract) -> bytes:
    """Serialise an event (or dead letter) to compact JSON bytes.

    NaN and infinities have no JSON spelling; they are written as ``null``, which the
    ``float | None`` feature fields accept and ingest rejects as a missing value.
    """
    return event.model_dump_json().encode()


def describe_validation_error(error: ValidationError) -> str:
    """One readable line per problem: ``field.path: message (got value)``."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "<root>"
        got: Any = item.get("input")
        shown = repr(got)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        parts.append(f"{where}: {item['msg']} (got {shown})")
    return "; ".join(parts)


def decode_as(cls: type[ContractT], data: bytes | str) -> ContractT:
    """Parse JSON bytes into ``cls``, raising :class:`InvalidEvent` with a readable message."""
    try:
        return cls.model_validate_json(data)
    except ValidationError as err:
        raise InvalidEvent(f"invalid {cls.__name__}: {describe_validation_error(err)}") from None


def decode_event(topic: str, data: bytes | str) -> Event:
    """Decode a message read from ``topic`` into that topic's event class."""
    try:
        cls = EVENT_FOR_TOPIC[topic]
    except KeyError:
        raise InvalidEvent(f"no event is defined for topic {topic!r}") from None
    return decode_as(cls, data)
