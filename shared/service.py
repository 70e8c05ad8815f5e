"""The shape every consuming service shares: a subscriber, a publisher, health and metrics over HTTP.

A service subclasses :class:`BusService`, builds its handlers and its :class:`Subscriber` in
``__init__``, and may add background loops (the trainer's run scheduler). ``run()`` serves until
SIGTERM/SIGINT or :meth:`BusService.stop`: in-flight work finishes, offsets are committed, the
HTTP server drains, the producer flushes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from shared import __version__
from shared.bus import KafkaOptions, Publisher, Subscriber, ensure_topics
from shared.config import ServiceSettings
from shared.errors import BrokerUnavailable
from shared.http import HttpServer, add_health_routes
from shared.lifecycle import run_until_signalled

log = logging.getLogger(__name__)


class BusService:
    """Lifecycle of a Kafka-driven service with an HTTP port for health and metrics.

    Parameters
    ----------
    settings
        The service's settings (Kafka, store, port).
    name
        Short service name, used in client ids and the HTTP title.
    topics
        Topics the service creates at start when missing (it also relies on auto-creation).
    """

    subscriber: Subscriber[Any]

    def __init__(self, settings: ServiceSettings, name: str, topics: Sequence[str]) -> None:
        self.settings = settings
        self.name = name
        self.topics = list(topics)
        self.registry = CollectorRegistry()
        self.options = KafkaOptions.from_settings(settings, client_id=f"driftloop-{name}")
        self.publisher = Publisher(self.options)
        self.app = FastAPI(title=f"driftloop {name}", version=__version__)
        add_health_routes(self.app, self.registry, self.not_ready)
        self.http = HttpServer(self.app, settings.http_host, settings.port)
        self.background: list[Callable[[], Awaitable[None]]] = []
        self.on_stop: list[Callable[[], None]] = []
        self._stopping = asyncio.Event()

    def not_ready(self) -> str | None:
        """None when the service does its work; else why not (``/health/ready`` answers 503)."""
        if self.subscriber.stopping:
            return "stopping"
        return None if self.subscriber.started.is_set() else "not consuming yet"

    async def consume(self) -> None:
        """Connect (retrying while the broker is down), then consume and run the background loops."""
        try:
            await self.publisher.start(self._stopping)
        except BrokerUnavailable:
            return
        try:
            try:
                await ensure_topics(self.options, self.topics, partitions=self.settings.kafka_partitions)
            except BrokerUnavailable as err:
                log.warning("could not create topics (%s); relying on auto-creation", err)
            await asyncio.gather(self.subscriber.run(), *(loop() for loop in self.background))
        finally:
            await self.publisher.stop()

    def stop(self) -> None:
        """Finish in-flight work, commit, close."""
        self._stopping.set()
        self.subscriber.stop()
        for stop in self.on_stop:
            stop()
        self.http.stop()

    async def run(self) -> None:
        """Serve until :meth:`stop` (or SIGTERM / SIGINT)."""
        self.http.bind()
        await run_until_signalled([self.http.run, self.consume], [self.stop])
