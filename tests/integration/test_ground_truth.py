"""The monitor's ground-truth filter through the real broker: only what can join is forwarded."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import RecordMetadata, TopicPartition

from services.monitor.ground_truth import GroundTruthFilter
from shared import topics
from shared.bus import KafkaOptions, Publisher
from shared.errors import BrokerUnavailable
from shared.events import AnnotationSubmitted, decode_as, encode_event
from tests.integration.topic_reading import read_settled


def annotation(model: str, i: int, inference_id: str | None) -> bytes:
    return encode_event(
        AnnotationSubmitted(
            model=model, record_id=f"r-{i}", features={"x": float(i)}, label=i % 2, inference_id=inference_id
        )
    )


async def committed(options: KafkaOptions, group: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=options.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topics.ANNOTATIONS) or ())
        return {p: await consumer.committed(TopicPartition(topics.ANNOTATIONS, p)) for p in partitions}
    finally:
        await consumer.stop()


async def end_offsets(options: KafkaOptions) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=options.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topics.ANNOTATIONS, p) for p in consumer.partitions_for_topic(topics.ANNOTATIONS) or ()
        ]
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: (ends[tp] or None) for tp in sorted(partitions)}
    finally:
        await consumer.stop()


async def filtering_until(sieve: GroundTruthFilter, done: Any, timeout: float = 30.0) -> None:
    task = asyncio.create_task(sieve.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():
                assert not task.done(), "the filter stopped early"
                await asyncio.sleep(0.05)
    finally:
        sieve.stop()
        await asyncio.wait_for(task, 15)


async def test_only_annotations_with_an_inference_id_are_forwarded_keyed_by_their_model(
    options: KafkaOptions, publisher: Publisher, unique: str
) -> None:
    model = f"m{unique}"
    history = [annotation(model, i, None) for i in range(200)]
    labels = {f"inf-{i}": annotation(model, 1000 + i, f"inf-{i}") for i in range(5)}
    for value in history[:100]:
        await publisher.send(topics.ANNOTATIONS, value, model.encode())
    for value in labels.values():  # an annotation system that does not key its records
        await publisher.send(topics.ANNOTATIONS, value, None)
    for value in history[100:]:
        await publisher.send(topics.ANNOTATIONS, value, model.encode())

    sieve = GroundTruthFilter(options, publisher, f"gt-{unique}")
    await filtering_until(sieve, lambda: sieve.passed + sieve.forwarded >= 205)

    assert sieve.forwarded == 5 and sieve.passed == 200, "the history is passed over unread"
    forwarded = await read_settled(options, topics.ANNOTATIONS_GROUND_TRUTH, model, settle_s=1.0)
    assert sorted(forwarded) == sorted(labels.values()), "byte for byte, and keyed by the model"
    assert {decode_as(AnnotationSubmitted, v).inference_id for v in forwarded} == set(labels)

    assert await committed(options, f"gt-{unique}") == await end_offsets(options), "all of it committed"


class RefusingOnce(Publisher):
    """A publisher whose first forward the broker 'refuses' (the seam: the filter's producer)."""

    def __init__(self, options: KafkaOptions) -> None:
        super().__init__(options)
        self.refused = 0
        self.sent: set[bytes] = set()

    async def enqueue(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[RecordMetadata]:
        if topic == topics.ANNOTATIONS_GROUND_TRUTH and not self.refused:
            self.refused += 1
            failed: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
            failed.set_exception(BrokerUnavailable("refused by the test"))
            return failed
        self.sent.add(value)
        return await super().enqueue(topic, value, key)


async def test_a_refused_forward_reads_the_records_again_and_loses_no_label(
    options: KafkaOptions, publisher: Publisher, unique: str
) -> None:
    model = f"m{unique}"
    values = [annotation(model, i, f"inf-{i}" if i % 3 == 0 else None) for i in range(30)]
    for value in values:
        await publisher.send(topics.ANNOTATIONS, value, model.encode())
    flaky = RefusingOnce(options)
    await flaky.start(max_wait_s=10)
    try:
        sieve = GroundTruthFilter(options, flaky, f"gt-{unique}")
        # the refused forward may be of the other test's labels (the topic is the module's): wait for ours
        labels = {v for i, v in enumerate(values) if i % 3 == 0}
        await filtering_until(sieve, lambda: flaky.refused and labels <= flaky.sent)
    finally:
        await flaky.stop()
    assert sieve.subscriber.stats.retries >= 1
    got = await read_settled(options, topics.ANNOTATIONS_GROUND_TRUTH, model, settle_s=1.0)
    # at least once: what the poll had sent before the refusal is sent again (the join recognises it)
    assert set(got) == labels, "all ten labels, none lost"
