"""The bus's bound on record size: the setting reaches the producer, a record over it is refused
with a driftloop error naming topic and sizes (never aiokafka's), and dead letters always fit.

The producer is the only fake (the real Kafka path: ``tests/integration/test_wide_messages.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from shared import topics
from shared.bus import (
    RECORD_FRAMING_BYTES,
    Delivery,
    KafkaOptions,
    MessagePolicy,
    Publisher,
    Refused,
    record_bytes,
)
from shared.config import DriftloopSettings
from shared.errors import BrokerUnavailable, PayloadTooLarge
from shared.events import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MIN_MESSAGE_BYTES,
    AnnotationSubmitted,
    DeadLetter,
    SourcePosition,
    decode_as,
)


@dataclass
class FakeProducer:
    """Records what is sent; refuses records over ``broker_limit`` as the broker would."""

    broker_limit: int | None = None
    sent: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)

    async def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.broker_limit is not None and len(value) > self.broker_limit:
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append((topic, value, key))
            future.set_result(None)
        return future


def publisher(
    limit: int = DEFAULT_MAX_MESSAGE_BYTES, broker_limit: int | None = None
) -> tuple[Publisher, FakeProducer]:
    pub = Publisher(KafkaOptions(bootstrap="127.0.0.1:1", idempotence=False, max_message_bytes=limit))
    producer = FakeProducer(broker_limit)
    pub._producer = producer
    return pub, producer


def test_the_setting_reaches_the_options_and_the_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_KAFKA_MAX_MESSAGE_BYTES", "500000")
    settings = DriftloopSettings(kafka_bootstrap="kafka:9092")
    options = KafkaOptions.from_settings(settings)
    assert options.max_message_bytes == 500_000 == Publisher(options).max_message_bytes
    monkeypatch.delenv("DRIFTLOOP_KAFKA_MAX_MESSAGE_BYTES")
    assert DriftloopSettings(kafka_bootstrap="kafka:9092").kafka_max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    assert DEFAULT_MAX_MESSAGE_BYTES + RECORD_FRAMING_BYTES < 1_048_576, "under aiokafka's and Kafka's defaults"
    with pytest.raises(ValueError, match="greater than or equal to 16384"):
        DriftloopSettings(kafka_max_message_bytes=1000)


async def test_the_producer_is_built_with_the_limit_and_room_for_framing() -> None:
    producer = Publisher(KafkaOptions(bootstrap="127.0.0.1:1", max_message_bytes=300_000))._new_producer()
    assert producer._max_request_size == 300_000 + RECORD_FRAMING_BYTES


def test_a_record_is_measured_by_its_value_key_and_headers() -> None:
    assert record_bytes(b"x" * 10) == 10
    assert record_bytes(b"x" * 10, b"key", [("h", b"12"), ("hé", b"")]) == 10 + 3 + 3 + 3


@pytest.mark.parametrize("how", ["send", "enqueue", "publish", "publish_many", "publish_contract"])
async def test_a_record_over_the_limit_is_refused_naming_its_topic_and_sizes(how: str) -> None:
    pub, producer = publisher(limit=20_000)
    event = AnnotationSubmitted(model="m", record_id="r", features={"x": "y" * 30_000}, label=1)
    with pytest.raises(PayloadTooLarge) as info:
        if how == "send":
            await pub.send(topics.ANNOTATIONS, b"v" * 20_000, b"m")
        elif how == "enqueue":
            await pub.enqueue(topics.ANNOTATIONS, b"v" * 20_001)
        elif how == "publish":
            await pub.publish(event)
        elif how == "publish_many":
            await pub.publish_many([event.model_copy(update={"features": {}}), event])
        else:
            await pub.publish_contract("annotations.dlq", event, "m")
    message = info.value.message
    assert "annotations" in message and "20,000-byte limit" in message and "kafka_max_message_bytes" in message
    assert info.value.status_code == 413 and not isinstance(info.value, BrokerUnavailable), "not an outage"
    assert producer.sent == [], "nothing of a refused batch is sent"


async def test_a_record_at_the_limit_is_sent() -> None:
    pub, producer = publisher(limit=20_000)
    await pub.send(topics.ANNOTATIONS, b"v" * 19_999, b"m")
    assert len(producer.sent) == 1


async def test_a_record_the_broker_refuses_as_too_large_is_payload_too_large_not_an_outage() -> None:
    pub, _ = publisher(limit=50_000, broker_limit=10_000)
    with pytest.raises(PayloadTooLarge, match="annotations refused a 20,001-byte record as too large"):
        await pub.send(topics.ANNOTATIONS, b"v" * 20_000, b"m")


async def test_a_dead_letter_of_a_huge_record_is_truncated_to_fit() -> None:
    pub, producer = publisher()
    raw = b"\x00not json" * 250_000  # 2.25 MB
    await pub.dead_letter(SourcePosition(topic=topics.ANNOTATIONS, partition=1, offset=5), b"m", raw, "not JSON")
    [(topic, value, key)] = producer.sent
    assert topic == topics.dlq(topics.ANNOTATIONS) and key == b"m"
    assert record_bytes(value, key) <= DEFAULT_MAX_MESSAGE_BYTES
    letter = decode_as(DeadLetter, value)
    assert letter.payload_truncated and letter.payload_bytes == len(raw) and raw.startswith(letter.original_bytes())


async def test_a_dead_letter_the_broker_still_refuses_is_sent_again_shorter() -> None:
    pub, producer = publisher(broker_limit=MIN_MESSAGE_BYTES)
    raw = b"z" * 400_000  # fits our limit whole (1.2 MB as a letter: truncated), not the broker's
    await pub.dead_letter(SourcePosition(topic=topics.ANNOTATIONS, partition=0, offset=9), None, raw, "bad")
    [(_, value, _)] = producer.sent
    letter = decode_as(DeadLetter, value)
    assert len(value) <= MIN_MESSAGE_BYTES and letter.payload_truncated and letter.payload_bytes == 400_000


async def test_a_handler_whose_output_is_too_large_dead_letters_its_message_at_once() -> None:
    calls = 0

    async def handler(message: Any, delivery: Delivery) -> None:
        nonlocal calls
        calls += 1
        raise PayloadTooLarge("a 2,000,000-byte record for annotations.rejected is over the limit")

    policy: MessagePolicy[Any] = MessagePolicy(handler, lambda topic, data: data)
    verdict = await policy(Delivery(topics.ANNOTATIONS, 0, 0, None, b"{}", 0))
    assert isinstance(verdict, Refused) and "PayloadTooLarge" in verdict.reason and calls == 1
