"""The bus against the real local broker: round trip, resume, DLQ, retries, outage recovery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from shared.broker import EmbeddedBroker, free_port
from shared.bus import Delivery, KafkaOptions, Publisher, Subscriber, ensure_topics
from shared.errors import BrokerUnavailable, InvalidInput
from shared.events import AnnotationSubmitted, DeadLetter, decode_as, encode_event
from tests.integration.topic_reading import read_keyed

pytestmark = pytest.mark.integration


def annotation(i: int, model: str = "credit") -> AnnotationSubmitted:
    return AnnotationSubmitted(model=model, record_id=f"r-{i}", features={"x": float(i)}, label=i % 2)


def decoder(topic: str, data: bytes) -> AnnotationSubmitted:
    return decode_as(AnnotationSubmitted, data)


@pytest.fixture
async def publisher(kafka: KafkaOptions) -> AsyncIterator[Publisher]:
    pub = Publisher(kafka)
    await pub.start(max_wait_s=10)
    yield pub
    await pub.stop()


async def send_all(pub: Publisher, topic: str, items: list[AnnotationSubmitted | bytes]) -> None:
    for item in items:
        if isinstance(item, bytes):
            await pub.send(topic, item, key=b"credit")
        else:
            await pub.send(topic, encode_event(item), key=item.model.encode())


async def consume_until(sub: Subscriber[Any], done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Run ``sub`` until ``done()`` holds, then stop it gracefully and wait for it to close."""
    task = asyncio.create_task(sub.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():
                if task.done():
                    task.result()
                    raise AssertionError("subscriber ended early")
                await asyncio.sleep(0.02)
    finally:
        sub.stop()
        await asyncio.wait_for(task, 15)


def collector(seen: list[AnnotationSubmitted]) -> Callable[[AnnotationSubmitted, Delivery], Awaitable[None]]:
    async def handle(event: AnnotationSubmitted, delivery: Delivery) -> None:
        seen.append(event)

    return handle


async def test_round_trip(kafka: KafkaOptions, publisher: Publisher, unique: str) -> None:
    topic = f"rt-{unique}"
    await ensure_topics(kafka, [topic], partitions=3)
    events = [annotation(i, model=f"m{i % 4}") for i in range(30)]
    assert await publisher.publish_many([]) == 0
    await send_all(publisher, topic, list(events))
    seen: list[AnnotationSubmitted] = []
    sub = Subscriber(kafka, f"g-{unique}", [topic], collector(seen), publisher, decoder)
    await consume_until(sub, lambda: len(seen) >= 30)
    assert sorted(seen, key=lambda e: e.record_id) == sorted(events, key=lambda e: e.record_id)
    assert sub.stats.handled == 30 and sub.stats.dead_lettered == 0


async def test_same_model_keeps_order_on_one_partition(kafka: KafkaOptions, publisher: Publisher, unique: str) -> None:
    topic = f"order-{unique}"
    await ensure_topics(kafka, [topic], partitions=4)
    partitions: dict[str, set[int]] = {}
    order: list[str] = []

    async def handle(event: AnnotationSubmitted, delivery: Delivery) -> None:
        partitions.setdefault(event.model, set()).add(delivery.partition)
        if event.model == "a":
            order.append(event.record_id)

    await send_all(publisher, topic, [annotation(i, model="a" if i % 2 else "b") for i in range(40)])
    sub = Subscriber(kafka, f"g-{unique}", [topic], handle, publisher, decoder)
    await consume_until(sub, lambda: sub.stats.handled >= 40)
    assert all(len(p) == 1 for p in partitions.values())
    assert order == [f"r-{i}" for i in range(1, 40, 2)]


async def test_restart_resumes_from_committed_offset(kafka: KafkaOptions, publisher: Publisher, unique: str) -> None:
    topic = f"resume-{unique}"
    await ensure_topics(kafka, [topic], partitions=3)
    events = [annotation(i, model=f"m{i % 5}") for i in range(40)]
    await send_all(publisher, topic, list(events))

    first: list[AnnotationSubmitted] = []
    sub_a: Subscriber[AnnotationSubmitted]

    async def stop_after_15(event: AnnotationSubmitted, delivery: Delivery) -> None:
        first.append(event)
        if len(first) == 15:
            sub_a.stop()

    sub_a = Subscriber(kafka, f"g-{unique}", [topic], stop_after_15, publisher, decoder)
    await asyncio.wait_for(sub_a.run(), 20)
    assert len(first) == 15

    second: list[AnnotationSubmitted] = []
    sub_b = Subscriber(kafka, f"g-{unique}", [topic], collector(second), publisher, decoder)
    await consume_until(sub_b, lambda: len(first) + len(second) >= 40)
    await asyncio.sleep(0.5)  # anything duplicated would arrive now
    ids = [e.record_id for e in first + second]
    assert len(ids) == 40
    assert set(ids) == {e.record_id for e in events}


async def test_poison_messages_go_to_dlq_and_later_messages_are_handled(
    kafka: KafkaOptions, publisher: Publisher, unique: str
) -> None:
    topic = f"poison-{unique}"
    await ensure_topics(kafka, [topic], partitions=1)
    wrong_type = encode_event(annotation(2)).replace(b'"confidence":1.0', b'"confidence":"very"')
    await send_all(publisher, topic, [annotation(1), b"{not json", wrong_type, annotation(3)])
    seen: list[AnnotationSubmitted] = []
    sub = Subscriber(kafka, f"g-{unique}", [topic], collector(seen), publisher, decoder)
    await consume_until(sub, lambda: len(seen) >= 2 and sub.stats.dead_lettered >= 2)
    assert [e.record_id for e in seen] == ["r-1", "r-3"]

    letters = [DeadLetter.model_validate_json(v) for v in await read_keyed(kafka, f"{topic}.dlq", None, 2)]
    assert [letter.source.offset for letter in letters] == [1, 2]
    assert all(letter.source.topic == topic and letter.source.partition == 0 for letter in letters)
    assert letters[0].original_bytes() == b"{not json"
    assert "Invalid JSON" in letters[0].reason
    assert letters[1].original_bytes() == wrong_type
    assert "confidence: Input should be a valid number" in letters[1].reason
    assert letters[0].key == "credit"


async def test_handler_errors_retry_or_dead_letter(kafka: KafkaOptions, publisher: Publisher, unique: str) -> None:
    topic = f"errors-{unique}"
    await ensure_topics(kafka, [topic], partitions=1)
    await send_all(publisher, topic, [annotation(i) for i in range(4)])
    attempts: dict[str, int] = {}
    handled: list[str] = []

    async def handle(event: AnnotationSubmitted, delivery: Delivery) -> None:
        attempts[event.record_id] = attempts.get(event.record_id, 0) + 1
        if event.record_id == "r-0" and attempts["r-0"] < 3:
            raise BrokerUnavailable("store is down for a moment")  # transient: retried
        if event.record_id == "r-1":
            raise InvalidInput("label 1 is not allowed here")  # permanent: dead-lettered at once
        if event.record_id == "r-2":
            raise RuntimeError("a bug")  # unknown: retried max_attempts times, then dead-lettered
        handled.append(event.record_id)

    sub = Subscriber(kafka, f"g-{unique}", [topic], handle, publisher, decoder, max_attempts=3)
    await consume_until(sub, lambda: "r-3" in handled)
    assert handled == ["r-0", "r-3"]
    assert attempts == {"r-0": 3, "r-1": 1, "r-2": 3, "r-3": 1}
    letters = [DeadLetter.model_validate_json(v) for v in await read_keyed(kafka, f"{topic}.dlq", None, 2)]
    assert letters[0].reason == "InvalidInput: label 1 is not allowed here"
    assert letters[1].reason.startswith("handler failed 3 times: RuntimeError: a bug")
    assert sub.stats.retries >= 4


async def test_broker_down_then_up(tmp_path: Any, unique: str) -> None:
    """Publisher and subscriber started before the broker exists connect once it comes up."""
    port = free_port()
    options = KafkaOptions(bootstrap=f"127.0.0.1:{port}", client_id="outage", idempotence=False)
    topic = f"outage-{unique}"
    publisher = Publisher(options)
    with pytest.raises(BrokerUnavailable, match="cannot reach Kafka"):
        await publisher.start(max_wait_s=0.5)

    seen: list[AnnotationSubmitted] = []
    sub = Subscriber(options, f"g-{unique}", [topic], collector(seen), publisher, decoder)
    run = asyncio.create_task(sub.run())
    await asyncio.sleep(2.0)
    assert not sub.started.is_set() and not run.done()  # waiting with backoff, not crashed

    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
    broker.start()
    try:
        await publisher.start(max_wait_s=10)
        await ensure_topics(options, [topic], partitions=1)
        await send_all(publisher, topic, [annotation(1)])
        async with asyncio.timeout(30):
            while not seen:
                await asyncio.sleep(0.05)
        assert seen[0].record_id == "r-1"
    finally:
        sub.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run, 15)
        await publisher.stop()
        broker.stop()


