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
    StrictFloat,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from shared import topics
from shared.errors import InvalidEvent

SCHEMA_VERSION: Literal[1] = 1

DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
"""The largest record (value and key) driftloop publishes unless configured otherwise.

Under Apache Kafka's default ``message.max.bytes`` (1,048,588) with room for the record
batch's framing; the setting is ``kafka_max_message_bytes`` (:mod:`shared.config`).
"""
MIN_MESSAGE_BYTES = 16_384
"""The smallest limit the setting takes: a bounded dead letter's reason, source and key fit in it."""


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A datetime that must carry a timezone; stored and emitted in UTC."""

ModelName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Label = str | int
"""Class labels: strings (``"good"``) or integers (``0``/``1``) as a data set gives them."""
Target = bool | str | int | float
"""What a record is labelled with, or a model predicts: a class (:data:`Label`) or, for a
regression model, a number. ``bool`` comes first only to keep a JSON ``true`` a boolean (a
label type without it reads ``true`` as the integer 1): ingest takes it as the class 1 of a
classifier, and refuses it as a regression label."""
FeatureValue = bool | float | str | None
"""A feature's value in an event: a number, a category (string), a flag, or null (missing)."""


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

    ``features`` hold numbers, strings (categories), booleans or ``None`` (missing), and may
    hold non-finite numbers: the contract carries what the annotator sent, and ingest's
    validation checks it against the spec's feature types and rejects with a named rule.
    ``inference_id`` is set when the label is ground truth for an earlier prediction.
    ``label`` is a class, or a number for a regression model (ingest checks it is finite and
    in the spec's range).
    """

    record_id: Annotated[str, Field(min_length=1, max_length=256)]
    features: dict[str, FeatureValue]
    label: Target
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
    """A record ingest refused, with the original payload and every failed rule.

    The payload is verbatim unless the whole event would not fit in one message
    (:meth:`of`): then ``payload`` is its beginning, ``payload_truncated`` says so, and
    ``reasons`` may keep only the first rules (``reasons_omitted`` counts the others).
    """

    payload: str
    reasons: Annotated[list[RejectionReason], Field(min_length=1)]
    source: SourcePosition
    payload_truncated: bool = False
    """True when ``payload`` holds only the beginning of the original value."""
    payload_bytes: Annotated[int, Field(ge=0)] | None = None
    """Size of the original value in bytes (None in events written before it was recorded)."""
    reasons_omitted: Annotated[int, Field(ge=0)] = 0
    """Failed rules left out of ``reasons`` (the first ones are kept) so the event fits one message."""

    @classmethod
    def of(
        cls,
        model: str,
        value: bytes | None,
        reasons: list[RejectionReason],
        source: SourcePosition,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> AnnotationRejected:
        """The rejection of the raw record ``value``, bounded to ``max_bytes`` as a record
        (its JSON and its key, the model name).

        What fits is kept whole, as it always was. Otherwise the reasons get up to half the
        room (the first ones, each text clipped to :data:`REASON_TEXT_BYTES`) and the payload's
        beginning fills the rest.

        >>> where = SourcePosition(topic=topics.ANNOTATIONS, partition=0, offset=9)
        >>> why = [RejectionReason(field="features.x", rule="type", message="x is numeric")]
        >>> small = AnnotationRejected.of("credit", b'{"x": "a"}', why, where)
        >>> (small.payload, small.payload_truncated, small.payload_bytes)
        ('{"x": "a"}', False, 10)
        >>> big = AnnotationRejected.of("credit", b"y" * 50_000, why, where, max_bytes=20_000)
        >>> big.payload_truncated, big.payload_bytes, big.record_size() <= 20_000
        (True, 50000, True)
        """
        raw = value or b""
        text = raw.decode("utf-8", "replace")
        if len(raw) < max_bytes:  # the payload alone is at least this long in JSON
            whole = cls(model=model, payload=text, reasons=reasons, source=source, payload_bytes=len(raw))
            if whole.record_size() <= max_bytes:
                return whole
        clipped = [
            RejectionReason(
                field=clip_json_text(r.field, REASON_TEXT_BYTES),
                rule=clip_json_text(r.rule, REASON_TEXT_BYTES),
                message=clip_json_text(r.message, REASON_TEXT_BYTES),
            )
            for r in reasons
        ]
        shell = cls(
            model=model,
            payload="",
            reasons=clipped[:1],
            source=source,
            payload_truncated=True,
            payload_bytes=len(raw),
            reasons_omitted=len(reasons) - 1,
        )
        room = max_bytes // 2 - shell.record_size()
        kept = 1
        for reason in clipped[1:]:
            room -= len(encode_event(reason)) + 1
            if room < 0:
                break
            kept += 1
        shell = shell.model_copy(update={"reasons": clipped[:kept], "reasons_omitted": len(reasons) - kept})
        budget = max_bytes - shell.record_size() + len(b'""')
        while True:
            head = clip_json_text(text, budget)
            event = shell.model_copy(update={"payload": head, "payload_truncated": len(head) < len(text)})
            over = event.record_size() - max_bytes
            if over <= 0 or not head:
                return event
            budget -= over

    def record_size(self) -> int:
        """Bytes of the record this event is published as: its JSON and its key (the model name)."""
        return len(encode_event(self)) + len(self.model.encode())


# --- datasets ------------------------------------------------------------------------------


class DatasetVersionCreated(Event):
    """A new immutable dataset version was written (shards and manifest are durable)."""

    version: Annotated[int, Field(ge=1)]
    manifest_key: str
    rows_total: Annotated[int, Field(ge=0)]
    rows_added: Annotated[int, Field(ge=0)]
    label_counts: dict[str, int]
    """Rows per class in the whole version (empty for a regression label: see ``label_summary``)."""
    schema_hash: str
    label_summary: dict[str, float] | None = None
    """A regression label's summary over the whole version: count, mean, std, min, p50, max."""


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
    ``classes`` order, ``latency_ms[i]`` and ``predicted_at[i]``. For a regression model
    ``labels[i]`` is the predicted number, ``classes`` is empty and so is each
    ``probabilities`` row. Columns, and many predictions
    per message, because one message per prediction costs the serving path 20–75% of its
    throughput (measured; the inference benchmark compares logging on and off).
    """

    version: Annotated[int, Field(ge=1)]
    variant: Literal["champion", "canary", "shadow"]
    feature_names: Annotated[list[str], Field(min_length=1)]
    classes: list[str]
    inference_ids: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    features: list[list[FeatureValue]]
    labels: list[Target]
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


class _PredictionsLoggedParsedRows(PredictionsLogged):
    """:class:`PredictionsLogged` with its ``features`` cells taken as parsed: the first step of
    :func:`_decode_numeric_predictions` (every other field, and the columns' line-up, validated
    as the event validates them)."""

    features: list[list[Any]]


_NUMERIC_ROWS: TypeAdapter[list[list[float | None]]] = TypeAdapter(list[list[StrictFloat | None]])
"""Feature rows of numbers and nulls only (ints read as floats, as :data:`FeatureValue` reads them)."""


def _decode_numeric_predictions(data: bytes | str) -> PredictionsLogged | None:
    """A :class:`PredictionsLogged` whose features are all numbers or null, decoded about 2.3x
    faster than by its own validator; None for anything else (categories, flags, a value the
    event refuses), which the caller decodes the full way -- so the result, and the error for
    bad input, are the event's own.

    The event's ``features`` are ``list[list[FeatureValue]]``, a four-way union validated per
    cell: at 300 features it was the largest cost of decoding a message (115 ns a value; 50 ns
    this way, measured on messages of 165 rows). A numeric model's cells are numbers and nulls,
    which one strict ``float | None`` check of the parsed rows validates to the very values the
    union gives (an integer as its float; a bool or a string fails the check and takes the full
    path).
    """
    try:
        parsed = _PredictionsLoggedParsedRows.model_validate_json(data)
        rows = _NUMERIC_ROWS.validate_python(parsed.features, strict=True)
    except ValidationError:
        return None
    fields = dict(parsed.__dict__)
    fields["features"] = rows
    return PredictionsLogged.model_construct(_fields_set=set(parsed.model_fields_set), **fields)


# --- dead letters --------------------------------------------------------------------------


class DeadLetter(Contract):
    """What ``<topic>.dlq`` receives: the original bytes and why they could not be handled.

    Not an :class:`Event` (it has no model of its own: the bytes may not even be JSON).
    ``payload`` is the original value decoded as UTF-8 with replacement; ``payload_hex``
    keeps the exact bytes. A letter must fit in one message, or the consumer could never
    move past what it dead-letters: when the whole would not (a value carried twice takes
    three times its size), both hold only the value's first bytes, ``payload_truncated``
    says so and ``payload_bytes`` gives the original size (:meth:`of`).
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    failed_at: UtcDatetime = Field(default_factory=utc_now)
    reason: str
    source: SourcePosition
    key: str | None
    payload: str
    payload_hex: str
    payload_truncated: bool = False
    """True when ``payload`` and ``payload_hex`` hold only the first bytes of the value."""
    payload_bytes: Annotated[int, Field(ge=0)] | None = None
    """Size of the original value in bytes (None in letters written before it was recorded)."""

    @classmethod
    def of(
        cls,
        reason: str,
        source: SourcePosition,
        key: bytes | None,
        value: bytes | None,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> DeadLetter:
        """Build a dead letter from the raw record, at most ``max_bytes`` as a record (its JSON
        and its key).

        A record that fits is kept whole. Otherwise the reason is clipped to a quarter of
        the room, the key to :data:`DEAD_LETTER_KEY_BYTES`, and ``payload`` and
        ``payload_hex`` keep the first bytes of the value that fit in the rest.

        >>> where = SourcePosition(topic=topics.ANNOTATIONS, partition=0, offset=3)
        >>> small = DeadLetter.of("not JSON", where, b"m", b"{oops")
        >>> small.original_bytes(), small.payload_truncated, small.payload_bytes
        (b'{oops', False, 5)
        >>> big = DeadLetter.of("not JSON", where, b"m", b"z" * 100_000, max_bytes=30_000)
        >>> big.payload_truncated, big.payload_bytes, big.record_size() <= 30_000
        (True, 100000, True)
        >>> big.original_bytes() == b"z" * len(big.original_bytes()) and big.payload == "z" * len(big.payload)
        True
        """
        raw = value or b""
        key_text = None if key is None else key.decode("utf-8", "replace")
        if 3 * len(raw) + len(reason) < max_bytes:  # hex and text take at least three bytes per byte
            whole = cls(
                reason=reason,
                source=source,
                key=key_text,
                payload=raw.decode("utf-8", "replace"),
                payload_hex=raw.hex(),
                payload_bytes=len(raw),
            )
            if whole.record_size() <= max_bytes:
                return whole
        shell = cls(
            reason=clip_json_text(reason, max_bytes // 4),
            source=source,
            key=None if key_text is None else clip_json_text(key_text, DEAD_LETTER_KEY_BYTES),
            payload="",
            payload_hex="",
            payload_truncated=True,
            payload_bytes=len(raw),
        )
        base = shell.record_size()
        room = max_bytes - base
        kept = min(len(raw), max(0, room // 3))  # a byte takes three bytes or more: two hex digits, its text
        while True:
            head = raw[:kept]
            letter = shell.model_copy(update={"payload": head.decode("utf-8", "replace"), "payload_hex": head.hex()})
            size = letter.record_size()
            if size <= max_bytes or kept == 0:
                return letter
            kept = max(0, min(kept - 1, room * kept // (size - base)))  # what these bytes cost each

    def original_bytes(self) -> bytes:
        """The record's value exactly as it was read (its first bytes, when ``payload_truncated``)."""
        return bytes.fromhex(self.payload_hex)

    def record_size(self) -> int:
        """Bytes of the record this letter is published as: its JSON and its key."""
        return len(encode_event(self)) + (0 if self.key is None else len(self.key.encode()))


REASON_TEXT_BYTES = 1024
"""What each text of a rejection reason keeps (in JSON bytes) when a rejection must be bounded."""
DEAD_LETTER_KEY_BYTES = 1024
"""What a dead letter's key keeps (in JSON bytes) when the letter must be bounded."""


def clip_json_text(text: str, max_bytes: int) -> str:
    """``text``, or its beginning, such that it takes at most ``max_bytes`` as a JSON string.

    For what an event carries from outside (payloads, keys, reasons), so a message stays
    under the broker's limit. Quotes count; escapes and multi-byte characters count as
    what they take in JSON.

    >>> clip_json_text("hello", 7), clip_json_text("hello", 5), clip_json_text('"quoted"', 8)
    ('hello', 'hel', '"quot')
    """
    size = len(orjson.dumps(text))
    if size <= max_bytes:
        return text
    keep = min(len(text), max(0, len(text) * max_bytes // size))  # the average bytes per character
    while keep > 0:
        over = len(orjson.dumps(text[:keep])) - max_bytes
        if over <= 0:
            break
        keep = max(0, keep - over)  # each character takes at least one byte
    return text[:keep]


# --- topic ↔ event, encoding ---------------------------------------------------------------

ContractT = TypeVar("ContractT", bound=Contract)

EVENT_FOR_TOPIC: dict[str, type[Event]] = {
    topics.ANNOTATIONS: AnnotationSubmitted,
    topics.ANNOTATIONS_REJECTED: AnnotationRejected,
    topics.ANNOTATIONS_GROUND_TRUTH: AnnotationSubmitted,  # forwarded annotations, as they were
    topics.DATASETS: DatasetVersionCreated,
    topics.DRIFT: DriftDetected,
    topics.TRAINING_COMPLETED: TrainingCompleted,
    topics.DEPLOYMENTS: DeploymentChanged,
    topics.PREDICTIONS: PredictionsLogged,
}
TOPIC_FOR_EVENT: dict[type[Event], str] = {
    cls: topic for topic, cls in reversed(EVENT_FOR_TOPIC.items())
}  # the first topic of a class is where its events are published (an annotation's is ``annotations``)


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
    """Parse JSON bytes into ``cls``, raising :class:`InvalidEvent` with a readable message.

    A numeric model's :class:`PredictionsLogged` takes a faster path to the same event
    (:func:`_decode_numeric_predictions`); anything else, and every error, is the model's own.
    """
    if cls is PredictionsLogged:
        fast = _decode_numeric_predictions(data)
        if fast is not None:
            return fast  # type: ignore[return-value]  # cls is PredictionsLogged
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
