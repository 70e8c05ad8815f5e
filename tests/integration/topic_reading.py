"""Reading what services published, for assertions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from shared.bus import KafkaOptions


async def read_keyed(
    options: KafkaOptions, topic: str, key: str | None, count: int, timeout: float = 30
) -> list[bytes]:
    """The first ``count`` values on ``topic`` whose key is ``key`` (a model name; None: any), from the start."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=options.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                batch = await consumer.getmany(timeout_ms=200)
                found += [
                    r.value
                    for rs in batch.values()
                    for r in rs
                    if (key is None or r.key == key.encode()) and r.value is not None
                ]
    finally:
        await consumer.stop()
    return found


async def wait_for(condition: Callable[[], object], timeout: float = 60) -> None:
    """Poll ``condition`` until it holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)
