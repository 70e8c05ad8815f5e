"""Ingest's use-cases: an annotation arrived; a model's buffer is due; a partition is taken away.

An annotation is kept as it arrived, and each poll's messages are decoded and validated
together after the poll (:mod:`services.ingest.columnar`: the batch's features as arrays; what
the fast path cannot accept goes through the per-record reference, which says why), then
admitted one by one in arrival order, exactly as if each had been handled alone: bytes that are
not a JSON object go to ``annotations.dlq``, duplicates are skipped (within the batch too), and
a spec change between two records flushes the first under its own schema. Until they are
admitted, the kept messages hold their offsets like a window does.

Accepted records are buffered per model; rejections are queued to ``annotations.rejected`` at
once (each bounded to the bus's message size: a huge payload is kept in part, and says so).
Each model's window is flushed on its own thresholds (:class:`~services.ingest.core.FlushPolicy`):
the flush confirms the queued rejections, writes the model's dataset version (shard, then
manifest), publishes ``DatasetVersionCreated``, and only then releases the consumed offsets for
commit -- up to the first offset another model's window still holds on each partition. A crash
anywhere before the release makes Kafka redeliver from there, and the record ids already stored
are skipped, so every accepted record is stored exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka.structs import RecordMetadata

from services.ingest.columnar import Annotation, BatchValidator, decode_annotation
from services.ingest.core import FlushPolicy, ModelWindow, batch_checks, held_offsets
from services.ingest.metrics import IngestMetrics
from services.ingest.validation import RecordValidator, SchemaRejection, parse_annotation, unknown_model
from shared import topics
from shared.bus import TRANSIENT_ERRORS, Delivery, Publisher, confirm
from shared.datasets import AcceptedRecord, DatasetManifest, DatasetRepository
from shared.errors import CorruptArtifact, DriftloopError, InvalidEvent, NotFound, PayloadTooLarge
from shared.events import AnnotationRejected, AnnotationSubmitted, RejectionReason, encode_event
from shared.spec import ModelSpec, SpecCatalog

log = logging.getLogger(__name__)

CRASH_POINTS = ("after_shard", "after_manifest", "after_publish")
"""Where a crash test may kill ingest (``DRIFTLOOP_CRASH_AT``): the states recovery must handle."""
MAX_ATTEMPTS = 5
"""Tries of a message whose handling fails for an unexpected reason before it is dead-lettered
(the bus's own rule for a handler that raises)."""


class AdmissionDeferred(TimeoutError):
    """A message cannot be taken in yet: too many read earlier wait for their admission (the
    after-poll step keeps failing), or its dead letter does not fit the broker. A transient
    failure to the bus, which waits and reads the message again later."""


def crash_here(point: str) -> None:
    """Die like a killed process: no cleanup, no commit."""
    log.error("crash injected at %s", point)
    logging.shutdown()
    os._exit(70)


Verdict = AcceptedRecord | list[RejectionReason]


@dataclass(slots=True)
class _Admission:
    """What one kept message turned out to be: a dead letter, or a model's record and verdict."""

    delivery: Delivery
    model: str = ""
    spec: ModelSpec | None = None
    verdict: Verdict | None = None
    dead_letter: str | None = None
    """Why the message cannot be handled at all (it is not a JSON object)."""


@dataclass
class DatasetCursor:
    """The newest version ingest knows for a model, and every record id stored up to it."""

    version: int | None = None
    ids: set[str] = field(default_factory=set)


class IngestHandlers:
    """Holds the per-model windows and turns them into dataset versions."""

    def __init__(
        self,
        repo: DatasetRepository,
        catalog: SpecCatalog,
        publisher: Publisher,
        metrics: IngestMetrics,
        policy: FlushPolicy,
        crash_at: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_kept: int = 10_000,
    ) -> None:
        self.repo = repo
        self.catalog = catalog
        self.publisher = publisher
        self.metrics = metrics
        self.policy = policy
        self.crash_at = crash_at
        self.clock = clock
        self.windows: dict[str, ModelWindow] = {}
        self.carried: dict[str, ModelWindow] = {}
        """Per model, recent flushed batches too small for the batch checks, judged with the next."""
        self.cursors: dict[str, DatasetCursor] = {}
        self.release: Callable[[Mapping[tuple[str, int], int] | None], None] = _release_nothing
        """The subscriber's ``release``: everything handled is durable except from ``holding`` on."""
        self.behind: Callable[[], bool] = _never
        """True while the consumer has a backlog (the subscriber's lag), for the flush policy."""
        self._unconfirmed: list[asyncio.Future[RecordMetadata]] = []
        self._lock = asyncio.Lock()
        self._validators: dict[str, RecordValidator] = {}
        self._batch_validators: dict[str, BatchValidator] = {}
        self.kept: list[Delivery] = []
        """Messages read but not yet admitted, in arrival order (validated after the poll)."""
        self._admitted = 0
        """How many of :attr:`kept` are admitted so far (while they are being admitted)."""
        self.max_kept = max_kept
        """Beyond this many kept messages a new one is refused for now (:class:`AdmissionDeferred`)."""
        self._failures: dict[tuple[str, int, int], int] = {}

    @property
    def buffered_rows(self) -> int:
        """Accepted rows waiting for the next flush."""
        return sum(len(w.records) for w in self.windows.values())

    def _window(self, model: str) -> ModelWindow:
        window = self.windows.get(model)
        if window is None:
            window = self.windows[model] = ModelWindow(opened_at=self.clock())
        return window

    async def on_annotation(self, data: bytes, delivery: Delivery) -> None:
        """An annotation arrived: keep it for the poll's batch (:meth:`validate_kept`)."""
        if len(self.kept) >= self.max_kept:
            raise AdmissionDeferred(f"{len(self.kept)} annotations read earlier are not admitted yet")
        self.kept.append(delivery)

    async def validate_kept(self) -> None:
        """Decode and validate the kept messages together, then admit each in arrival order.

        A transient failure stops at the message it happened on: that one and the rest stay
        kept (their offsets held) and are admitted on the next call.
        """
        if not self.kept:
            return
        admissions = await self._judge(self.kept)
        self._admitted = 0
        try:
            for admission in admissions:
                await self._admit_safely(admission)
                self._admitted += 1
        finally:
            del self.kept[: self._admitted]
            self._admitted = 0

    async def _judge(self, kept: Sequence[Delivery]) -> list[_Admission]:
        """Each kept message's verdict: decoded (fast, or by the reference decoder), its spec
        looked up in arrival order (as the records would have been, one at a time), then
        validated in batches of one spec, each record the fast path leaves by the reference."""
        admissions = [_Admission(delivery) for delivery in kept]
        decoded: list[Annotation | AnnotationSubmitted | None] = []
        for admission in admissions:
            fast = decode_annotation(admission.delivery.value or b"")
            event = fast if fast is not None else self._decode(admission)
            decoded.append(event)
            if event is not None:
                model = admission.model = event.model
                spec = self.catalog.cached(model)
                if spec is None and self.catalog.due(model):
                    await asyncio.to_thread(self.catalog.refresh)
                    spec = self.catalog.cached(model)
                admission.spec = spec
        groups: dict[int, list[int]] = {}
        for i, (admission, event) in enumerate(zip(admissions, decoded, strict=True)):
            if event is None:
                continue
            if admission.spec is None:  # the reference's order: a schema problem first, then the model
                if isinstance(event, AnnotationSubmitted) or self._decode(admission) is not None:
                    admission.verdict = [unknown_model(admission.model)]
            elif isinstance(event, Annotation):
                groups.setdefault(id(admission.spec), []).append(i)
            else:
                admission.verdict = self._validator(admission.spec).check(event)
        for members in groups.values():
            spec = admissions[members[0]].spec
            assert spec is not None
            batch = [decoded[i] for i in members]
            verdicts = self._batch_validator(spec).check(batch)  # type: ignore[arg-type]
            for i, verdict in zip(members, verdicts, strict=True):
                admissions[i].verdict = verdict if verdict is not None else self._reference(admissions[i], spec)
        return admissions

    def _decode(self, admission: _Admission) -> AnnotationSubmitted | None:
        """The reference decoder's reading: an event, or None after noting why it is rejected
        (a schema problem) or dead-lettered (not a JSON object), as the bus would have."""
        try:
            message = parse_annotation(topics.ANNOTATIONS, admission.delivery.value or b"")
        except InvalidEvent as err:
            admission.dead_letter = err.message
            return None
        except Exception as err:  # a decoder bug must not stop the partition forever
            admission.dead_letter = f"cannot decode: {type(err).__name__}: {err}"
            return None
        if isinstance(message, SchemaRejection):
            admission.model, admission.verdict = message.model, message.reasons
            return None
        return message

    def _reference(self, admission: _Admission, spec: ModelSpec) -> Verdict | None:
        """The per-record verdict on a record the fast path did not accept (it says why)."""
        event = self._decode(admission)
        if event is None:
            return admission.verdict
        return self._validator(spec).check(event)

    async def _admit_safely(self, admission: _Admission) -> None:
        """Admit one message under the bus's rules: a transient failure is raised (the message
        is tried again later); a permanent one dead-letters it, as does any other failure that
        lasts :data:`MAX_ATTEMPTS` tries."""
        delivery = admission.delivery
        key = (delivery.topic, delivery.partition, delivery.offset)
        try:
            await self._admit(admission)
        except TRANSIENT_ERRORS:
            raise
        except CorruptArtifact as err:  # a StoreError, but bad bytes do not mend by waiting
            await self._dead_letter(delivery, f"{type(err).__name__}: {err.message}")
        except DriftloopError as err:
            if not 400 <= err.status_code < 500 or admission.dead_letter is not None:
                raise
            await self._dead_letter(delivery, f"{type(err).__name__}: {err.message}")
        except Exception as err:
            attempts = self._failures.get(key, 0) + 1
            log.error("%s[%d]@%d: admission failed (attempt %d of %d)", *key, attempts, MAX_ATTEMPTS, exc_info=err)
            if attempts < MAX_ATTEMPTS:
                self._failures[key] = attempts
                raise
            self._failures.pop(key, None)
            await self._dead_letter(delivery, f"handler failed {attempts} times: {type(err).__name__}: {err}")
        else:
            if self._failures:
                self._failures.pop(key, None)

    async def _admit(self, admission: _Admission) -> None:
        """Buffer one validated record, skip it as a duplicate, reject it, or dead-letter it."""
        delivery, model, verdict = admission.delivery, admission.model, admission.verdict
        if admission.dead_letter is not None:
            await self._dead_letter(delivery, admission.dead_letter)
            return
        if isinstance(verdict, list):
            await self._reject(model, verdict, delivery)
            return
        assert verdict is not None and admission.spec is not None
        spec = admission.spec
        cursor = self.cursors.get(model) or await self._cursor(model)
        window = self._window(model)
        if verdict.record_id in cursor.ids or verdict.record_id in window.ids:
            window.duplicates += 1
            self.metrics.duplicates.labels(model).inc()
            return
        if window.records and window.spec is not spec and _schema_changed(window.spec, spec):
            # the waiting records are stored under the schema they were checked against (the window
            # is dropped only once its version is written: a failed flush keeps it, and its offsets)
            await self._flush([model])
            window = self._window(model)
        window.spec = spec
        window.accept(verdict)
        window.hold(delivery.topic, delivery.partition, delivery.offset)

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Send a message that cannot be handled to ``annotations.dlq`` and count it, as the bus does."""
        try:
            await self.publisher.dead_letter(delivery.position, delivery.key, delivery.value, reason)
        except PayloadTooLarge as err:  # not even a minimal letter fits: the broker's limits need fixing
            raise AdmissionDeferred(f"cannot write a dead letter to {topics.dlq(delivery.topic)}: {err}") from err
        self.metrics.dead_letters.inc()

    def _validator(self, spec: ModelSpec) -> RecordValidator:
        validator = self._validators.get(spec.name)
        if validator is None or validator.spec is not spec:  # compiled again when the spec changes
            validator = self._validators[spec.name] = RecordValidator(spec)
        return validator

    def _batch_validator(self, spec: ModelSpec) -> BatchValidator:
        validator = self._batch_validators.get(spec.name)
        if validator is None or validator.spec is not spec:
            validator = self._batch_validators[spec.name] = BatchValidator(self._validator(spec))
        return validator

    async def _reject(self, model: str, reasons: list[RejectionReason], delivery: Delivery) -> None:
        # bounded to one message: a payload too large for it is kept in part, and says so
        limit = self.publisher.max_message_bytes
        event = AnnotationRejected.of(model, delivery.value, reasons, delivery.position, limit)
        self._unconfirmed.append(
            await self.publisher.enqueue(topics.ANNOTATIONS_REJECTED, encode_event(event), model.encode())
        )
        self._window(model).reject([r.rule for r in reasons])
        for rule in {r.rule for r in reasons}:
            self.metrics.rejected.labels(model, rule).inc()

    async def _cursor(self, model: str) -> DatasetCursor:
        cursor = self.cursors.get(model)
        if cursor is None:
            cursor = await asyncio.to_thread(self._load_cursor, model)
            self.cursors[model] = cursor
            if cursor.version is not None:
                await self._announce(self.repo.manifest(model, cursor.version))
        return cursor

    def _load_cursor(self, model: str) -> DatasetCursor:
        version = self.repo.latest_version(model)
        if version is None:
            return DatasetCursor()
        manifest = self.repo.manifest(model, version)
        return DatasetCursor(version=version, ids=self.repo.record_ids(manifest.shards))

    async def after_poll(self) -> None:
        """Validate the poll's messages; flush the models whose windows are due; refresh specs now and then."""
        await self.validate_kept()
        if self.catalog.due():
            await asyncio.to_thread(self.catalog.refresh)
        self.metrics.buffered_rows.set(self.buffered_rows)
        due = self.policy.due_windows(self.windows, self.clock(), self.behind())
        if due or self._unconfirmed:
            await self.flush(due)

    async def drain(self) -> None:
        """Make everything consumed so far durable (before a rebalance or shutdown)."""
        await self.validate_kept()
        await self.flush()

    async def flush(self, models: list[str] | None = None) -> None:
        """Write the windows of ``models`` (every model when None) as dataset versions, then
        release the offsets below what the other windows still hold."""
        await self._flush(list(self.windows) if models is None else models)

    async def _flush(self, models: list[str]) -> None:
        async with self._lock:
            if self._unconfirmed:
                await confirm(self._unconfirmed)
                self._unconfirmed.clear()
            for model in models:
                window = self.windows.get(model)
                if window is None:
                    continue
                with self.metrics.flush_seconds.time():
                    await self._flush_model(model, window)
                self.metrics.accepted.labels(model).inc(len(window.records))
                del self.windows[model]
            self.metrics.buffered_rows.set(self.buffered_rows)
            self.release(self._holding())

    def _holding(self) -> dict[tuple[str, int], int] | None:
        """Per partition, the first offset still held: by a window, or by a kept message not yet admitted."""
        held = held_offsets(self.windows.values())
        for delivery in self.kept[self._admitted :]:
            position = (delivery.topic, delivery.partition)
            held[position] = min(delivery.offset, held.get(position, delivery.offset))
        return held or None

    async def _flush_model(self, model: str, window: ModelWindow) -> None:
        # Records are stored under the spec they were validated against, even if it changed or
        # was deleted since; a window of rejections alone is checked against the current one.
        spec = window.spec or self.catalog.cached(model)
        if spec is None:
            spec = await asyncio.to_thread(self.catalog.get, model)
        cursor = self.cursors.setdefault(model, DatasetCursor())
        if spec is not None and window.records:
            previous: DatasetManifest | None = None
            if cursor.version is not None:
                try:
                    previous = await asyncio.to_thread(self.repo.manifest, model, cursor.version)
                except NotFound:
                    previous = None
            checked = self._checked(model, window)
            checks = batch_checks(
                checked,
                previous.label_counts if previous else {},
                spec.validation.label_shift_alert,
                spec.validation.max_rejection_rate,
                previous.label_histogram if previous is not None and previous.regression else None,
                spec.validation.min_batch_rows,
            )
            manifest = await asyncio.to_thread(
                self.repo.write_version,
                model,
                spec.schema_hash(),
                spec.feature_names,
                spec.label.values,
                window.records,
                cursor.version,
                checks,
                spec.feature_types,
                spec.label.type,
            )
            if self.crash_at == "after_manifest":
                crash_here("after_manifest")
            if manifest is not None:
                if manifest.parent_version != cursor.version:  # another replica wrote versions meanwhile
                    self.cursors[model] = await asyncio.to_thread(self._load_cursor, model)
                else:
                    cursor.version = manifest.version
                    cursor.ids.update(r.record_id for r in window.records)
                await self._announce(manifest)
                if self.crash_at == "after_publish":
                    crash_here("after_publish")
                self._record_checks(model, manifest)
            self._carry(model, checked, spec.validation.min_batch_rows)
        elif spec is not None:
            checked = self._checked(model, window)
            v = spec.validation
            checks = batch_checks(checked, {}, v.label_shift_alert, v.max_rejection_rate, None, v.min_batch_rows)
            self._record_rejections(model, checks["rejections"])
            self._carry(model, checked, v.min_batch_rows)

    def _checked(self, model: str, window: ModelWindow) -> ModelWindow:
        """What the batch checks judge: ``window``, after any batches carried because they were small."""
        carried = self.carried.get(model)
        if carried is None or (window.spec is not None and _schema_changed(carried.spec, window.spec)):
            return window  # a new schema (a new lineage) starts its checks afresh
        return carried.merged(window)

    def _carry(self, model: str, checked: ModelWindow, min_rows: int) -> None:
        """Keep a batch too small for its checks for the next flush's; forget a judged one."""
        if checked.checkable(min_rows):
            self.carried.pop(model, None)
        else:
            self.carried[model] = checked

    async def _announce(self, manifest: DatasetManifest) -> None:
        await self.publisher.publish(manifest.announcement())

    def _record_checks(self, model: str, manifest: DatasetManifest) -> None:
        self.metrics.versions.labels(model).inc()
        self.metrics.rows_total.labels(model).set(manifest.rows_total)
        shift = manifest.checks.get("label_shift", {})
        psi = shift.get("psi")  # a regression label's check; a class label's measures a distance
        self.metrics.label_shift.labels(model).set(psi if psi is not None else shift.get("distance", 0.0))
        if shift.get("flagged") and psi is not None:
            self.metrics.label_shift_flags.labels(model).inc()
            log.warning(
                "%s: label distribution shifted: PSI %.3f (threshold %.3f, noise %.3f) in dataset version %d: "
                "batch %s vs dataset %s",
                model,
                psi,
                shift["threshold"],
                shift.get("noise") or 0.0,
                manifest.version,
                shift.get("batch_label_summary"),
                manifest.label_summary(),
            )
        elif shift.get("flagged"):
            self.metrics.label_shift_flags.labels(model).inc()
            log.warning(
                "%s: label distribution shifted by %.3f (threshold %.3f) in dataset version %d: batch %s vs dataset %s",
                model,
                shift["distance"],
                shift["threshold"],
                manifest.version,
                shift.get("batch_label_counts"),
                manifest.label_counts,
            )
        self._record_rejections(model, manifest.checks.get("rejections", {}))
        log.info(
            "%s: dataset version %d written (%d rows, +%d)",
            model,
            manifest.version,
            manifest.rows_total,
            manifest.rows_added,
        )

    def _record_rejections(self, model: str, rejections: dict[str, object]) -> None:
        rate = float(rejections.get("rate", 0.0))  # type: ignore[arg-type]
        self.metrics.rejection_rate.labels(model).set(rate)
        flagged = bool(rejections.get("flagged"))
        self.metrics.rejection_alarm.labels(model).set(1 if flagged else 0)
        if flagged:
            log.warning(
                "%s: %.1f%% of the last window was rejected (limit %.1f%%): %s",
                model,
                100 * rate,
                100 * float(rejections.get("limit", 0.0)),  # type: ignore[arg-type]
                rejections.get("by_rule"),
            )


def _never() -> bool:
    return False


def _release_nothing(holding: Mapping[tuple[str, int], int] | None) -> None:
    return None


def _schema_changed(before: ModelSpec | None, now: ModelSpec) -> bool:
    """The stored layout differs: feature names, order or types, the label values, or the task."""
    return before is None or before.schema_hash() != now.schema_hash()
