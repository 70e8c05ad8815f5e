"""The prediction log: every prediction goes to ``predictions``, without ever slowing a request.

Requests only append a reference to an in-memory buffer (O(1), no await, no encoding). A
background task encodes and drains it in batches to Kafka. When the broker is slow or gone
the buffer fills up to ``max_buffer``; past that, entries spill to an append-only journal on
local disk (one message per line), which is replayed to Kafka once the broker answers
again. Only if the disk also fails is an entry lost — and then it is counted, never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from aiokafka.errors import MessageSizeTooLargeError

from shared import topics
from shared.bus import Publisher
from shared.errors import BrokerUnavailable, PayloadTooLarge

log = logging.getLogger(__name__)

Item = TypeVar("Item")

Message = tuple[bytes, bytes, int]
"""A Kafka message of the log: key, value, and how many predictions it carries."""


class PredictionLog(Generic[Item]):
    """Bounded buffer + disk journal in front of the ``predictions`` topic.

    Requests append *items* — references to what was served, no encoding. The background task
    turns many items at once into few messages with ``encode`` (the inference service packs
    every buffered prediction of one model version and variant into one columnar
    ``PredictionsLogged``), so the cost per prediction stays far below the cost of serving it.

    Parameters
    ----------
    publisher
        Started publisher used to send batches.
    journal_dir
        Directory of the spill journal (created when needed).
    encode
        Items to messages; called off the request path, on the drain task or when spilling.
    max_buffer
        Items held in memory before spilling to disk.
    batch
        Items encoded and sent per drain step (the event loop is handed back between steps).
    ack_timeout_s
        How long a batch waits for the broker's acknowledgements before it counts as not sent.
    on_change
        Called after every drain step, for metrics (buffer depth, spills, losses).
    """

    def __init__(
        self,
        publisher: Publisher,
        journal_dir: Path,
        encode: Callable[[list[Item]], list[Message]],
        max_buffer: int = 50_000,
        batch: int = 1000,
        ack_timeout_s: float = 15.0,
        on_change: Callable[[PredictionLog[Item]], None] | None = None,
    ) -> None:
        self.publisher = publisher
        self.journal = journal_dir / "predictions.journal"
        self.encode = encode
        self.max_buffer = max_buffer
        self.batch = batch
        self.ack_timeout_s = ack_timeout_s
        self.on_change = on_change
        self._buffer: deque[Item] = deque()
        self._ready: deque[Message] = deque()  # encoded, waiting for the broker
        self._wake = asyncio.Event()
        self._stopping = False
        self.sent = 0
        self.spilled = 0
        self.lost = 0
        self.replayed = 0
        journal_dir.mkdir(parents=True, exist_ok=True)

    @property
    def depth(self) -> int:
        """Items and encoded messages waiting in memory."""
        return len(self._buffer) + len(self._ready)

    def append(self, item: Item) -> None:
        """Queue what one request served (never blocks; spills to disk when the buffer is full)."""
        if len(self._buffer) >= self.max_buffer:
            self._spill(self._encode([item]))
        else:
            self._buffer.append(item)
        if len(self._buffer) >= self.batch:
            self._wake.set()

    def _encode(self, items: list[Item]) -> list[Message]:
        try:
            return self.encode(items)
        except Exception as err:  # a bug must cost log entries, never requests
            log.exception("prediction log: %d entries lost: encoding failed: %s", len(items), err)
            self.lost += len(items)
            return []

    def _spill(self, messages: list[Message]) -> None:
        if not messages:
            return
        rows = _rows(messages)
        try:
            _write_journal(self.journal, messages)
            self.spilled += rows
        except OSError as err:
            self.lost += rows
            log.error("prediction log: %d predictions lost: cannot write the journal %s (%s)", rows, self.journal, err)

    async def run(self, interval_s: float = 0.05) -> None:
        """Drain the buffer (and the journal) until :meth:`stop`; then flush what is left."""
        backoff = interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            try:
                await self._replay_journal()
                while self._buffer or self._ready:
                    await self._send_batch()
                    await asyncio.sleep(0)  # requests go first between batches
                backoff = interval_s
            except BrokerUnavailable as err:
                backoff = min(5.0, max(0.2, backoff * 2))
                log.warning(
                    "prediction log: broker unavailable (%s); %d waiting, retrying in %.1fs", err, self.depth, backoff
                )
                if self._stopping:
                    self._spill([*self._ready, *self._encode(list(self._buffer))])
                    self._ready.clear()
                    self._buffer.clear()
            if self.on_change:
                self.on_change(self)
            if self._stopping and not self._buffer and not self._ready:
                return

    async def _send_batch(self) -> None:
        if not self._ready:  # encoded once: messages sent again after an outage keep their event ids
            items = [self._buffer.popleft() for _ in range(min(self.batch, len(self._buffer)))]
            self._ready.extend(self._encode(items))
        messages = list(self._ready)
        if not messages:
            return
        unacknowledged, refused = await self._deliver(messages)
        self._ready = deque(unacknowledged)
        self.sent += _rows(messages) - _rows(unacknowledged) - refused
        if unacknowledged:
            raise BrokerUnavailable(f"the broker did not acknowledge {len(unacknowledged)} of {len(messages)} messages")

    async def _deliver(self, messages: list[Message]) -> tuple[list[Message], int]:
        """Send ``messages``; the ones the broker did not acknowledge, to be sent again, and the
        predictions of those refused for their size (counted lost).

        Only those: resending a whole batch because one record failed would write the
        acknowledged ones twice (without an idempotent producer, nothing removes them). A
        message refused for its size (over ``kafka_max_message_bytes``, or over the broker's
        own limit) can never be sent: it is counted lost, not retried for ever.
        """
        futures: list[asyncio.Future[object] | None] = []
        with contextlib.suppress(BrokerUnavailable):
            for key, value, _ in messages:
                try:
                    futures.append(await self.publisher.enqueue(topics.PREDICTIONS, value, key))
                except PayloadTooLarge as err:
                    futures.append(None)
                    self._refused(err)
        pending = [f for f in futures if f is not None]
        if pending:
            await asyncio.wait(pending, timeout=self.ack_timeout_s)
        unacknowledged: list[Message] = []
        refused = 0
        for i, message in enumerate(messages):
            future = futures[i] if i < len(futures) else None
            if i < len(futures) and future is None:
                refused += message[2]
                continue
            if future is not None and future.done() and not future.cancelled():
                error = future.exception()
                if error is None:
                    continue
                if isinstance(error, MessageSizeTooLargeError):
                    refused += message[2]
                    self._refused(error)
                    continue
            unacknowledged.append(message)
        self.lost += refused
        return unacknowledged, refused

    @staticmethod
    def _refused(err: BaseException) -> None:
        log.error("prediction log: a message was refused for its size and is lost: %s", err)

    async def _replay_journal(self) -> None:
        replaying = self.journal.with_suffix(".replaying")
        if not replaying.exists():  # a replay cut short by an outage resumes first
            if not self.journal.exists():
                return
            os.replace(self.journal, replaying)
        messages: list[Message] = []
        for line in replaying.read_bytes().splitlines():
            key_hex, _, rest = line.partition(b"\t")
            count, _, value = rest.partition(b"\t")
            with contextlib.suppress(ValueError):
                messages.append((bytes.fromhex(key_hex.decode()), value, int(count)))
        for start in range(0, len(messages), self.batch):
            chunk = messages[start : start + self.batch]
            unacknowledged, refused = await self._deliver(chunk)
            self.replayed += _rows(chunk) - _rows(unacknowledged) - refused
            if unacknowledged:  # what is left stays on disk, without what already arrived
                remaining = replaying.with_suffix(".remaining")
                _write_journal(remaining, [*unacknowledged, *messages[start + self.batch :]], mode="wb")
                os.replace(remaining, replaying)
                raise BrokerUnavailable(f"the broker did not acknowledge {len(unacknowledged)} journaled messages")
        replaying.unlink()
        if messages:
            log.info("prediction log: replayed %d journaled messages", len(messages))

    def stop(self) -> None:
        """Flush and end :meth:`run` (entries that cannot be sent go to the journal)."""
        self._stopping = True
        self._wake.set()


def _rows(messages: list[Message]) -> int:
    return sum(m[2] for m in messages)


def _write_journal(path: Path, messages: list[Message], mode: str = "ab") -> None:
    """Write ``messages`` to the journal at ``path`` (appended by default), one per line, synced to disk."""
    with open(path, mode) as journal:
        for key, value, count in messages:
            journal.write(b"%s\t%d\t%s\n" % (key.hex().encode(), count, value.replace(b"\n", b" ")))
        journal.flush()
        os.fsync(journal.fileno())
