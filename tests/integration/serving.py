"""An inference or monitor service on a loopback port for a test, with an HTTP client to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from services.inference.app import InferenceService, InferenceSettings
from services.monitor.app import MonitorService, MonitorSettings
from shared.bus import KafkaOptions
from shared.service import BusService
from shared.store import FileStore
from tests.integration.topic_reading import wait_for


@asynccontextmanager
async def inference_service(
    options: KafkaOptions,
    store: FileStore,
    tmp_path: Path,
    model: str,
    client_timeout: float = 10,
    **settings: Any,
) -> AsyncIterator[tuple[InferenceService, httpx.AsyncClient]]:
    """Run the inference service until the block ends, once ``model`` is loaded and the service
    consumes; ``settings`` override :class:`InferenceSettings` fields (64 KiB bodies by default)."""
    config = InferenceSettings(
        **{
            "kafka_bootstrap": options.bootstrap,
            "kafka_idempotence": False,
            "store_kind": "file",
            "store_root": store.root,
            "port": 0,
            "refresh_s": 0.5,
            "journal_dir": tmp_path / "journal",
            "max_body_bytes": 64 * 1024,
            **settings,
        }
    )
    service = InferenceService(config)
    task = asyncio.create_task(service.run())
    try:
        await wait_for(lambda: service.subscriber.started.is_set() and model in service.handlers.slots, timeout=30)
        base_url = f"http://127.0.0.1:{service.http.port}"
        async with httpx.AsyncClient(base_url=base_url, timeout=client_timeout) as client:
            yield service, client
    finally:
        service.stop()
        await asyncio.wait_for(task, 30)


@asynccontextmanager
async def monitor_service(
    options: KafkaOptions, store: FileStore, tmp_path: Path, group: str, **settings: Any
) -> AsyncIterator[tuple[MonitorService, httpx.AsyncClient]]:
    """Run the monitor service (consumer group ``group``) until the block ends, once it is ready;
    ``settings`` override :class:`MonitorSettings` fields (checkpoints every 0.5 s by default)."""
    config = MonitorSettings(
        **{
            "kafka_bootstrap": options.bootstrap,
            "kafka_idempotence": False,
            "store_kind": "file",
            "store_root": store.root,
            "port": 0,
            "checkpoint_s": 0.5,
            "monitor_group": group,
            "data_dir": tmp_path,
            **settings,
        }
    )
    service = MonitorService(config)
    task = asyncio.create_task(service.run())
    try:
        await wait_for(lambda: service.not_ready() is None, timeout=60)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}", timeout=10) as client:
            yield service, client
    finally:
        if not task.done():
            service.stop()
            await asyncio.wait_for(task, 60)


async def consuming(service: BusService) -> asyncio.Task[None]:
    """Start ``service`` in a task; return it once the service's consumer has joined its group."""
    task = asyncio.create_task(service.run())
    async with asyncio.timeout(20):
        while not service.subscriber.started.is_set():
            await asyncio.sleep(0.02)
    return task


async def stop_service(service: BusService, task: asyncio.Task[None], timeout: float = 60) -> None:
    """Stop a service started by :func:`consuming` and wait for it to end."""
    service.stop()
    await asyncio.wait_for(task, timeout)
