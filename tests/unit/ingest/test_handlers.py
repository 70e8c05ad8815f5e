"""Ingest's use-cases on a FileStore, with a recording publisher as the only fake.

Covered: valid records are buffered and a flush turns them into one dataset version per model,
announced by ``DatasetVersionCreated``, before the consumed offsets are released; resent
record ids are stored once (inside a window, across flushes and across a restart, which also
re-announces the newest version); each invalid record is rejected on ``annotations.rejected``
with the rule it broke and never stored; the rejections are acknowledged before the offsets are
released; the flush policy by size and by age; the window's checks in the manifest; records buffered
while their spec is deleted or changed keep the schema they were checked against; typed features
(categorical, boolean, missing) are stored as typed columns and rejected by their own rules.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from services.ingest.core import FlushPolicy
from services.ingest.handlers import AdmissionDeferred, IngestHandlers
from services.ingest.metrics import IngestMetrics
from shared import topics
from shared.bus import Delivery
from shared.datasets import DatasetRepository
from shared.errors import BrokerUnavailable
from shared.events import (
    DEFAULT_MAX_MESSAGE_BYTES,
    AnnotationRejected,
    AnnotationSubmitted,
    DatasetVersionCreated,
    Event,
    SourcePosition,
    encode_event,
)
from shared.spec import SpecCatalog, apply_spec, parse_spec, spec_key
from shared.store import FileStore

SPEC = """
name: {name}
features: [{{name: a}}, {{name: b, min: 0, max: 100}}, {{name: c, allow_missing: true}}]
label: {{values: ["no", "yes"]}}
validation: {{min_confidence: 0.5, max_rejection_rate: 0.2}}
"""
MODEL = "credit"


@dataclass
class RecordingPublisher:
    """The publisher seam: events published (acknowledged at once) and records enqueued."""

    events: list[Event] = field(default_factory=list)
    enqueued: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    dead_letters: list[tuple[SourcePosition, bytes | None, str]] = field(default_factory=list)
    acknowledge: bool = True
    reachable: bool = True
    """False: the broker cannot be reached, and every send raises at once."""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    async def publish(self, event: Event, headers: Any = None) -> None:
        self.events.append(event)

    async def dead_letter(self, position: SourcePosition, key: bytes | None, value: bytes | None, reason: str) -> None:
        if not self.reachable:
            raise BrokerUnavailable("broker unreachable")
        self.dead_letters.append((position, value, reason))

    async def enqueue(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
        if not self.reachable:
            raise BrokerUnavailable("broker unreachable")
        self.enqueued.append((topic, value, key))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.acknowledge:
            future.set_result(None)
        else:
            future.set_exception(KafkaError("broker went away"))
        return future

    def announced(self) -> list[DatasetVersionCreated]:
        return [e for e in self.events if isinstance(e, DatasetVersionCreated)]

    def rejections(self) -> list[AnnotationRejected]:
        assert all(topic == topics.ANNOTATIONS_REJECTED for topic, _, _ in self.enqueued)
        return [AnnotationRejected.model_validate_json(value) for _, value, _ in self.enqueued]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Ingest:
    """One ingest replica on a store: its handlers, publisher, metrics and released offsets."""

    def __init__(
        self,
        store: FileStore,
        policy: FlushPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        catalog: SpecCatalog | None = None,
        max_kept: int = 10_000,
    ) -> None:
        self.store = store
        self.publisher = RecordingPublisher()
        self.registry = CollectorRegistry()
        self.handlers = IngestHandlers(
            repo=DatasetRepository(store),
            catalog=catalog or SpecCatalog(store, refresh_s=60.0),
            publisher=self.publisher,  # type: ignore[arg-type]
            metrics=IngestMetrics.create(self.registry),
            policy=policy or FlushPolicy(max_rows=10_000, max_age_s=3600.0),
            clock=clock,
            max_kept=max_kept,
        )
        self.releases = 0
        self.held: dict[tuple[str, int], int] = {}
        self.handlers.release = self._release
        self._offset = 0

    def _release(self, holding: Mapping[tuple[str, int], int] | None = None) -> None:
        self.releases += 1
        self.held = dict(holding or {})

    async def send(self, *messages: AnnotationSubmitted) -> None:
        for message in messages:
            await self.send_bytes(encode_event(message), message.model)

    async def send_bytes(self, value: bytes, key: str = MODEL) -> None:
        """Deliver raw bytes as the subscriber would, as a poll of one message."""
        await self.keep_bytes(value, key)
        await self.handlers.validate_kept()

    async def keep(self, *messages: AnnotationSubmitted) -> None:
        """Deliver messages as one poll would, before its after-poll step validates them together."""
        for message in messages:
            await self.keep_bytes(encode_event(message), message.model)

    async def keep_bytes(self, value: bytes, key: str = MODEL, partition: int = 0) -> Delivery:
        delivery = Delivery(topics.ANNOTATIONS, partition, self._offset, key.encode(), value, 0)
        self._offset += 1
        await self.handlers.on_annotation(value, delivery)
        return delivery

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


def annotation(i: int, model: str = MODEL, **overrides: Any) -> AnnotationSubmitted:
    body: dict[str, Any] = {
        "model": model,
        "record_id": f"r{i}",
        "features": {"a": float(i), "b": float(i % 100), "c": 0.5},
        "label": "yes" if i % 2 else "no",
        "confidence": 0.9,
    }
    body.update(overrides)
    return AnnotationSubmitted.model_validate(body)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "store")
    apply_spec(store, SPEC.format(name=MODEL))
    return store


async def test_valid_records_wait_in_the_buffer_until_a_flush_writes_and_announces_one_version(
    store: FileStore,
) -> None:
    ingest = Ingest(store)
    repo = DatasetRepository(store)
    await ingest.send(*(annotation(i) for i in range(5)), annotation(5, features={"a": 5.0, "b": 5.0}))

    assert ingest.handlers.buffered_rows == 6
    assert repo.latest_version(MODEL) is None and ingest.publisher.events == [] and ingest.releases == 0

    await ingest.handlers.flush()

    manifest = repo.manifest(MODEL)
    assert manifest.version == 1 and manifest.rows_total == 6 and manifest.rows_added == 6
    assert manifest.features == ["a", "b", "c"] and manifest.label_counts == {"no": 3, "yes": 3}
    data = repo.load(MODEL)
    assert sorted(data.record_ids.tolist()) == [f"r{i}" for i in range(6)]
    row = data.record_ids.tolist().index("r3")
    assert data.X[row].tolist() == [3.0, 3.0, 0.5], "features are stored in the spec's order"
    assert math.isnan(data.X[data.record_ids.tolist().index("r5")][2]), "an allowed missing value is stored as NaN"

    [event] = ingest.publisher.announced()
    assert (event.model, event.version, event.rows_total, event.rows_added) == (MODEL, 1, 6, 6)
    assert event.manifest_key == f"datasets/{MODEL}/versions/1.json" and store.exists(event.manifest_key)
    assert event.label_counts == {"no": 3, "yes": 3}
    assert event.schema_hash == parse_spec(SPEC.format(name=MODEL)).schema_hash()
    assert ingest.releases == 1 and ingest.handlers.buffered_rows == 0
    assert ingest.metric("driftloop_ingest_accepted_records_total", model=MODEL) == 6
    assert ingest.metric("driftloop_ingest_dataset_versions_total", model=MODEL) == 1


async def test_each_flush_adds_a_version_on_top_of_the_previous_one(store: FileStore) -> None:
    ingest = Ingest(store)
    repo = DatasetRepository(store)
    await ingest.send(*(annotation(i) for i in range(4)))
    await ingest.handlers.flush()
    await ingest.send(*(annotation(i) for i in range(4, 7)))
    await ingest.handlers.flush()

    second = repo.manifest(MODEL)
    assert (second.version, second.parent_version, second.rows_total, second.rows_added) == (2, 1, 7, 3)
    assert [(e.version, e.rows_total) for e in ingest.publisher.announced()] == [(1, 4), (2, 7)]
    assert len(repo.load(MODEL).record_ids) == 7


async def test_one_version_per_model_in_a_flush(store: FileStore) -> None:
    apply_spec(store, SPEC.format(name="fraud"))
    ingest = Ingest(store)
    await ingest.send(annotation(1), annotation(2, model="fraud"), annotation(3, model="fraud"))
    await ingest.handlers.flush()

    repo = DatasetRepository(store)
    assert repo.manifest(MODEL).rows_total == 1 and repo.manifest("fraud").rows_total == 2
    assert sorted((e.model, e.rows_total) for e in ingest.publisher.announced()) == [(MODEL, 1), ("fraud", 2)]
    assert ingest.releases == 1, "one release for the whole flush"


async def test_a_record_id_sent_twice_in_one_window_is_stored_once(store: FileStore) -> None:
    ingest = Ingest(store)
    first = annotation(1)
    resent = first.model_copy(update={"features": {"a": 99.0, "b": 1.0, "c": 0.0}})  # a new event, same record
    await ingest.send(first, resent, annotation(2))
    assert ingest.handlers.buffered_rows == 2

    await ingest.handlers.flush()
    data = DatasetRepository(store).load(MODEL)
    assert sorted(data.record_ids.tolist()) == ["r1", "r2"]
    assert data.X[data.record_ids.tolist().index("r1")][0] == 1.0, "the first copy is the one kept"
    assert ingest.metric("driftloop_ingest_duplicate_records_total", model=MODEL) == 1
    assert DatasetRepository(store).manifest(MODEL).checks["rejections"]["duplicates"] == 1


async def test_a_record_id_already_stored_is_skipped_and_a_window_of_only_duplicates_writes_nothing(
    store: FileStore,
) -> None:
    ingest = Ingest(store)
    await ingest.send(annotation(1), annotation(2))
    await ingest.handlers.flush()
    await ingest.send(annotation(1), annotation(2))
    assert ingest.handlers.buffered_rows == 0
    await ingest.handlers.flush()

    repo = DatasetRepository(store)
    assert repo.versions(MODEL) == [1] and repo.manifest(MODEL).rows_total == 2
    assert len(ingest.publisher.announced()) == 1
    assert ingest.releases == 2, "the duplicates' offsets are released too: they are handled"
    assert ingest.metric("driftloop_ingest_duplicate_records_total", model=MODEL) == 2


async def test_a_window_redelivered_after_a_crash_is_stored_once_and_the_newest_version_announced_again(
    store: FileStore,
) -> None:
    crashed = Ingest(store)  # wrote version 1, then died before its offsets were committed
    await crashed.send(*(annotation(i) for i in range(5)))
    await crashed.handlers.flush()

    restarted = Ingest(store)
    await restarted.send(*(annotation(i) for i in range(6)))  # Kafka redelivers the window, plus one new record
    assert restarted.handlers.buffered_rows == 1
    await restarted.handlers.flush()

    repo = DatasetRepository(store)
    assert repo.manifest(MODEL).rows_total == 6 and repo.manifest(MODEL).rows_added == 1
    assert sorted(repo.load(MODEL).record_ids.tolist()) == [f"r{i}" for i in range(6)]
    # the crash may have come between the manifest and its event: the restart announces version 1 again
    assert [(e.version, e.rows_total) for e in restarted.publisher.announced()] == [(1, 5), (2, 6)]
    assert restarted.metric("driftloop_ingest_duplicate_records_total", model=MODEL) == 5


@pytest.mark.parametrize(
    ("change", "rule", "field_name"),
    [
        ({"features": {"a": 1.0, "c": 0.0}}, "missing", "features.b"),
        ({"features": {"a": float("inf"), "b": 1.0, "c": 0.0}}, "finite", "features.a"),
        ({"features": {"a": 1.0, "b": 101.0, "c": 0.0}}, "range", "features.b"),
        ({"features": {"a": 1.0, "b": 1.0, "c": 0.0, "d": 1.0}}, "unknown_feature", "features.d"),
        ({"label": "perhaps"}, "label", "label"),
        ({"confidence": 0.1}, "min_confidence", "confidence"),
    ],
)
async def test_an_invalid_record_is_rejected_with_its_rule_and_never_stored(
    store: FileStore, change: dict[str, Any], rule: str, field_name: str
) -> None:
    ingest = Ingest(store)
    body = {**json.loads(encode_event(annotation(7))), "record_id": "bad", **change}
    sent = json.dumps(body).encode()  # json.dumps writes Infinity, as Python producers do
    await ingest.send_bytes(sent)
    await ingest.send(annotation(1))

    [rejected] = ingest.publisher.rejections()
    assert ingest.publisher.enqueued[0][2] == MODEL.encode(), "keyed by model, like every topic"
    assert rejected.model == MODEL and [(r.rule, r.field) for r in rejected.reasons] == [(rule, field_name)]
    assert rejected.payload == sent.decode() and rejected.reasons[0].message
    assert (rejected.source.topic, rejected.source.partition, rejected.source.offset) == (topics.ANNOTATIONS, 0, 0)
    assert ingest.handlers.buffered_rows == 1
    assert ingest.metric("driftloop_ingest_rejected_records_total", model=MODEL, rule=rule) == 1

    await ingest.handlers.flush()
    assert DatasetRepository(store).load(MODEL).record_ids.tolist() == ["r1"]


async def test_a_record_failing_several_rules_is_rejected_once_with_every_reason(store: FileStore) -> None:
    ingest = Ingest(store)
    await ingest.send(annotation(1, features={"a": 1.0, "b": -5.0}, label="maybe", confidence=0.2))

    [rejected] = ingest.publisher.rejections()
    assert sorted(r.rule for r in rejected.reasons) == ["label", "min_confidence", "range"]
    for rule in ("label", "min_confidence", "range"):
        assert ingest.metric("driftloop_ingest_rejected_records_total", model=MODEL, rule=rule) == 1


async def test_a_rejection_too_large_for_one_message_keeps_the_beginning_of_its_payload(store: FileStore) -> None:
    """A 3 MB annotation with a 3 MB string where a number belongs: its rejection still fits."""
    ingest = Ingest(store)
    huge = {**json.loads(encode_event(annotation(1))), "record_id": "huge"}
    huge["features"] = {"a": "x" * 3_000_000, "b": 1.0, "c": 0.5}
    sent = json.dumps(huge).encode()
    await ingest.send_bytes(sent)
    small = json.dumps({**json.loads(encode_event(annotation(2))), "label": "maybe"}).encode()
    await ingest.send_bytes(small)

    (_, value, key), (_, normal, _) = ingest.publisher.enqueued
    assert len(value) + len(key or b"") <= DEFAULT_MAX_MESSAGE_BYTES
    big, rejected = ingest.publisher.rejections()
    assert big.payload_truncated and big.payload_bytes == len(sent) and sent.decode().startswith(big.payload)
    assert len(big.payload) > 900_000, "what fits is kept"
    assert [(r.field, r.rule) for r in big.reasons] == [("features.a", "type")] and big.reasons_omitted == 0
    assert not rejected.payload_truncated and rejected.payload == small.decode()
    assert rejected.payload_bytes == len(small) and rejected.reasons_omitted == 0
    assert ingest.metric("driftloop_ingest_rejected_records_total", model=MODEL, rule="type") == 1


async def test_a_rejection_with_more_reasons_than_fit_keeps_the_first_and_counts_the_rest(store: FileStore) -> None:
    ingest = Ingest(store)
    ingest.publisher.max_message_bytes = 50_000
    features = {"a": 1.0, "b": 1.0, "c": 0.5, **{f"extra_{i:05d}": 1.0 for i in range(5_000)}}
    sent = encode_event(annotation(1, features=features))
    await ingest.send_bytes(sent)

    [(_, value, key)] = ingest.publisher.enqueued
    assert len(value) + len(key or b"") <= 50_000
    [rejected] = ingest.publisher.rejections()
    assert rejected.payload_truncated and rejected.payload_bytes == len(sent)
    kept = len(rejected.reasons)
    assert 10 < kept < 5_000 and kept + rejected.reasons_omitted == 5_000
    assert {r.rule for r in rejected.reasons} == {"unknown_feature"}
    assert ingest.metric("driftloop_ingest_rejected_records_total", model=MODEL, rule="unknown_feature") == 1


async def test_a_record_for_a_model_without_spec_is_rejected_as_unknown(store: FileStore) -> None:
    ingest = Ingest(store)
    await ingest.send(annotation(1, model="nospec"))

    [rejected] = ingest.publisher.rejections()
    assert rejected.model == "nospec" and [(r.field, r.rule) for r in rejected.reasons] == [("model", "known_model")]
    assert "specs apply" in rejected.reasons[0].message
    assert ingest.handlers.buffered_rows == 0


async def test_json_that_is_not_an_annotation_is_rejected_with_the_schema_rule(store: FileStore) -> None:
    ingest = Ingest(store)
    await ingest.send_bytes(b'{"model": "credit", "record_id": 3}')

    [rejected] = ingest.publisher.rejections()
    assert rejected.model == MODEL and {r.rule for r in rejected.reasons} == {"schema"}
    assert "record_id" in {r.field for r in rejected.reasons}
    assert rejected.payload == '{"model": "credit", "record_id": 3}'


async def test_rejections_alone_are_acknowledged_and_released_on_the_next_poll(store: FileStore) -> None:
    ingest = Ingest(store)
    await ingest.send(annotation(1, label="perhaps"))
    assert ingest.releases == 0

    await ingest.handlers.after_poll()
    assert ingest.releases == 1 and DatasetRepository(store).latest_version(MODEL) is None
    assert ingest.metric("driftloop_ingest_rejection_rate_ratio", model=MODEL) == 1.0

    await ingest.handlers.after_poll()
    assert ingest.releases == 1, "nothing new: nothing to release"


async def test_no_offset_is_released_while_the_broker_has_not_acknowledged_the_rejections(store: FileStore) -> None:
    ingest = Ingest(store)
    ingest.publisher.acknowledge = False
    await ingest.send(annotation(1, label="perhaps"), annotation(2))

    with pytest.raises(BrokerUnavailable):
        await ingest.handlers.flush()
    assert ingest.releases == 0 and DatasetRepository(store).latest_version(MODEL) is None
    assert ingest.handlers.buffered_rows == 1, "the accepted record waits for the next flush"


async def test_after_poll_flushes_once_the_buffer_reaches_max_rows(store: FileStore) -> None:
    ingest = Ingest(store, FlushPolicy(max_rows=3, max_age_s=3600.0))
    await ingest.send(annotation(1), annotation(2))
    await ingest.handlers.after_poll()
    assert DatasetRepository(store).latest_version(MODEL) is None and ingest.releases == 0
    assert ingest.metric("driftloop_ingest_buffered_rows") == 2

    await ingest.send(annotation(3))
    await ingest.handlers.after_poll()
    assert DatasetRepository(store).manifest(MODEL).rows_total == 3 and ingest.releases == 1
    assert ingest.metric("driftloop_ingest_buffered_rows") == 0


async def test_after_poll_flushes_once_the_oldest_buffered_record_is_max_age_old(store: FileStore) -> None:
    clock = FakeClock()
    ingest = Ingest(store, FlushPolicy(max_rows=10_000, max_age_s=5.0), clock)
    await ingest.send(annotation(1))
    clock.now += 4.0
    await ingest.send(annotation(2))
    clock.now += 0.9
    await ingest.handlers.after_poll()
    assert DatasetRepository(store).latest_version(MODEL) is None, "4.9 s: not yet"

    clock.now += 0.1
    await ingest.handlers.after_poll()
    assert DatasetRepository(store).manifest(MODEL).rows_total == 2 and ingest.releases == 1

    clock.now += 100.0
    await ingest.handlers.after_poll()
    assert ingest.releases == 1, "an empty buffer has no age: nothing to flush"
    await ingest.send(annotation(3))
    clock.now += 4.9
    await ingest.handlers.after_poll()
    assert ingest.releases == 1, "the age counts from the first record after the last flush"


async def test_drain_makes_everything_consumed_durable(store: FileStore) -> None:
    ingest = Ingest(store)
    await ingest.send(annotation(1), annotation(2, label="perhaps"))
    await ingest.handlers.drain()

    assert DatasetRepository(store).manifest(MODEL).rows_total == 1
    assert len(ingest.publisher.rejections()) == 1 and ingest.releases == 1


async def test_the_manifest_records_the_windows_rejections_and_a_high_rate_raises_the_alarm(
    store: FileStore,
) -> None:
    ingest = Ingest(store)
    await ingest.send(*(annotation(i) for i in range(30)))
    await ingest.send(*(annotation(i, label="perhaps") for i in range(100, 190)))
    await ingest.handlers.flush()

    rejections = DatasetRepository(store).manifest(MODEL).checks["rejections"]
    assert rejections["accepted"] == 30 and rejections["rejected"] == 90 and rejections["rate"] == 0.75
    assert rejections["by_rule"] == {"label": 90} and rejections["flagged"] is True
    assert ingest.metric("driftloop_ingest_rejection_alarm", model=MODEL) == 1
    assert ingest.metric("driftloop_ingest_rejection_rate_ratio", model=MODEL) == 0.75

    await ingest.send(*(annotation(i) for i in range(200, 330)))
    await ingest.handlers.flush()
    assert ingest.metric("driftloop_ingest_rejection_alarm", model=MODEL) == 0, "a clean window clears it"


async def test_batches_below_min_batch_rows_are_judged_together_with_the_next(store: FileStore) -> None:
    ingest = Ingest(store)
    repo = DatasetRepository(store)
    await ingest.send(*(annotation(i) for i in range(200)))  # the dataset to compare with
    await ingest.handlers.flush()
    # 30 rows, all "yes", 20 rejections: a total shift and a 40 % rejection rate, on 50 records
    await ingest.send(*(annotation(2 * i + 1001) for i in range(30)))
    await ingest.send(*(annotation(i, label="perhaps") for i in range(500, 520)))
    await ingest.handlers.flush()
    small = repo.manifest(MODEL).checks
    assert small["label_shift"]["deferred"] is True and small["label_shift"]["flagged"] is False
    assert small["rejections"]["deferred"] is True and small["rejections"]["flagged"] is False
    assert ingest.metric("driftloop_ingest_rejection_alarm", model=MODEL) == 0
    assert ingest.metric("driftloop_ingest_label_shift_flags_total", model=MODEL) in (None, 0.0)

    # the next batch brings the carried one over the minimum: both are judged as one window
    await ingest.send(*(annotation(2 * i + 2001) for i in range(40)))
    await ingest.send(*(annotation(i, label="perhaps") for i in range(600, 630)))
    await ingest.handlers.flush()
    judged = repo.manifest(MODEL).checks
    assert judged["label_shift"]["batches"] == 2 and judged["label_shift"]["batch_rows"] == 70
    assert judged["label_shift"]["batch_label_counts"] == {"yes": 70}
    assert judged["label_shift"]["flagged"] is True and judged["label_shift"]["deferred"] is False
    assert judged["rejections"]["rejected"] == 50 and judged["rejections"]["accepted"] == 70
    assert judged["rejections"]["flagged"] is True
    assert ingest.metric("driftloop_ingest_rejection_alarm", model=MODEL) == 1

    await ingest.send(*(annotation(i) for i in range(3000, 3150)))  # judged alone, and clean
    await ingest.handlers.flush()
    clean = repo.manifest(MODEL).checks
    assert clean["label_shift"]["batches"] == 1 and clean["rejections"]["flagged"] is False


async def test_records_buffered_when_their_spec_is_deleted_are_not_lost(store: FileStore) -> None:
    ingest = Ingest(store)
    await ingest.send(annotation(1), annotation(2))
    store.delete(spec_key(MODEL))
    ingest.handlers.catalog.refresh()
    await ingest.handlers.flush()

    stored = DatasetRepository(store).latest_version(MODEL) is not None
    assert stored or ingest.releases == 0, "either the records are stored or their offsets are not committed"


async def test_records_buffered_before_a_spec_change_keep_their_values(store: FileStore) -> None:
    ingest = Ingest(store)
    await ingest.send(annotation(7, features={"a": 1.0, "b": 2.0, "c": 3.0}))
    reordered = SPEC.format(name=MODEL).replace("{name: a}, {name: b, min: 0, max: 100}", "{name: b}, {name: a}")
    assert parse_spec(reordered).feature_names == ["b", "a", "c"]
    apply_spec(store, reordered)
    ingest.handlers.catalog.refresh()
    await ingest.handlers.flush()

    data = DatasetRepository(store).load(MODEL)
    columns = DatasetRepository(store).manifest(MODEL).features
    assert dict(zip(columns, data.X[0].tolist(), strict=True)) == {"a": 1.0, "b": 2.0, "c": 3.0}


async def test_a_feature_added_while_records_wait_does_not_wedge_the_flush(store: FileStore) -> None:
    ingest = Ingest(store)
    await ingest.send(annotation(1))
    extended = SPEC.format(name=MODEL).replace(
        "{name: c, allow_missing: true}]", "{name: c, allow_missing: true}, {name: d}]"
    )
    assert parse_spec(extended).feature_names == ["a", "b", "c", "d"]
    apply_spec(store, extended)
    ingest.handlers.catalog.refresh()
    await ingest.handlers.flush()

    assert ingest.releases == 1 and DatasetRepository(store).manifest(MODEL).rows_total == 1


async def test_a_record_under_a_changed_schema_first_flushes_the_records_of_the_old_one(store: FileStore) -> None:
    ingest = Ingest(store)
    await ingest.send(annotation(1, features={"a": 1.0, "b": 2.0, "c": 3.0}))
    reordered = SPEC.format(name=MODEL).replace("{name: a}, {name: b, min: 0, max: 100}", "{name: b}, {name: a}")
    apply_spec(store, reordered)
    ingest.handlers.catalog.refresh()
    await ingest.send(annotation(2, features={"a": 4.0, "b": 5.0, "c": 6.0}))
    repo = DatasetRepository(store)
    first = repo.manifest(MODEL, 1)
    assert first.features == ["a", "b", "c"] and first.rows_added == 1, "the old window, on its own schema"
    await ingest.handlers.flush()
    second = repo.manifest(MODEL, 2)
    assert second.features == ["b", "a", "c"] and second.rows_added == 1


TYPED_SPEC = """
name: car-loan
features:
  - {name: car_value, min: 0}
  - {name: salary_range, type: categorical}
  - {name: downpayment, type: categorical, values: ["0%", "10%", "20%"]}
  - {name: repaid_before, type: boolean, allow_missing: true}
