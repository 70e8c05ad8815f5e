"""Ingest's use-cases: an annotation arrived; a model's buffer is due; a partition is taken away.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiokafka.structs import RecordMetadata

from services.ingest.core import FlushPolicy, ModelWindow, batch_checks, held_offsets
from services.ingest.metrics import IngestMetrics
from services.ingest.validation import RecordValidator, SchemaRejection, unknown_model
from shared import topics
from shared.bus import Delivery, Publisher, confirm
from shared.datasets import DatasetManifest, DatasetRepository
from shared.errors import NotFound
from shared.events import AnnotationRejected, AnnotationSubmitted, RejectionReason, encode_event
from shared.spec import ModelSpec, SpecCatalog

log = logging.getLogger(__name__)

CRASH_POINTS = ("after_shard", "after_manifest", "after_publish")
"""Where a crash test may kill ingest (``DRIFTLOOP_CRASH_AT``): the states recovery must handle."""


def crash_here(point: str) -> None:
    """Die like a killed process: no cleanup, no commit."""
    log.error("crash injected at %s", point)
    logging.shutdown()
    os._exit(70)


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

    @property
    def buffered_rows(self) -> int:
        """Accepted rows waiting for the next flush."""
        return sum(len(w.records) for w in self.windows.values())

    def _window(self, model: str) -> ModelWindow:
        window = self.windows.get(model)
        if window is None:
            window = self.windows[model] = ModelWindow(opened_at=self.clock())
        return window

    async def on_annotation(self, message: AnnotationSubmitted | SchemaRejection, delivery: Delivery) -> None:
        """Validate one record: buffer it, skip it as a duplicate, or reject it with its reasons."""
        if isinstance(message, SchemaRejection):
            await self._reject(message.model, message.reasons, delivery)
            return
        model = message.model
        spec = self.catalog.cached(model)
        if spec is None and self.catalog.due(model):
            await asyncio.to_thread(self.catalog.refresh)
            spec = self.catalog.cached(model)
        result = self._validator(spec).check(message) if spec is not None else [unknown_model(model)]
        if isinstance(result, list):
            await self._reject(model, result, delivery)
            return
        cursor = await self._cursor(model)
        window = self._window(model)
        if result.record_id in cursor.ids or result.record_id in window.ids:
            window.duplicates += 1
            self.metrics.duplicates.labels(model).inc()
            return
        assert spec is not None  # the record was validated against it
        if window.records and window.spec is not spec and _schema_changed(window.spec, spec):
            del self.windows[model]  # the waiting records are stored under the schema they were checked against
            await self._flush([model], {model: window})
            window = self._window(model)
        window.spec = spec
        window.accept(result)
        window.hold(delivery.topic, delivery.partition, delivery.offset)

    def _validator(self, spec: ModelSpec) -> RecordValidator:
        validator = self._validators.get(spec.name)
        if validator is None or validator.spec is not spec:  # compiled again when the spec changes
            validator = self._validators[spec.name] = RecordValidator(spec)
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
        """Flush the models whose windows are due; refresh specs now and then."""
        if self.catalog.due():
            await asyncio.to_thread(self.catalog.refresh)
        self.metrics.buffered_rows.set(self.buffered_rows)
        due = self.policy.due_windows(self.windows, self.clock(), self.behind())
        if due or self._unconfirmed:
            await self.flush(due)

    async def drain(self) -> None:
        """Make everything consumed so far durable (before a rebalance or shutdown)."""
        await self.flush()

    async def flush(self, models: list[str] | None = None) -> None:
        """Write the windows of ``models`` (every model when None) as dataset versions, then
        release the offsets below what the other windows still hold."""
        await self._flush(list(self.windows) if models is None else models)

    async def _flush(self, models: list[str], taken: dict[str, ModelWindow] | None = None) -> None:
        async with self._lock:
            if self._unconfirmed:
                await confirm(self._unconfirmed)
                self._unconfirmed.clear()
            for model in models:
                window = (taken or {}).get(model) or self.windows.get(model)
                if window is None:
                    continue
                with self.metrics.flush_seconds.time():
                    await self._flush_model(model, window)
                self.metrics.accepted.labels(model).inc(len(window.records))
                if taken is None or model not in taken:
                    del self.windows[model]
            self.metrics.buffered_rows.set(self.buffered_rows)
            self.release(held_offsets(self.windows.values()) if self.windows else None)

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
