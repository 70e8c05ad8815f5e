"""Reading what services published, for assertions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer

from shared import topics
from shared.bus import KafkaOptions
from shared.events import FeatureValue, Label, PredictionsLogged, decode_as


@dataclass(frozen=True)
class LoggedRow:
    """One row of a ``PredictionsLogged`` message, for assertions."""

    model: str
    version: int
    variant: str
    inference_id: str
    features: dict[str, FeatureValue]
    label: Label
    probabilities: dict[str, float]
    latency_ms: float
    predicted_at: datetime


def rows_of(event: PredictionsLogged) -> list[LoggedRow]:
    """The rows of a columnar prediction message."""
    return [
        LoggedRow(
            event.model,
            event.version,
            event.variant,
            event.inference_ids[i],
            dict(zip(event.feature_names, event.features[i], strict=True)),
            event.labels[i],
            dict(zip(event.classes, event.probabilities[i], strict=True)),
            event.latency_ms[i],
            event.predicted_at[i],
        )
        for i in range(len(event.inference_ids))
    ]


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


async def read_predictions(options: KafkaOptions, model: str, rows: int, timeout: float = 30) -> list[LoggedRow]:
    """At least ``rows`` predictions of ``model`` from the start of ``predictions``, as rows."""
    consumer = AIOKafkaConsumer(
        topics.PREDICTIONS, bootstrap_servers=options.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[LoggedRow] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < rows:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for r in records:
                        if r.key == model.encode() and r.value is not None:
                            found += rows_of(decode_as(PredictionsLogged, r.value))
    finally:
        await consumer.stop()
    return found


async def read_settled(options: KafkaOptions, topic: str, key: str, settle_s: float = 3.0) -> list[bytes]:
    """Every value on ``topic`` keyed ``key``, once nothing new has arrived for ``settle_s``."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=options.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[bytes] = []
    quiet_since = asyncio.get_running_loop().time()
    try:
        while asyncio.get_running_loop().time() - quiet_since < settle_s:
            batch = await consumer.getmany(timeout_ms=200)
            fresh = [r.value for rs in batch.values() for r in rs if r.key == key.encode() and r.value is not None]
            if fresh:
                found += fresh
                quiet_since = asyncio.get_running_loop().time()
    finally:
        await consumer.stop()
    return found


async def wait_for(condition: Callable[[], object], timeout: float = 60) -> None:
    """Poll ``condition`` until it holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)
