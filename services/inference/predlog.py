"""The prediction log: every prediction goes to ``predictions``, without ever slowing a request.

Requests only append to an in-memory buffer (O(1), no await). A background task drains it in
batches to Kafka. When the broker is slow or gone the buffer fills up to ``max_buffer``; past
that, entries spill to an append-only journal on local disk (JSON lines), which is replayed
to Kafka once the broker answers again. Only if the disk also fails is an entry lost — and
then it is counted, never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path

from shared import topics
from shared.bus import Publisher, confirm
from shared.errors import BrokerUnavailable

log = logging.getLogger(__name__)

Entry = bytes | Callable[[], bytes]
"""A prediction's JSON, or a function that builds it (so requests do not pay for encoding)."""


def _bytes(entry: Entry) -> bytes:
    return entry if isinstance(entry, bytes) else entry()


class PredictionLog:
    """Bounded buffer + disk journal in front of the ``predictions`` topic.

    Parameters
    ----------
    publisher
        Started publisher used to send batches.
    journal_dir
        Directory of the spill journal (created when needed).
    max_buffer
        Entries held in memory before spilling to disk.
    batch
        Entries sent per batch.
    on_change
        Called after every drain step, for metrics (buffer depth, spills, losses).
    """

    def __init__(
        self,
        publisher: Publisher,
        journal_dir: Path,
        max_buffer: int = 50_000,
        batch: int = 500,
        on_change: Callable[[PredictionLog], None] | None = None,
    ) -> None:
        self.publisher = publisher
        self.journal = journal_dir / "predictions.journal"
        self.max_buffer = max_buffer
        self.batch = batch
        self.on_change = on_change
        self._buffer: deque[tuple[bytes, Entry]] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self.sent = 0
        self.spilled = 0
        self.lost = 0
        self.replayed = 0
        journal_dir.mkdir(parents=True, exist_ok=True)

    @property
    def depth(self) -> int:
        """Entries waiting in memory."""
        return len(self._buffer)

    def append(self, key: bytes, value: Entry) -> None:
        """Queue one ``PredictionLogged``: its bytes, or a function that builds them later (never blocks)."""
        if len(self._buffer) >= self.max_buffer:
            self._spill([(key, value)])
        else:
            self._buffer.append((key, value))
        if len(self._buffer) >= self.batch:
            self._wake.set()

    def _spill(self, entries: list[tuple[bytes, Entry]]) -> None:
        try:
            with open(self.journal, "ab") as journal:
                for key, value in entries:
                    journal.write(key.hex().encode() + b"\t" + _bytes(value).replace(b"\n", b" ") + b"\n")
                journal.flush()
                os.fsync(journal.fileno())
            self.spilled += len(entries)
        except OSError as err:
            self.lost += len(entries)
            log.error(
                "prediction log: %d entries lost: cannot write the journal %s (%s)", len(entries), self.journal, err
            )

    async def run(self, interval_s: float = 0.05) -> None:
        """Drain the buffer (and the journal) until :meth:`stop`; then flush what is left."""
        backoff = interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            try:
                await self._replay_journal()
                while self._buffer:
                    await self._send_batch()
                backoff = interval_s
            except BrokerUnavailable as err:
                backoff = min(5.0, max(0.2, backoff * 2))
                log.warning(
                    "prediction log: broker unavailable (%s); %d buffered, retrying in %.1fs",
                    err,
                    len(self._buffer),
                    backoff,
                )
                if self._stopping:
                    self._spill(list(self._buffer))
                    self._buffer.clear()
            if self.on_change:
                self.on_change(self)
            if self._stopping and not self._buffer:
                return

    async def _send_batch(self) -> None:
        # built once: a batch sent again after an outage keeps its event ids
        entries: list[tuple[bytes, Entry]] = [
            (key, _bytes(value))
            for key, value in (self._buffer.popleft() for _ in range(min(self.batch, len(self._buffer))))
        ]
        try:
            futures = [await self.publisher.enqueue(topics.PREDICTIONS, _bytes(value), key) for key, value in entries]
            await asyncio.wait_for(confirm(futures), timeout=15)
        except (BrokerUnavailable, TimeoutError) as err:
            self._buffer.extendleft(reversed(entries))  # back in front, in order
            raise BrokerUnavailable(str(err) or "timed out") from err
        self.sent += len(entries)

    async def _replay_journal(self) -> None:
        replaying = self.journal.with_suffix(".replaying")
        if not replaying.exists():  # a replay cut short by an outage resumes first
            if not self.journal.exists():
                return
            os.replace(self.journal, replaying)
        lines = replaying.read_bytes().splitlines()
        entries = []
        for line in lines:
            key_hex, _, value = line.partition(b"\t")
            with contextlib.suppress(ValueError):
                entries.append((bytes.fromhex(key_hex.decode()), value))
        for start in range(0, len(entries), self.batch):
            chunk = entries[start : start + self.batch]
            futures = [await self.publisher.enqueue(topics.PREDICTIONS, value, key) for key, value in chunk]
            await asyncio.wait_for(confirm(futures), timeout=15)
            self.replayed += len(chunk)
        replaying.unlink()
        if entries:
            log.info("prediction log: replayed %d journaled predictions", len(entries))

    def stop(self) -> None:
        """Flush and end :meth:`run` (entries that cannot be sent go to the journal)."""
        self._stopping = True
        self._wake.set()
