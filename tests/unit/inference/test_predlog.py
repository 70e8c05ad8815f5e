"""The prediction log never blocks a request and loses nothing while the broker is away."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from services.inference.predlog import Message, PredictionLog
from shared.errors import BrokerUnavailable, PayloadTooLarge


class FlakyPublisher:
    """The publisher seam: acknowledges while ``up``, refuses while down."""

    def __init__(self) -> None:
        self.up = True
        self.sent: list[bytes] = []
        self.reject: set[bytes] = set()  # records whose acknowledgement fails, once each

    async def enqueue(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[Any]:
        if not self.up:
            raise BrokerUnavailable("broker down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if value in self.reject:
            self.reject.discard(value)
            future.set_exception(KafkaError("not leader for partition"))
        else:
            future.set_result(None)
            self.sent.append(value)
        return future


def as_messages(items: list[bytes]) -> list[Message]:
    """The encoding seam: one message per item, keyed like the service's."""
    return [(b"m", item, 1) for item in items]


def log_of(publisher: FlakyPublisher, tmp_path: Path, **options: Any) -> PredictionLog[bytes]:
    return PredictionLog(publisher, tmp_path, as_messages, **options)  # type: ignore[arg-type]


async def test_entries_flow_in_order(tmp_path: Path) -> None:
    publisher = FlakyPublisher()
    plog = log_of(publisher, tmp_path, max_buffer=100, batch=10)
    task = asyncio.create_task(plog.run(interval_s=0.01))
    for i in range(35):
        plog.append(b"p%d" % i)
    await asyncio.sleep(0.2)
    plog.stop()
    await asyncio.wait_for(task, 5)
    assert publisher.sent == [b"p%d" % i for i in range(35)]
    assert (plog.sent, plog.spilled, plog.lost) == (35, 0, 0)


async def test_outage_spills_to_journal_and_replays(tmp_path: Path) -> None:
    publisher = FlakyPublisher()
    publisher.up = False
    plog = log_of(publisher, tmp_path, max_buffer=20, batch=5)
    task = asyncio.create_task(plog.run(interval_s=0.01))
    for i in range(50):
        plog.append(b"p%d" % i)  # never blocks, even with the broker down
    await asyncio.sleep(0.3)
    assert plog.depth == 20 and plog.spilled == 30 and plog.lost == 0
    assert list(tmp_path.glob("predictions.*")), "the overflow is on disk (journal, or being replayed)"
    publisher.up = True
    async with asyncio.timeout(10):
        while plog.sent + plog.replayed < 50:
            await asyncio.sleep(0.05)
    plog.stop()
    await asyncio.wait_for(task, 5)
    assert sorted(publisher.sent) == sorted(b"p%d" % i for i in range(50))
    assert not list(tmp_path.glob("predictions.*"))


async def test_stop_while_down_keeps_everything_on_disk(tmp_path: Path) -> None:
    publisher = FlakyPublisher()
    publisher.up = False
    plog = log_of(publisher, tmp_path, max_buffer=100, batch=5)
    task = asyncio.create_task(plog.run(interval_s=0.01))
    for i in range(12):
        plog.append(b"p%d" % i)
    plog.stop()
    await asyncio.wait_for(task, 10)
    lines = (tmp_path / "predictions.journal").read_bytes().splitlines()
    assert len(lines) == 12 and plog.lost == 0

    publisher.up = True
    again = log_of(publisher, tmp_path, batch=5)
    task = asyncio.create_task(again.run(interval_s=0.01))
    async with asyncio.timeout(10):
        while again.replayed < 12:
            await asyncio.sleep(0.02)
    again.stop()
    await asyncio.wait_for(task, 5)
    assert publisher.sent == [b"p%d" % i for i in range(12)]


async def test_unwritable_journal_counts_losses(tmp_path: Path) -> None:
    publisher = FlakyPublisher()
    publisher.up = False
    plog = log_of(publisher, tmp_path, max_buffer=2, batch=5)
    (tmp_path / "predictions.journal").mkdir()  # a directory where the file should be: writes fail
    for i in range(5):
        plog.append(b"p%d" % i)
    assert plog.lost == 3 and plog.depth == 2


async def test_a_failed_record_is_sent_again_alone(tmp_path: Path) -> None:
    publisher = FlakyPublisher()
    publisher.reject = {b"p3", b"p7"}
    plog = log_of(publisher, tmp_path, max_buffer=100, batch=10)
    task = asyncio.create_task(plog.run(interval_s=0.01))
    for i in range(10):
        plog.append(b"p%d" % i)
    async with asyncio.timeout(10):
        while plog.sent < 10:
            await asyncio.sleep(0.02)
    plog.stop()
    await asyncio.wait_for(task, 5)
    assert sorted(publisher.sent) == sorted(b"p%d" % i for i in range(10)), "each once: the batch is not resent whole"


async def test_a_replay_cut_short_keeps_only_what_did_not_arrive(tmp_path: Path) -> None:
    publisher = FlakyPublisher()
    publisher.up = False
    plog = log_of(publisher, tmp_path, max_buffer=100, batch=4)
    task = asyncio.create_task(plog.run(interval_s=0.01))
    for i in range(10):
        plog.append(b"p%d" % i)
    plog.stop()
    await asyncio.wait_for(task, 10)  # all ten journaled

    publisher.up = True
    publisher.reject = {b"p1", b"p6"}
    again = log_of(publisher, tmp_path, batch=4)
    task = asyncio.create_task(again.run(interval_s=0.01))
    async with asyncio.timeout(10):
        while again.replayed < 10:
            await asyncio.sleep(0.02)
    again.stop()
    await asyncio.wait_for(task, 5)
    assert sorted(publisher.sent) == sorted(b"p%d" % i for i in range(10))
    assert len(publisher.sent) == 10 and not list(tmp_path.glob("predictions.*"))


async def test_a_message_refused_for_its_size_is_counted_lost_and_the_log_goes_on(tmp_path: Path) -> None:
    publisher = FlakyPublisher()
    original = publisher.enqueue

    async def refusing(topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[Any]:
        if value == b"huge":
            raise PayloadTooLarge("a record of 2000000 bytes on predictions is over the 1000000-byte limit")
        return await original(topic, value, key)

    publisher.enqueue = refusing  # type: ignore[method-assign]
    plog = log_of(publisher, tmp_path, max_buffer=100, batch=10)
    task = asyncio.create_task(plog.run(interval_s=0.01))
    for item in (b"p0", b"huge", b"p1"):
        plog.append(item)
    async with asyncio.timeout(10):
        while plog.sent < 2:
            await asyncio.sleep(0.02)
    plog.append(b"p2")
    async with asyncio.timeout(10):
        while plog.sent < 3:
            await asyncio.sleep(0.02)
    plog.stop()
    await asyncio.wait_for(task, 5)
    assert publisher.sent == [b"p0", b"p1", b"p2"] and (plog.sent, plog.lost) == (3, 1)