async def test_broker_restart_mid_stream(tmp_path: Any, unique: str) -> None:
    """A broker that dies and comes back: the consumer neither crashes nor spins, and resumes."""
    port = free_port()
    options = KafkaOptions(bootstrap=f"127.0.0.1:{port}", client_id="restart", idempotence=False)
    topic = f"restart-{unique}"
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
    broker.start()
    publisher = Publisher(options)
    await publisher.start(max_wait_s=10)
    seen: list[AnnotationSubmitted] = []
    sub = Subscriber(options, f"g-{unique}", [topic], collector(seen), publisher, decoder)
    run = asyncio.create_task(sub.run())
    try:
        await ensure_topics(options, [topic], partitions=1)
        await send_all(publisher, topic, [annotation(1)])
        async with asyncio.timeout(20):
            while not seen:
                await asyncio.sleep(0.05)
        broker.stop()
        await asyncio.sleep(3.0)
        assert not run.done()
        broker.start()  # memory storage: the topic comes back empty
        await ensure_topics(options, [topic], partitions=1)
        async with asyncio.timeout(60):
            while len(seen) < 2:
                with contextlib.suppress(BrokerUnavailable):
                    await send_all(publisher, topic, [annotation(2)])
                await asyncio.sleep(1.0)
        assert {e.record_id for e in seen} >= {"r-1", "r-2"}
    finally:
        sub.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run, 15)
        await publisher.stop()
        broker.stop()


