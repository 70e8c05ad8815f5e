"""Composition root of the trainer service: settings, store, bus, metrics, HTTP. No logic here."""

from __future__ import annotations

import logging

from pydantic import Field

from services.trainer.handlers import TrainerHandlers
from services.trainer.metrics import TrainerMetrics
from shared import topics
from shared.bus import Subscriber
from shared.config import ServiceSettings, build_store, load_settings
from shared.lifecycle import configure_logging, run_forever
from shared.service import BusService
from shared.spec import SpecCatalog

log = logging.getLogger("driftloop.trainer")


class TrainerSettings(ServiceSettings):
    """Settings of the trainer service (``DRIFTLOOP_*``)."""

    port: int = Field(default=8003, ge=0, le=65535, description="HTTP port for health and metrics.")
    group_id: str = Field(default="driftloop-trainer", description="Consumer group of the trainer replicas.")
    tick_s: float = Field(default=1.0, gt=0, description="How often the trainer looks for due runs.")
    spec_refresh_s: float = Field(default=2.0, gt=0, description="How often specs are re-read from the store.")
    train_threads: int | None = Field(
        default=None,
        ge=1,
        description="Threads of the numeric libraries (OpenMP, BLAS) while training. Unset: their default, one "
        "per core. On a machine shared with serving, 1 keeps a run from stalling for tens of seconds.",
    )


class TrainerService(BusService):
    """The trainer wired up: consume ``datasets`` and ``drift``, run trainings, serve health and metrics."""

    def __init__(self, settings: TrainerSettings) -> None:
        super().__init__(
            settings, "trainer", [topics.DATASETS, topics.DRIFT, topics.TRAINING_COMPLETED, topics.DEPLOYMENTS]
        )
        store = build_store(settings)
        self.handlers = TrainerHandlers(
            store,
            SpecCatalog(store, refresh_s=settings.spec_refresh_s),
            self.publisher,
            TrainerMetrics.create(self.registry),
            tick_s=settings.tick_s,
        )
        self.subscriber = Subscriber(
            self.options,
            settings.group_id,
            [topics.DATASETS, topics.DRIFT],
            self.handlers.on_event,
            self.publisher,
            co_partitioned=True,
        )
        self.background.append(self.handlers.work)
        self.on_stop.append(self.handlers.stop)


def main() -> int:
    """``driftloop serve trainer``."""
    settings = load_settings(TrainerSettings)
    configure_logging(settings.log_level)
    if settings.train_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=settings.train_threads)  # process-wide: every fit and predict after this
    run_forever(TrainerService(settings).run())
    return 0
