"""Composition root of the monitor: a faust-streaming app, the publisher, HTTP.

faust consumes ``predictions``, ``annotations.ground-truth``, ``deployments`` and
``training.completed`` in one consumer group (its assignor keeps the co-partitioned topics
together, so a model's predictions, labels and deployments land on the same replica) and keeps
the prediction/label join in a Table whose changelog follows the partition on a rebalance.
``annotations`` itself is read by a lean filter beside faust that forwards only the records
with an ``inference_id`` (:mod:`services.monitor.ground_truth`): a bulk load of training data
costs the monitor next to nothing. Records are decoded
with the shared event models at the agent boundary, by the same policy as the bus's
subscribers (:class:`shared.bus.MessagePolicy`): a transient failure is retried in place, only
what can never be handled goes to ``<topic>.dlq`` with the reason. Everything else is in
:mod:`handlers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry
from pydantic import Field

from services.monitor.ground_truth import GroundTruthFilter, decode_ground_truth
from services.monitor.handlers import MonitorHandlers
from services.monitor.landing import render_landing
from services.monitor.metrics import MonitorMetrics
from services.monitor.report import render_report
from shared import __version__, topics
from shared.bus import (
    TRANSIENT_ERRORS,
    Backoff,
    Delivery,
    KafkaOptions,
    MessagePolicy,
    Outcome,
    Publisher,
    Refused,
    ensure_topics,
)
from shared.config import ServiceSettings, build_store, load_settings
from shared.errors import BrokerUnavailable, ModelNotFound
from shared.events import utc_now
from shared.http import HttpServer, add_error_handler, add_health_routes
from shared.lifecycle import configure_logging, run_forever, run_until_signalled
from shared.registry import Registry
from shared.spec import SpecCatalog

log = logging.getLogger("driftloop.monitor")

CONSUMED = (topics.PREDICTIONS, topics.ANNOTATIONS_GROUND_TRUTH, topics.DEPLOYMENTS, topics.TRAINING_COMPLETED)
"""What faust consumes; ``annotations`` is read by the ground-truth filter."""


class MonitorSettings(ServiceSettings):
    """Settings of the monitor service (``DRIFTLOOP_*``)."""

    port: int = Field(default=8002, ge=0, le=65535, description="HTTP port (status, report, health, metrics).")
    checkpoint_s: float = Field(default=5.0, gt=0, description="How often changed model state is checkpointed.")
    accuracy_window_s: float = Field(default=30.0, gt=0, description="Tumbling window of live accuracy, seconds.")
    monitor_group: str = Field(default="driftloop-monitor", description="Consumer group (faust app id) of monitors.")
    fetch_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        description="Bytes fetched per partition and request. A prediction-log message of 1,000 rows with 20 "
        "features is ~250 KB; faust's 1 MB default left the monitor idle half the time waiting for the next "
        "fetch (~16,000 predictions/s instead of ~27,000).",
    )
    join_max_rows: int = Field(
        default=1_000_000,
        ge=1000,
        description="Rows the prediction/label join holds per model (predictions awaiting labels, labels "
        "awaiting predictions, recent joins; ~250 bytes each, measured), oldest dropped first. Size it to the "
        "prediction rate x the usual label lag.",
    )
    faust_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "driftloop-monitor",
        description="Directory faust keeps its table files in. Tables live in memory and are rebuilt from "
        "their changelog topic, so nothing of value is written there; without it faust writes an empty "
        "`<group>-data/` into the working directory.",
    )
    changelog_batch: int | None = Field(
        default=None,
        ge=1,
        description="Records per producer batch of the join table's changelog. On a broker whose end "
        "offsets are approximate (the embedded Tansu) 1 makes table recovery after a rebalance exact, at "
        "a large cost in throughput; Apache Kafka needs nothing (default: faust's batching).",
    )


class MonitorService:
    """The monitor wired up: faust app, handlers, publisher, HTTP."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.metrics = MonitorMetrics.create(self.registry)
        self.options = KafkaOptions.from_settings(settings, client_id="driftloop-monitor")
        self.publisher = Publisher(self.options)
        self.ground_truth = GroundTruthFilter(self.options, self.publisher, f"{settings.monitor_group}-ground-truth")
        store = build_store(settings)
        batching: dict[str, Any] = (
            {"producer_max_batch_size": settings.changelog_batch} if settings.changelog_batch else {}
        )
        settings.faust_dir.mkdir(parents=True, exist_ok=True)
        self.faust = faust.App(
            settings.monitor_group,
            broker=";".join(f"kafka://{host}" for host in self.options.bootstrap.split(",")),
            store="memory://",
            datadir=str(settings.faust_dir / "{conf.name}-data"),
            web_enabled=False,
            topic_partitions=settings.kafka_partitions,
            topic_replication_factor=settings.kafka_replication,
            broker_session_timeout=6.0,
            broker_heartbeat_interval=1.0,
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=False,
            consumer_max_fetch_size=settings.fetch_bytes,
            **batching,
        )
        self.table = self.faust.Table("monitor-join", default=None, partitions=settings.kafka_partitions)
        self.handlers = MonitorHandlers(
            Registry(store),
            SpecCatalog(store),
            store,
            self.publisher,
            self.metrics,
            self.table,
            timedelta(seconds=settings.accuracy_window_s),
            self._settled,
            settings.join_max_rows,
        )
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._agents()
        self.faust.on_partitions_revoked.connect(self._revoked)  # type: ignore[arg-type]
        self.app = add_routes(self)
        self.http = HttpServer(self.app, settings.http_host, settings.port)

    def _agents(self) -> None:
        handlers = self.handlers
        routes: dict[str, Callable[[Any], Awaitable[None]]] = {
            topics.PREDICTIONS: handlers.on_predictions,
            topics.ANNOTATIONS_GROUND_TRUTH: handlers.on_annotation,
            topics.DEPLOYMENTS: handlers.on_deployment,
            topics.TRAINING_COMPLETED: handlers.on_training,
        }
        for name, handle in routes.items():
            topic = self.faust.topic(name, key_serializer="raw", value_serializer="raw")
            self.faust.agent(topic, name=f"monitor-{name}")(self._consumer(name, handle))

    def _consumer(self, name: str, handle: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        async def run(event: Any, delivery: Delivery) -> None:
            if event is not None:
                await handle(event)

        decode = decode_ground_truth if name == topics.ANNOTATIONS_GROUND_TRUTH else None
        policy: MessagePolicy[Any] = MessagePolicy(run, decode)

        async def agent(stream: Any) -> None:
            async for record in stream.events():
                message = record.message
                delivery = Delivery(
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    key=message.key,
                    value=message.value,
                    timestamp_ms=int((message.timestamp or 0) * 1000),
                )
                await self._handle(policy, delivery)

        agent.__name__ = f"monitor_{name.replace('.', '_')}"
        return agent

    async def _handle(self, policy: MessagePolicy[Any], delivery: Delivery) -> None:
        """One message, as the bus handles one: a transient failure (the store or the broker away)
        is retried in place with backoff -- the partition waits, nothing is skipped; only what can
        never be handled goes to ``<topic>.dlq``. A stop in the middle leaves the message unacked,
        so the next owner of the partition handles it again (the handlers are idempotent)."""
        backoff = Backoff()
        while True:
            verdict = await policy(delivery)
            if isinstance(verdict, Refused):
                try:
                    await self.publisher.dead_letter(delivery.position, delivery.key, delivery.value, verdict.reason)
                    return
                except TRANSIENT_ERRORS as err:
                    log.warning("cannot write dead letter yet (%s); will retry", err)
            elif verdict is Outcome.DONE:
                return
            self.metrics.handler_retries.labels(delivery.topic).inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff.next_delay())
            if self._stopping.is_set():
                raise asyncio.CancelledError  # not handled: not acknowledged

    async def _revoked(self, sender: Any, revoked: Any, **_: Any) -> None:
        await self.handlers.release()

    def _settled(self) -> bool:
        """The join table holds everything of the assigned partitions (recovered, no rebalance)."""
        app = self.faust
        recovery = getattr(app.tables, "recovery", None)  # faust's TableManager, once started
        return recovery is not None and recovery.completed.is_set() and not recovery.in_recovery

    def not_ready(self) -> str | None:
        if self._stopping.is_set():
            return "stopping"
        if not self._started.is_set():
            return "not consuming yet"
        if not self.ground_truth.subscriber.started.is_set():
            return "not reading annotations yet"
        return None if self._settled() else "recovering the join table after a start or rebalance"

    async def consume(self) -> None:
        """Connect, start the faust app, checkpoint and expire until stopped."""
        try:
            await self.publisher.start(self._stopping)
        except BrokerUnavailable:
            return
        filtering: asyncio.Task[None] | None = None
        try:
            with contextlib.suppress(BrokerUnavailable):
                read = (*CONSUMED, topics.ANNOTATIONS)
                await ensure_topics(
                    self.options, [*read, *map(topics.dlq, read)], partitions=self.settings.kafka_partitions
                )
            await self.faust.start()
            filtering = asyncio.create_task(self.ground_truth.run())
            self._started.set()
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self.settings.checkpoint_s)
                try:
                    await self.handlers.checkpoint()
                except Exception as err:  # the store may be briefly away: the next round retries
                    log.warning("checkpointing monitor state failed: %s", err)
        finally:
            self.ground_truth.stop()
            if filtering is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(filtering, 30)
            with contextlib.suppress(Exception):
                await self.faust.stop()
            with contextlib.suppress(Exception):
                await self.handlers.checkpoint(only_dirty=False)
            await self.publisher.stop()

    def stop(self) -> None:
        self._stopping.set()
        self.http.stop()

    async def run(self) -> None:
        """Serve until :meth:`stop` (or SIGTERM / SIGINT)."""
        self.http.bind()
        await run_until_signalled([self.http.run, self.consume], [self.stop])


