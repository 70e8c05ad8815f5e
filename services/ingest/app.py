"""Composition root of the ingest service: settings, store, bus, metrics, HTTP. No logic here."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from services.ingest.core import FlushPolicy
from services.ingest.handlers import IngestHandlers, crash_here
from services.ingest.metrics import IngestMetrics
from shared import topics
from shared.bus import Subscriber, raw_value
from shared.config import ServiceSettings, build_store, load_settings
from shared.datasets import DatasetRepository
from shared.lifecycle import configure_logging, run_forever
from shared.service import BusService
from shared.spec import SpecCatalog
from shared.store import ObjectStore

log = logging.getLogger("driftloop.ingest")


class IngestSettings(ServiceSettings):
    """Settings of the ingest service (``DRIFTLOOP_*``)."""

    port: int = Field(default=8001, ge=0, le=65535, description="HTTP port for health and metrics.")
    group_id: str = Field(default="driftloop-ingest", description="Consumer group of the ingest replicas.")
    flush_rows: int = Field(
        default=5000, ge=1, description="Flush a model's buffer when it holds this many accepted rows (per model)."
    )
    flush_interval_s: float = Field(
        default=5.0, gt=0, description="Flush a model's buffer when its oldest row is this old (per model)."
    )
    flush_interval_behind_s: float = Field(
        default=60.0,
        gt=0,
        description="While the consumer has a backlog (a bulk load), a model's oldest row may wait this long, so "
        "each model's versions are cut by flush_rows rather than by how fast the shared topic is read.",
    )
    max_buffered_rows: int = Field(
        default=200_000, ge=1, description="Bound on rows buffered over all models; beyond it the largest flush first."
    )
    max_poll_records: int = Field(default=2000, ge=1, description="Records fetched per poll.")
    spec_refresh_s: float = Field(default=2.0, gt=0, description="How often specs are re-read from the store.")
    crash_at: Literal["after_shard", "after_manifest", "after_publish"] | None = Field(
        default=None, description="Fault injection for crash tests only: die at this point of the first flush."
    )


class _CrashAfterShard:
    """Store wrapper for the crash test: dies right after a shard is written, before its manifest."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def put(self, key: str, data: bytes) -> None:
        self._inner.put(key, data)
        if "/shards/" in key:
            crash_here("after_shard")


class IngestService(BusService):
    """Ingest wired up: consume ``annotations``, write dataset versions, serve health and metrics."""

    def __init__(self, settings: IngestSettings) -> None:
        super().__init__(settings, "ingest", [topics.ANNOTATIONS, topics.ANNOTATIONS_REJECTED, topics.DATASETS])
        store: ObjectStore = build_store(settings)
        if settings.crash_at == "after_shard":
            store = _CrashAfterShard(store)  # type: ignore[assignment]
        metrics = IngestMetrics.create(self.registry)
        self.handlers = IngestHandlers(
            repo=DatasetRepository(store),
            catalog=SpecCatalog(store, refresh_s=settings.spec_refresh_s),
            publisher=self.publisher,
            metrics=metrics,
            policy=FlushPolicy(
                max_rows=settings.flush_rows,
                max_age_s=settings.flush_interval_s,
                max_age_behind_s=settings.flush_interval_behind_s,
                max_buffered_rows=settings.max_buffered_rows,
            ),
            crash_at=settings.crash_at,
            max_kept=2 * settings.max_poll_records,  # one poll's messages waiting, and the next poll's
        )
        self.subscriber = Subscriber(
            self.options,
            settings.group_id,
            [topics.ANNOTATIONS],
            self.handlers.on_annotation,
            self.publisher,
            raw_value,  # decoded with the poll's batch, after it
            max_records=settings.max_poll_records,
            drain=self.handlers.drain,
            after_poll=self.handlers.after_poll,
            on_dead_letter=lambda topic: metrics.dead_letters.inc(),
        )
        self.handlers.release = self.subscriber.release
        self.handlers.behind = lambda: self.subscriber.behind


def main() -> int:
    """``driftloop serve ingest``."""
    settings = load_settings(IngestSettings)
    configure_logging(settings.log_level)
    run_forever(IngestService(settings).run())
    return 0