async def test_deferred_commit_waits_for_release(kafka: KafkaOptions, publisher: Publisher, unique: str) -> None:
    """A buffering handler: nothing is committed until the buffer is made durable and released."""
    topic = f"deferred-{unique}"
    await ensure_topics(kafka, [topic], partitions=1)
    await send_all(publisher, topic, [annotation(i) for i in range(10)])
    buffer: list[str] = []
    durable: list[str] = []
    sub: Subscriber[AnnotationSubmitted]

    async def handle(event: AnnotationSubmitted, delivery: Delivery) -> None:
        buffer.append(event.record_id)
        if len(buffer) + len(durable) == 6:
            sub.stop()

    async def flush_in_fours() -> None:  # only whole groups of 4 become durable while running
        while len(buffer) >= 4:
            durable.extend(buffer[:4])
            del buffer[:4]
        if not buffer:
            sub.release()

    async def crash_drain() -> None:  # as if the process died: the buffer is lost, nothing released
        buffer.clear()

    sub = Subscriber(
        kafka,
        f"g-{unique}",
        [topic],
        handle,
        publisher,
        decoder,
        max_records=1,
        drain=crash_drain,
        after_poll=flush_in_fours,
    )
    await asyncio.wait_for(sub.run(), 20)
    assert durable == ["r-0", "r-1", "r-2", "r-3"]

    async def drain_all() -> None:
        durable.extend(buffer)
        buffer.clear()
        sub2.release()

    sub2 = Subscriber(kafka, f"g-{unique}", [topic], collector_to(buffer), publisher, decoder, drain=drain_all)
    await consume_until(sub2, lambda: len(buffer) >= 6)
    assert durable == [f"r-{i}" for i in range(10)], "the unreleased records come back, the released ones do not"


async def test_a_release_holding_an_offset_commits_below_it_and_the_lag_says_how_far_behind(
    kafka: KafkaOptions, publisher: Publisher, unique: str
) -> None:
    """Ingest flushes each model on its own: what another model still buffers is not committed."""
    topic = f"holding-{unique}"
    await ensure_topics(kafka, [topic], partitions=1)
    await send_all(publisher, topic, [annotation(i) for i in range(10)])
    lags: list[int] = []
    seen: list[str] = []
    sub: Subscriber[AnnotationSubmitted]

    async def handle(event: AnnotationSubmitted, delivery: Delivery) -> None:
        seen.append(event.record_id)
        if len(seen) == 6:
            sub.stop()

    async def after_poll() -> None:
        lags.append(sub.lag)
        sub.release({(topic, 0): 2})  # offsets 0-1 flushed; from offset 2 on, something is still buffered

    async def crash_drain() -> None:  # nothing more becomes durable
        return None

    sub = Subscriber(
        kafka,
        f"g-{unique}",
        [topic],
        handle,
        publisher,
        decoder,
        max_records=1,
        drain=crash_drain,
        after_poll=after_poll,
    )
    await asyncio.wait_for(sub.run(), 20)
    assert lags[0] == 9, "one read of ten: nine behind"
    assert lags[-1] < lags[0]

    again: list[str] = []

    async def drain_all() -> None:
        sub2.release()

    sub2 = Subscriber(kafka, f"g-{unique}", [topic], collector_to(again), publisher, decoder, drain=drain_all)
    await consume_until(sub2, lambda: len(again) >= 8)
    assert again == [f"r-{i}" for i in range(2, 10)], "redelivered from the held offset, not from the last handled"
    assert sub2.lag == 0 and not sub2.behind


def collector_to(target: list[str]) -> Callable[[AnnotationSubmitted, Delivery], Awaitable[None]]:
    async def handle(event: AnnotationSubmitted, delivery: Delivery) -> None:
        target.append(event.record_id)

    return handle