def add_routes(service: MonitorService) -> Any:
    """Health, metrics, the landing page ``/``, ``/v1/models/{m}/status`` and ``/report/{m}``."""
    from fastapi import FastAPI

    app = FastAPI(title="driftloop monitor", version=__version__)
    add_health_routes(app, service.registry, service.not_ready)
    add_error_handler(app)
    handlers = service.handlers

    @app.get("/", response_class=HTMLResponse)
    async def landing() -> Response:
        return HTMLResponse(render_landing(await handlers.overview(), utc_now()))

    @app.get("/v1/models/{model}/status")
    async def model_status(model: str) -> Response:
        status = await handlers.status(model)
        if status is None:
            raise ModelNotFound(f"model {model!r} has no spec; apply one with `driftloop specs apply`")
        return JSONResponse(status)

    @app.get("/report/{model}", response_class=HTMLResponse)
    async def report(model: str) -> Response:
        watch = await handlers.watch_of(model)
        if watch is None:
            raise ModelNotFound(f"model {model!r} has no spec; apply one with `driftloop specs apply`")
        status = await handlers.status(model)
        assert status is not None
        return HTMLResponse(render_report(watch, status, utc_now()))

    return app


def main() -> int:
    """``driftloop serve monitor``."""
    settings = load_settings(MonitorSettings)
    configure_logging(settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        run_forever(MonitorService(settings).run())
    return 0