label: {values: ["low", "mid", "high"]}
"""


def loan(i: int, **features: Any) -> bytes:
    body = {
        "model": "car-loan",
        "record_id": f"c{i}",
        "features": {"car_value": 1000.0 * i, "salary_range": i % 3, "downpayment": "10%", "repaid_before": i % 2 == 0}
        | features,
        "label": ["low", "mid", "high"][i % 3],
    }
    return json.dumps(body).encode()


async def test_typed_records_are_stored_as_typed_columns_and_bad_ones_rejected_by_rule(store: FileStore) -> None:
    apply_spec(store, TYPED_SPEC)
    ingest = Ingest(store)
    for i in range(6):
        await ingest.send_bytes(loan(i, repaid_before=None) if i == 5 else loan(i), "car-loan")
    await ingest.send_bytes(loan(10, car_value="a lot"), "car-loan")
    await ingest.send_bytes(loan(11, downpayment="15%"), "car-loan")
    await ingest.send_bytes(loan(12, repaid_before="yes", salary_range=None), "car-loan")
    await ingest.handlers.flush()

    rejected = {r.payload: [(x.field, x.rule) for x in r.reasons] for r in ingest.publisher.rejections()}
    assert list(rejected.values()) == [
        [("features.car_value", "type")],
        [("features.downpayment", "category")],
        [("features.salary_range", "missing"), ("features.repaid_before", "type")],
    ]
    for rule, count in (("type", 2), ("category", 1), ("missing", 1)):
        assert ingest.metric("driftloop_ingest_rejected_records_total", model="car-loan", rule=rule) == count

    repo = DatasetRepository(store)
    manifest = repo.manifest("car-loan")
    assert manifest.checks["rejections"]["by_rule"] == {"type": 2, "category": 1, "missing": 1}
    assert manifest.schema_hash == parse_spec(TYPED_SPEC).schema_hash()
    assert manifest.feature_types == ["numeric", "categorical", "categorical", "boolean"]
    assert manifest.categories["salary_range"] == {"0": 2, "1": 2, "2": 2}, "integer codes are stored as their text"
    assert manifest.categories["repaid_before"] == {"true": 3, "false": 2} and manifest.missing["repaid_before"] == 1
    assert manifest.label_counts == {"low": 2, "mid": 2, "high": 2}
    data = repo.load("car-loan")
    order = [data.record_ids.tolist().index(f"c{i}") for i in range(6)]
    assert data.X.shape == (6, 0) and data.types == manifest.feature_types
    assert data.columns["car_value"][order].tolist() == [1000.0 * i for i in range(6)]
    assert data.columns["salary_range"][order].tolist() == ["0", "1", "2", "0", "1", "2"]
    assert data.columns["repaid_before"][order].tolist() == [True, False, True, False, True, None]
    assert data.y[order].tolist() == ["low", "mid", "high"] * 2


async def test_a_feature_that_changes_type_starts_the_dataset_again_on_the_typed_schema(store: FileStore) -> None:
    ingest = Ingest(store)
    await ingest.send(annotation(1), annotation(2))
    retyped = SPEC.format(name=MODEL).replace("{name: c, allow_missing: true}", "{name: c, type: categorical}")
    apply_spec(store, retyped)
    ingest.handlers.catalog.refresh()
    await ingest.send_bytes(
        json.dumps(
            {"model": MODEL, "record_id": "r3", "features": {"a": 1.0, "b": 2.0, "c": "blue"}, "label": "yes"}
        ).encode()
    )
    await ingest.handlers.flush()

    repo = DatasetRepository(store)
    first, second = repo.manifest(MODEL, 1), repo.manifest(MODEL, 2)
    assert first.feature_types == ["numeric"] * 3 and first.rows_total == 2, "the old window, on its own schema"
    assert second.feature_types == ["numeric", "numeric", "categorical"] and second.rows_total == 1
    assert second.schema_hash != first.schema_hash and second.categories == {"c": {"blue": 1}}
    assert repo.load(MODEL).columns["c"].tolist() == ["blue"]
    assert repo.load(MODEL, 1).X.tolist() == [[1.0, 1.0, 0.5], [2.0, 2.0, 0.5]]


PRICE_SPEC = """
name: price
features: [{name: size, min: 0}, {name: district, type: categorical}]
label: {type: regression, min: 0, max: 100000}
"""


def priced(i: int, label: str) -> bytes:
    """A price annotation with ``label`` as raw JSON text (so NaN and booleans arrive as sent)."""
    features = json.dumps({"size": float(i % 200), "district": ["north", "south"][i % 2]})
    return f'{{"model": "price", "record_id": "p{i}", "features": {features}, "label": {label}}}'.encode()


async def test_regression_labels_are_checked_stored_as_floats_and_summarised(store: FileStore) -> None:
    apply_spec(store, PRICE_SPEC)
    ingest = Ingest(store)
    for i in range(200):
        await ingest.send_bytes(priced(i, str(100 + i) if i % 2 else f"{100.5 + i}"), "price")
    for i, bad in enumerate(['"cheap"', "true", "NaN", "-1", "1e9"], start=1000):
        await ingest.send_bytes(priced(i, bad), "price")
    await ingest.handlers.flush()

    rejected = ingest.publisher.rejections()
    assert [[(r.field, r.rule) for r in x.reasons] for x in rejected] == [[("label", "label")]] * 5
    assert [x.reasons[0].message for x in rejected] == [
        "label 'cheap' is not a number: a regression label is a number",
        "label true is not a number: a regression label is a number",
        "label nan is not finite",
        "label -1.0 is below min 0.0",
        "label 1000000000.0 is above max 100000.0",
    ]
    assert ingest.metric("driftloop_ingest_rejected_records_total", model="price", rule="label") == 5

    repo = DatasetRepository(store)
    manifest = repo.manifest("price")
    expected = [float(100 + i) if i % 2 else 100.5 + i for i in range(200)]
    assert manifest.task == "regression" and manifest.label_counts == {} and manifest.rows_total == 200
    data = repo.load("price")
    assert data.y.dtype.kind == "f" and sorted(data.y.tolist()) == sorted(expected)
    [event] = ingest.publisher.announced()
    assert event.label_counts == {} and event.label_summary == manifest.label_summary()
    assert event.label_summary is not None and event.label_summary["count"] == 200.0
    assert event.label_summary["mean"] == sum(expected) / 200 and event.label_summary["max"] == 299.0
    shift = manifest.checks["label_shift"]
    assert shift["psi"] == 0.0 and shift["flagged"] is False, "nothing to compare the first version with"


async def test_a_shifted_regression_batch_raises_the_label_shift_flag(store: FileStore) -> None:
    apply_spec(store, PRICE_SPEC)
    ingest = Ingest(store)
    repo = DatasetRepository(store)
    await ingest.send_bytes(priced(0, "50"), "price")
    await ingest.handlers.flush()  # a tiny first version does not fix the lineage's bins
    for i in range(1, 800):
        await ingest.send_bytes(priced(i, str(100 + (i * 37) % 100)), "price")
    await ingest.handlers.flush()
    steady = repo.manifest("price")
    assert steady.label_histogram is not None and len(steady.label_histogram.counts) == 10
    for i in range(800, 1200):
        await ingest.send_bytes(priced(i, str(100 + (i * 37) % 100)), "price")
    await ingest.handlers.flush()
    assert repo.manifest("price").checks["label_shift"]["flagged"] is False
    assert ingest.metric("driftloop_ingest_label_shift_flags_total", model="price") in (None, 0.0)

    for i in range(1200, 1500):
        await ingest.send_bytes(priced(i, str(180 + (i * 37) % 100)), "price")  # prices went up
    await ingest.handlers.flush()
    shift = repo.manifest("price").checks["label_shift"]
    assert shift["flagged"] is True and shift["psi"] > 0.2 and shift["batch_rows"] == 300
    assert ingest.metric("driftloop_ingest_label_shift_flags_total", model="price") == 1.0
    assert ingest.metric("driftloop_ingest_label_shift_ratio", model="price") == shift["psi"]


async def test_a_spec_switching_to_regression_starts_a_new_lineage(store: FileStore) -> None:
    ingest = Ingest(store)
    await ingest.send(annotation(1), annotation(2))
    regression = SPEC.format(name=MODEL).replace('label: {values: ["no", "yes"]}', "label: {type: regression}")
    apply_spec(store, regression)
    ingest.handlers.catalog.refresh()
    await ingest.send_bytes(
        json.dumps({"model": MODEL, "record_id": "r3", "features": {"a": 1.0, "b": 2.0, "c": 3.0}, "label": 7}).encode()
    )
    await ingest.send_bytes(
        json.dumps({"model": MODEL, "record_id": "r4", "features": {"a": 1.0, "b": 2.0}, "label": "yes"}).encode()
    )
    await ingest.handlers.flush()

    repo = DatasetRepository(store)
    first, second = repo.manifest(MODEL, 1), repo.manifest(MODEL, 2)
    assert first.task == "classification" and first.label_counts == {"yes": 1, "no": 1}
    assert second.task == "regression" and second.rows_total == 1 and second.schema_hash != first.schema_hash
    assert repo.load(MODEL).y.tolist() == [7.0] and repo.load(MODEL, 1).y.tolist() == ["yes", "no"]
    [rejection] = ingest.publisher.rejections()
    assert [(r.field, r.rule) for r in rejection.reasons] == [("label", "label")]


async def test_each_model_flushes_on_its_own_rows_and_offsets_stay_held_below_a_waiting_window(
    store: FileStore,
) -> None:
    apply_spec(store, SPEC.format(name="fraud"))
    ingest = Ingest(store, FlushPolicy(max_rows=5, max_age_s=3600.0))
    repo = DatasetRepository(store)
    await ingest.send(annotation(1, model="fraud"), annotation(2, model="fraud"))  # offsets 0, 1
    await ingest.send(*(annotation(i) for i in range(10, 15)))  # offsets 2-6: MODEL's window is full
    await ingest.handlers.after_poll()

    assert repo.manifest(MODEL).rows_total == 5, "MODEL flushed on its own five rows"
    assert repo.latest_version("fraud") is None, "fraud's two rows wait for fraud's own threshold"
    assert ingest.releases == 1 and ingest.held == {(topics.ANNOTATIONS, 0): 0}, "commit stops at fraud's first row"

    await ingest.send(*(annotation(i, model="fraud") for i in range(3, 6)))
    await ingest.handlers.after_poll()
    assert repo.manifest("fraud").rows_total == 5 and ingest.releases == 2 and ingest.held == {}


async def test_while_the_consumer_is_behind_a_window_waits_for_its_rows_up_to_the_longer_age(
    store: FileStore,
) -> None:
    clock = FakeClock()
    ingest = Ingest(store, FlushPolicy(max_rows=100, max_age_s=5.0, max_age_behind_s=60.0), clock)
    behind = True
    ingest.handlers.behind = lambda: behind
    await ingest.send(*(annotation(i) for i in range(10)))
    clock.now += 30.0
    await ingest.handlers.after_poll()
    assert DatasetRepository(store).latest_version(MODEL) is None, "a backlog: the rows are still coming"

    behind = False
    await ingest.handlers.after_poll()
    assert DatasetRepository(store).manifest(MODEL).rows_total == 10, "caught up: the age applies"

    behind = True
    await ingest.send(annotation(20))
    clock.now += 60.0
    await ingest.handlers.after_poll()
    assert DatasetRepository(store).manifest(MODEL).rows_total == 11, "never longer than the backlog age"


async def test_the_buffer_bound_over_all_models_flushes_the_largest_window_first(store: FileStore) -> None:
    apply_spec(store, SPEC.format(name="fraud"))
    ingest = Ingest(store, FlushPolicy(max_rows=100, max_age_s=3600.0, max_buffered_rows=6))
    await ingest.send(*(annotation(i) for i in range(5)), *(annotation(i, model="fraud") for i in range(50, 52)))
    await ingest.handlers.after_poll()
    repo = DatasetRepository(store)
    assert repo.manifest(MODEL).rows_total == 5 and repo.latest_version("fraud") is None
    assert ingest.handlers.buffered_rows == 2


# --- a poll's messages, validated together ------------------------------------------------------


def poll_of_every_kind() -> list[bytes]:
    """A poll as senders make them: valid records, a resend, bad values, a schema violation, junk."""
    return [
        encode_event(annotation(1)),
        encode_event(annotation(2, features={"a": 2.0, "b": 500.0, "c": 0.5})),  # b above max
        encode_event(annotation(3, label="perhaps", confidence=0.1)),
        b'{"model": "credit", "record_id": 4, "features": {}, "label": "no"}',
        b"{not json",
        encode_event(annotation(1, features={"a": 99.0, "b": 1.0, "c": 0.0})),  # a resend of r1
        encode_event(annotation(5, model="nobody")),
        json.dumps({**json.loads(encode_event(annotation(6))), "features": {"a": 1, "b": True, "c": None}}).encode(),
        json.dumps({**json.loads(encode_event(annotation(7))), "features": {"b": 7, "a": 7.5}}).encode(),
        encode_event(annotation(8)),
        b'{"model": "nobody", "record_id": "n", "features": {"a": [1]}, "label": "no"}',
    ]


def outcome(ingest: Ingest) -> tuple[Any, ...]:
    rejected = [
        (r.source.offset, r.model, [(x.field, x.rule, x.message) for x in r.reasons])
        for r in ingest.publisher.rejections()
    ]
    dead = [(p.offset, reason) for p, _, reason in ingest.publisher.dead_letters]
    window = ingest.handlers.windows[MODEL]
    stored = [
        (r.record_id, r.label, [None if v is None or v != v else float(v) for v in r.features]) for r in window.records
    ]
    return rejected, dead, stored, window.duplicates, window.rejected, dict(window.rejected_by_rule)


async def test_a_polls_messages_validated_together_get_the_verdicts_each_would_get_alone(store: FileStore) -> None:
    alone, together = Ingest(store), Ingest(store)
    for value in poll_of_every_kind():
        await alone.send_bytes(value)
    for value in poll_of_every_kind():
        await together.keep_bytes(value)
    assert together.handlers.buffered_rows == 0, "kept, not yet validated"
    await together.handlers.after_poll()

    assert outcome(together) == outcome(alone)
    rejected, dead, stored, duplicates, _, by_rule = outcome(together)
    assert [record_id for record_id, _, _ in stored] == ["r1", "r7", "r8"], "arrival order, first copy kept"
    assert stored[1][2][:2] == [7.5, 7.0] and stored[1][2][2] is None, "spec order; an integer is its float"
    assert [offset for offset, _, _ in rejected] == [1, 2, 3, 6, 7, 10] and duplicates == 1
    assert {rule for _, rule, _ in rejected[-1][2]} == {"schema"}, "the schema is judged before the model"
    assert by_rule == {"range": 1, "label": 1, "min_confidence": 1, "schema": 1, "type": 1}
    assert dead == [(4, dead[0][1])] and dead[0][1].startswith("not JSON")
    assert together.metric("driftloop_ingest_dead_letters_total") == 1


async def test_a_record_id_sent_twice_in_one_poll_is_stored_once(store: FileStore) -> None:
    ingest = Ingest(store)
    first = annotation(1)
    await ingest.keep(first, first.model_copy(update={"features": {"a": 99.0, "b": 1.0, "c": 0.0}}), annotation(2))
    await ingest.handlers.validate_kept()
    await ingest.handlers.flush()

    data = DatasetRepository(store).load(MODEL)
    assert data.record_ids.tolist() == ["r1", "r2"] and data.X[0][0] == 1.0
    assert ingest.metric("driftloop_ingest_duplicate_records_total", model=MODEL) == 1


class StaleCatalog(SpecCatalog):
    """A catalog that looks at the store again only for a model it does not know (as the real one
    does once half a second has passed): a spec changed in the store stays unseen until then."""

    def due(self, model: str | None = None) -> bool:
        return model is not None and self.cached(model) is None


async def test_a_spec_change_in_the_middle_of_a_poll_stores_each_record_under_its_own_spec(store: FileStore) -> None:
    catalog = StaleCatalog(store)
    ingest = Ingest(store, catalog=catalog)
    await ingest.send(annotation(0))  # the catalog reads the specs
    reordered = SPEC.format(name=MODEL).replace("{name: a}, {name: b, min: 0, max: 100}", "{name: b}, {name: a}")
    apply_spec(store, reordered)
    apply_spec(store, SPEC.format(name="fraud"))
    await ingest.keep(annotation(1, features={"a": 1.0, "b": 2.0, "c": 3.0}))  # checked against the old spec
    await ingest.keep(annotation(9, model="fraud"))  # unknown: the catalog is read again
    later = await ingest.keep_bytes(encode_event(annotation(2, features={"a": 4.0, "b": 5.0, "c": 6.0})), partition=1)
    await ingest.handlers.validate_kept()

    repo = DatasetRepository(store)
    first = repo.manifest(MODEL, 1)
    assert first.features == ["a", "b", "c"] and first.rows_added == 2, "the old spec's records, flushed first"
    assert ingest.held == {(topics.ANNOTATIONS, 0): 2, (topics.ANNOTATIONS, 1): later.offset}, (
        "the flush in the middle of the poll holds what is not admitted yet"
    )
    await ingest.handlers.flush()
    second = repo.manifest(MODEL, 2)
    assert second.features == ["b", "a", "c"] and second.rows_added == 1
    assert repo.load(MODEL, 2).X[0].tolist() == [5.0, 4.0, 6.0]


async def test_a_transient_failure_in_the_middle_of_a_poll_keeps_the_rest_and_holds_their_offsets(
    store: FileStore,
) -> None:
    ingest = Ingest(store)
    await ingest.keep(annotation(1), annotation(2, label="perhaps"), annotation(3))
    ingest.publisher.reachable = False  # the rejection of r2 cannot be queued
    with pytest.raises(BrokerUnavailable):
        await ingest.handlers.after_poll()
    assert ingest.handlers.buffered_rows == 1 and len(ingest.handlers.kept) == 2, "r1 admitted, r2 and r3 kept"
    await ingest.handlers.flush()
    assert ingest.held == {(topics.ANNOTATIONS, 0): 1}, "r1 is stored; the kept messages hold the rest"

    ingest.publisher.reachable = True
    await ingest.handlers.after_poll()
    await ingest.handlers.flush()
    assert ingest.handlers.kept == [] and len(ingest.publisher.rejections()) == 1
    assert DatasetRepository(store).load(MODEL).record_ids.tolist() == ["r1", "r3"]
    assert ingest.held == {}


async def test_while_kept_messages_cannot_be_admitted_new_ones_are_deferred(store: FileStore) -> None:
    ingest = Ingest(store, max_kept=2)
    await ingest.keep(annotation(1), annotation(2))
    with pytest.raises(AdmissionDeferred):  # transient to the bus: it reads the message again later
        await ingest.keep(annotation(3))
    await ingest.handlers.validate_kept()
    await ingest.keep(annotation(3))
    assert len(ingest.handlers.kept) == 1


async def test_a_dead_letter_that_cannot_be_written_yet_is_tried_again(store: FileStore) -> None:
    ingest = Ingest(store)
    await ingest.keep_bytes(b"[1, 2]")
    ingest.publisher.reachable = False
    with pytest.raises(BrokerUnavailable):
        await ingest.handlers.validate_kept()
    ingest.publisher.reachable = True
    await ingest.handlers.validate_kept()
    [(position, value, reason)] = ingest.publisher.dead_letters
    assert (position.offset, value, reason) == (0, b"[1, 2]", "expected a JSON object")
    assert ingest.metric("driftloop_ingest_dead_letters_total") == 1
