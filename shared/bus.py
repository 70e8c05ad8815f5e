"""The Kafka bus: the one place driftloop touches aiokafka.

:class:`Publisher` sends events as JSON keyed by model name; :class:`Subscriber` runs a
consumer-group loop that decodes each message into its event, calls a handler, and commits
the offset only after the handler succeeded (at-least-once; handlers are idempotent on
``event_id`` / ``record_id``). What cannot be decoded, or what a handler rejects as
permanently invalid, goes to ``<topic>.dlq`` with the reason, the original bytes and where it
was read; the loop carries on. Transient failures (broker or store down) are retried with
capped exponential backoff, never busy-looping and never dead-lettering good data.

Every record is bounded by bytes (``kafka_max_message_bytes``, under the broker's
``message.max.bytes``): producers split or truncate what they send to stay under it, and a
record still over it is refused with :class:`PayloadTooLarge` naming the topic and sizes
before it reaches the client -- never aiokafka's ``MessageSizeTooLargeError``, which looks like
a broker failure and would be retried for ever. Dead letters are truncated to fit, so a
consumer always moves past a message it cannot handle, however large.

Shutdown is cooperative: :meth:`Subscriber.stop` (wired to SIGTERM by the service) lets the
in-flight message finish, commits, and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord, RecordMetadata

from shared import topics as topic_names
from shared.config import DriftloopSettings
from shared.errors import (
    BrokerUnavailable,
    CorruptArtifact,
    DriftloopError,
    InvalidEvent,
    PayloadTooLarge,
    StoreError,
)
from shared.events import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MIN_MESSAGE_BYTES,
    Contract,
    DeadLetter,
    Event,
    SourcePosition,
    decode_event,
    encode_event,
    topic_of,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    KafkaError,
    BrokerUnavailable,
    StoreError,
    OSError,
    TimeoutError,
)
"""Failures that say "try again later", not "this message is bad"."""

RECORD_FRAMING_BYTES = 1024
"""What the producer's ``max_request_size`` allows beyond ``max_message_bytes``: a record's
batch header and length fields (aiokafka counts them in), so the bus's own check, on the
record's value, key and headers, is the one that refuses."""


@dataclass(frozen=True)
class KafkaOptions:
    """Connection and tuning shared by publishers and subscribers.

    The consumer defaults follow the broker notes: a 6 s session with 1 s heartbeats keeps
    group joins short, and a 50 ms fetch wait keeps per-hop latency low.
    """

    bootstrap: str
    client_id: str = "driftloop"
    idempotence: bool = True
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    fetch_max_wait_ms: int = 50
    request_timeout_ms: int = 10000
    linger_ms: int = 5
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """Largest record published (value, key and headers); see ``kafka_max_message_bytes``."""

    @classmethod
    def from_settings(cls, settings: DriftloopSettings, client_id: str | None = None) -> KafkaOptions:
        """Options for the broker the settings point at (explicit, or the local stack's)."""
        return cls(
            bootstrap=settings.resolved_bootstrap(),
            client_id=client_id or settings.kafka_client_id,
            idempotence=settings.resolved_idempotence(),
            max_message_bytes=settings.kafka_max_message_bytes,
        )


def record_bytes(value: bytes | None, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()) -> int:
    """The size a record is bounded by: its value, key and headers (names and values).

    >>> record_bytes(b'{"a": 1}', b"credit", [("trace", b"abc")])
    22
    """
    return len(value or b"") + len(key or b"") + sum(len(name.encode()) + len(v or b"") for name, v in headers)


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: 0.2 s, 0.4 s, 0.8 s … up to ``cap`` seconds.

    >>> b = Backoff(initial=0.5, cap=2.0, jitter=0.0)
    >>> [b.next_delay() for _ in range(4)]
    [0.5, 1.0, 2.0, 2.0]
    """

    initial: float = 0.2
    cap: float = 10.0
    factor: float = 2.0
    jitter: float = 0.1
    attempts: int = 0

    def next_delay(self) -> float:
        """Delay before the next attempt; each call counts one failed attempt."""
        delay = min(self.cap, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return delay * (1.0 + random.uniform(-self.jitter, self.jitter)) if self.jitter else delay

    def reset(self) -> None:
        """Forget past failures after a success."""
        self.attempts = 0


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when ``stopping`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)


async def ensure_topics(
    options: KafkaOptions, names: Iterable[str], partitions: int = 4, replication: int = 1
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    Topics are also auto-created on first produce, but with the broker's default partition
    count; creating them up front gives replicas partitions to split.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=options.bootstrap,
        client_id=f"{options.client_id}-admin",
        request_timeout_ms=options.request_timeout_ms,
    )
    try:
        await admin.start()
    except KafkaError as err:
        raise BrokerUnavailable(f"cannot reach Kafka at {options.bootstrap}: {err}") from err
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(name=n, num_partitions=partitions, replication_factor=replication) for n in missing]
            )
            log.info("created topics %s (%d partitions)", ", ".join(missing), partitions)
        return missing
    except KafkaError as err:
        raise BrokerUnavailable(f"cannot create topics on {options.bootstrap}: {err}") from err
    finally:
        await admin.close()


def all_topics_with_dlq() -> list[str]:
    """Every driftloop topic and its dead-letter topic."""
    return [name for t in topic_names.ALL for name in (t, topic_names.dlq(t))]


# --- publishing ----------------------------------------------------------------------------


class Publisher:
    """Publishes events as JSON, keyed by model name, batched by the client (``linger_ms``).

    :meth:`publish` returns once the broker acknowledged the record (``acks=all``), so a
    caller that commits afterwards never commits something unpublished. Many concurrent
    ``publish`` calls share batches.
    """

    def __init__(self, options: KafkaOptions) -> None:
        self.options = options
        self._producer: AIOKafkaProducer | None = None

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.options.bootstrap,
            client_id=f"{self.options.client_id}-producer",
            acks="all",
            enable_idempotence=self.options.idempotence,
            linger_ms=self.options.linger_ms,
            request_timeout_ms=self.options.request_timeout_ms,
            max_request_size=self.options.max_message_bytes + RECORD_FRAMING_BYTES,
        )

    @property
    def max_message_bytes(self) -> int:
        """The largest record this publisher sends; producers split or truncate to it."""
        return self.options.max_message_bytes

    def _check_size(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Refuse a record over the limit, before the client does (its error would read as an outage)."""
        size = record_bytes(value, key, headers)
        if size > self.options.max_message_bytes:
            raise PayloadTooLarge(
                f"a {size:,}-byte record for {topic} is over the {self.options.max_message_bytes:,}-byte "
                "limit (kafka_max_message_bytes); the producer must split or truncate it"
            )

    async def start(self, stopping: asyncio.Event | None = None, max_wait_s: float | None = None) -> None:
        """Connect, retrying with backoff while the broker is unreachable.

        Gives up with :class:`BrokerUnavailable` after ``max_wait_s`` seconds (``None``:
        keep trying until ``stopping`` is set).
        """
        stopping = stopping or asyncio.Event()
        backoff = Backoff()
        loop = asyncio.get_running_loop()
        deadline = None if max_wait_s is None else loop.time() + max_wait_s
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
                self._producer = producer
                return
            except KafkaError as err:
                await producer.stop()
                delay = backoff.next_delay()
                if stopping.is_set() or (deadline is not None and loop.time() + delay > deadline):
                    raise BrokerUnavailable(f"cannot reach Kafka at {self.options.bootstrap}: {err}") from err
                log.warning(
                    "Kafka at %s unreachable (%s); producer retrying in %.1fs (attempt %d)",
                    self.options.bootstrap,
                    err,
                    delay,
                    backoff.attempts,
                )
                await _sleep_unless(stopping, delay)

    def _require(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BrokerUnavailable("publisher is not started")
        return self._producer

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> RecordMetadata:
        """Send raw bytes and wait for the broker's acknowledgement.

        A record over :attr:`max_message_bytes`, or one the broker refuses as too large (its
        limit is lower than ours), raises :class:`PayloadTooLarge`.
        """
        producer = self._require()
        self._check_size(topic, value, key, headers or ())
        try:
            future = await producer.send(topic, value=value, key=key, headers=list(headers or []) or None)
            return await future
        except MessageSizeTooLargeError as err:
            raise PayloadTooLarge(
                f"{topic} refused a {record_bytes(value, key, headers or ()):,}-byte record as too large: {err}"
            ) from err
        except KafkaError as err:
            raise BrokerUnavailable(f"publishing to {topic} on {self.options.bootstrap} failed: {err}") from err

    async def enqueue(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[RecordMetadata]:
        """Queue a record for the next batch without waiting; await :func:`confirm` on the futures.

        For handlers that buffer: they enqueue as they go and confirm before releasing offsets.
        A record over :attr:`max_message_bytes` raises :class:`PayloadTooLarge`.
        """
        producer = self._require()
        self._check_size(topic, value, key)
        try:
            future: asyncio.Future[RecordMetadata] = await producer.send(topic, value=value, key=key)
            return future
        except KafkaError as err:
            raise BrokerUnavailable(f"publishing to {topic} on {self.options.bootstrap} failed: {err}") from err

    async def publish(self, event: Event, headers: Sequence[tuple[str, bytes]] | None = None) -> RecordMetadata:
        """Publish an event on its topic, keyed by its model name; wait for the acknowledgement."""
        return await self.send(topic_of(event), encode_event(event), event.model.encode(), headers)

    async def publish_many(self, events: Iterable[Event]) -> int:
        """Publish several events in shared batches; returns how many were acknowledged."""
        producer = self._require()
        records = [(topic_of(e), encode_event(e), e.model.encode()) for e in events]
        for topic, value, key in records:
            self._check_size(topic, value, key)
        try:
            futures = [await producer.send(topic, value=value, key=key) for topic, value, key in records]
            await asyncio.gather(*futures)
        except MessageSizeTooLargeError as err:
            raise PayloadTooLarge(f"the broker refused a record as too large: {err}") from err
        except KafkaError as err:
            raise BrokerUnavailable(f"publishing on {self.options.bootstrap} failed: {err}") from err
        return len(futures)

    async def publish_contract(self, topic: str, item: Contract, key: str | None) -> RecordMetadata:
        """Publish a non-event contract (a dead letter) on an explicit topic."""
        return await self.send(topic, encode_event(item), None if key is None else key.encode())

    async def dead_letter(self, position: SourcePosition, key: bytes | None, value: bytes | None, reason: str) -> None:
        """Send a record that cannot be handled to ``<topic>.dlq`` with the reason, and say so.

        The letter is truncated to fit :attr:`max_message_bytes` when the whole would not; if
        the broker still refuses it (its own limit is lower), a letter of
        :data:`~shared.events.MIN_MESSAGE_BYTES` is sent instead, so the consumer moves on.
        """
        letter = DeadLetter.of(reason, position, key, value, self.options.max_message_bytes)
        target = topic_names.dlq(position.topic)
        try:
            await self.publish_contract(target, letter, letter.key)
        except PayloadTooLarge as err:
            log.error("%s refused a %d-byte dead letter (%s); sending a shorter one", target, letter.record_size(), err)
            letter = DeadLetter.of(reason, position, key, value, MIN_MESSAGE_BYTES)
            await self.publish_contract(target, letter, letter.key)
        log.warning(
            "%s[%d]@%d dead-lettered to %s%s: %s",
            position.topic,
            position.partition,
            position.offset,
            target,
            f" (truncated: {len(letter.payload_hex) // 2:,} of {letter.payload_bytes:,} bytes kept)"
            if letter.payload_truncated
            else "",
            reason[:500],
        )

    async def stop(self) -> None:
        """Flush what is pending and close."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


async def confirm(futures: Iterable[asyncio.Future[RecordMetadata]]) -> int:
    """Wait for the broker to acknowledge enqueued records; returns how many."""
    pending = list(futures)
    try:
        await asyncio.gather(*pending)
    except MessageSizeTooLargeError as err:
        raise PayloadTooLarge(f"the broker refused one of {len(pending)} records as too large: {err}") from err
    except KafkaError as err:
        raise BrokerUnavailable(f"the broker did not acknowledge {len(pending)} records: {err}") from err
    return len(pending)


# --- subscribing ---------------------------------------------------------------------------


@dataclass(slots=True)
class Delivery:
    """Where and how a message arrived; handlers use it for idempotence and provenance."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def position(self) -> SourcePosition:
        """The message's topic, partition and offset."""
        return SourcePosition(topic=self.topic, partition=self.partition, offset=self.offset)


Handler = Callable[[T, Delivery], Awaitable[None]]
Decoder = Callable[[str, bytes], T]


def raw_value(topic: str, data: bytes) -> bytes:
    """The decoder of a consumer that reads the bytes itself (ingest's batch of a poll, the
    monitor's ground-truth filter, which forwards them as they are)."""
    return data


class Outcome(Enum):
    """What became of one message: handled (or dead-lettered), or to be tried again later."""

    DONE = "done"
    RETRY = "retry"


@dataclass(frozen=True)
class Refused:
    """A message that can never be handled, and why (it goes to ``<topic>.dlq``)."""

    reason: str


class MessagePolicy(Generic[T]):
    """Decode a message and run its handler; say whether it is done, to retry, or a dead letter.

    One policy for every consumer, the bus's :class:`Subscriber` and the monitor's faust agents
    alike: what does not decode is a dead letter at once; a transient failure (broker, store,
    OS: :data:`TRANSIENT_ERRORS`) is retried for as long as it lasts, so an outage loses
    nothing; a :class:`DriftloopError` with a 4xx status says the message itself is bad and is
    a dead letter, and so is a :class:`CorruptArtifact` (what it needs is broken for good); any
    other exception (a bug, perhaps one a retry gets past) is retried
    ``max_attempts`` times, then dead-lettered.
    """

    def __init__(self, handler: Handler[T], decode: Decoder[T] | None = None, max_attempts: int = 5) -> None:
        self._handler = handler
        self._decode: Decoder[Any] = decode or decode_event
        self.max_attempts = max_attempts
        self._failures: dict[tuple[str, int, int], int] = {}

    async def __call__(self, delivery: Delivery) -> Outcome | Refused:
        """Handle one delivery."""
        where = f"{delivery.topic}[{delivery.partition}]@{delivery.offset}"
        try:
            if delivery.value is None:
                raise InvalidEvent("message has no value (tombstone)")
            message = self._decode(delivery.topic, delivery.value)
        except InvalidEvent as err:
            return Refused(err.message)
        except Exception as err:  # a decoder bug must not stop the partition forever
            return Refused(f"cannot decode: {type(err).__name__}: {err}")
        key = (delivery.topic, delivery.partition, delivery.offset)
        try:
            await self._handler(message, delivery)
        except CorruptArtifact as err:  # a StoreError, but bad bytes do not mend by waiting
            self._failures.pop(key, None)
            return Refused(f"{type(err).__name__}: {err.message}")
        except TRANSIENT_ERRORS as err:
            log.warning("%s: transient failure, will retry: %s", where, err)
            return Outcome.RETRY
        except DriftloopError as err:
            if 400 <= err.status_code < 500:
                self._failures.pop(key, None)
                return Refused(f"{type(err).__name__}: {err.message}")
            failure: Exception = err
        except Exception as err:
            failure = err
        else:
            if self._failures:
                self._failures.pop(key, None)
            return Outcome.DONE
        attempts = self._failures.get(key, 0) + 1
        self._failures[key] = attempts
        log.error("%s: handler failed (attempt %d of %d)", where, attempts, self.max_attempts, exc_info=failure)
        if attempts < self.max_attempts:
            return Outcome.RETRY
        self._failures.pop(key, None)
        return Refused(f"handler failed {attempts} times: {type(failure).__name__}: {failure}")

    def forget(self, lost: Callable[[str, int], bool]) -> None:
        """Drop the failure counts of partitions this replica no longer owns."""
        self._failures = {k: v for k, v in self._failures.items() if not lost(k[0], k[1])}


@dataclass
class SubscriberStats:
    """Counters a service exports as metrics."""

    handled: int = 0
    passed: int = 0
    """Messages passed over unread: not ``wanted`` by the consumer."""
    dead_lettered: int = 0
    retries: int = 0
    commits: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, subscriber: Subscriber[Any]) -> None:
        self._subscriber = subscriber

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        lost = set(revoked)
        await self._subscriber._drain_and_commit(only=lost)
        self._subscriber._forget(lost)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in assigned) or "nothing")


class Subscriber(Generic[T]):
    """A consumer-group loop with manual commits, dead-lettering and backoff.

    Parameters
    ----------
    options
        Broker connection and tuning.
    group_id
        Consumer group; replicas with the same group split the partitions.
    topics
        Topics to consume.
    handler
        ``async handler(message, delivery)``. Returning means the work is durable; the
        offset is then committed. Raising a transient error (broker, store, OS) retries the
        message after a backoff; raising a :class:`DriftloopError` with a 4xx status sends it
        to the DLQ; any other exception is retried ``max_attempts`` times, then dead-lettered.
    publisher
        Used to write dead letters.
    decode
        ``decode(topic, bytes)``; by default the topic's event class. Raise
        :class:`InvalidEvent` for what cannot be decoded.
    drain
        Deferred commits, for handlers that buffer (ingest writes records in batches): when
        given, a handled message is not committable until the application calls
        :meth:`release`, which says "everything handled so far is durable". ``drain()`` must
        make everything handled durable and call :meth:`release`; the loop calls it before a
        partition is taken away and before closing.
    after_poll
        Called after every poll, with or without messages: the place for time-based flushes.
    co_partitioned
        Give one replica the same partition numbers of every topic (range assignment), so a
        model's messages on several topics (same key, same partition count) meet in one place.
    on_dead_letter
        Called with the source topic once a message's dead letter is written (a service's
        dead-letter counter: what the ``DriftloopDeadLetters`` alert reads).
    wanted
        ``wanted(value)``: False for a message this consumer has no use for, which is then
        passed over as handled without being decoded (a consumer that needs few of a topic's
        messages, as the monitor's ground-truth filter of ``annotations``, must not pay for the
        rest). It sees raw bytes, so it must be cheap; :attr:`SubscriberStats.passed` counts.
    """

    def __init__(
        self,
        options: KafkaOptions,
        group_id: str,
        topics: Sequence[str],
        handler: Handler[T],
        publisher: Publisher,
        decode: Decoder[T] | None = None,
        *,
        max_attempts: int = 5,
        max_records: int = 500,
        auto_offset_reset: str = "earliest",
        poll_timeout_ms: int = 200,
        drain: Callable[[], Awaitable[None]] | None = None,
        after_poll: Callable[[], Awaitable[None]] | None = None,
        co_partitioned: bool = False,
        on_dead_letter: Callable[[str], None] | None = None,
        wanted: Callable[[bytes | None], bool] | None = None,
    ) -> None:
        self.options = options
        self._on_dead_letter = on_dead_letter
        self._wanted = wanted
        self.group_id = group_id
        self.topics = list(topics)
        self._policy = MessagePolicy(handler, decode, max_attempts)
        self._publisher = publisher
        self.max_records = max_records
        self.auto_offset_reset = auto_offset_reset
        self.poll_timeout_ms = poll_timeout_ms
        self.stats = SubscriberStats()
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: dict[TopicPartition, int] = {}
        self._handled: dict[TopicPartition, int] = {}
        self._released: dict[TopicPartition, int] = {}
        self._read: dict[TopicPartition, int] = {}
        self.lag = 0
        """Messages past this replica's position on its partitions, at the last poll."""
        self._drain = drain
        self._after_poll = after_poll
        self._assignors: tuple[type, ...] = (
            (RangePartitionAssignor,) if co_partitioned else (RoundRobinPartitionAssignor,)
        )
        self._backoff = Backoff()
        self.started = asyncio.Event()

    def stop(self) -> None:
        """Ask the loop to finish the in-flight message, commit and close. Safe from a signal handler."""
        self._stopping.set()

    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this replica currently owns."""
        consumer = self._consumer
        return {(tp.topic, tp.partition) for tp in consumer.assignment()} if consumer is not None else set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping.is_set()

    async def _connect(self) -> AIOKafkaConsumer | None:
        backoff = Backoff()
        while not self._stopping.is_set():
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.options.bootstrap,
                client_id=f"{self.options.client_id}-{self.group_id}",
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset=self.auto_offset_reset,
                session_timeout_ms=self.options.session_timeout_ms,
                heartbeat_interval_ms=self.options.heartbeat_interval_ms,
                fetch_max_wait_ms=self.options.fetch_max_wait_ms,
                request_timeout_ms=max(self.options.request_timeout_ms, self.options.session_timeout_ms + 5000),
                max_poll_records=self.max_records,
                max_partition_fetch_bytes=4 * 1024 * 1024,
                partition_assignment_strategy=self._assignors,
            )
            consumer.subscribe(self.topics, listener=_CommitOnRevoke(self))
            try:
                await consumer.start()
                log.info(
                    "consuming %s as group %s from %s", ", ".join(self.topics), self.group_id, self.options.bootstrap
                )
                return consumer
            except KafkaError as err:
                await consumer.stop()
                delay = backoff.next_delay()
                log.warning(
                    "Kafka at %s unreachable (%s); consumer %s retrying in %.1fs (attempt %d)",
                    self.options.bootstrap,
                    err,
                    self.group_id,
                    delay,
                    backoff.attempts,
                )
                await _sleep_unless(self._stopping, delay)
        return None

    async def run(self) -> None:
        """Consume until :meth:`stop`; then commit what was handled and close."""
        consumer = await self._connect()
        if consumer is None:
            return
        self._consumer = consumer
        self.started.set()
        try:
            while not self._stopping.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
                except KafkaError as err:
                    delay = self._backoff.next_delay()
                    log.warning("fetch from %s failed (%s); retrying in %.1fs", self.options.bootstrap, err, delay)
                    await _sleep_unless(self._stopping, delay)
                    continue
                retry_delay = 0.0
                for tp, records in batch.items():
                    done = await self._handle_all(consumer, tp, records)
                    if done is None:
                        retry_delay = max(retry_delay, self._backoff.next_delay())
                self._measure_lag(consumer)
                if self._after_poll is not None:
                    try:
                        await self._after_poll()
                    except Exception as err:  # buffered work stays uncommitted; try again after a pause
                        retry_delay = max(retry_delay, self._backoff.next_delay())
                        log.warning(
                            "after-poll step failed (%s: %s); retrying in %.1fs",
                            type(err).__name__,
                            err,
                            retry_delay,
                            exc_info=not isinstance(err, TRANSIENT_ERRORS),
                        )
                await self._commit()
                if retry_delay:
                    self.stats.retries += 1
                    await _sleep_unless(self._stopping, retry_delay)
                elif batch:
                    self._backoff.reset()
        finally:
            await self._drain_and_commit()
            self._consumer = None
            await consumer.stop()
            log.info("consumer %s closed", self.group_id)

    async def _handle_all(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> int | None:
        """Handle one partition's records in order; the offset handled up to, or None to retry.

        Records the consumer does not ``want`` are passed over in one sweep: only the offset
        moves for them. A stop or a retry seeks back to the record it happened at.
        """
        wanted = self._wanted
        todo = records if wanted is None else [r for r in records if wanted(r.value)]
        self.stats.passed += len(records) - len(todo)
        upto: int | None = records[-1].offset + 1
        for record in todo:
            if self._stopping.is_set():
                consumer.seek(tp, record.offset)
                upto = record.offset
                break
            if await self._handle(tp, record) is Outcome.RETRY:
                consumer.seek(tp, record.offset)
                self._mark(tp, record.offset)
                return None
        if upto is not None:
            self._mark(tp, upto)
        return upto

    def _mark(self, tp: TopicPartition, offset: int) -> None:
        """Everything of ``tp`` below ``offset`` is read and handled."""
        if offset <= self._read.get(tp, -1):
            return
        self._read[tp] = offset
        if self._drain is None:
            self._pending[tp] = offset
        else:
            self._handled[tp] = offset

    async def _handle(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> Outcome:
        delivery = Delivery(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            timestamp_ms=record.timestamp,
            headers=tuple(record.headers or ()),
        )
        verdict = await self._policy(delivery)
        if isinstance(verdict, Refused):
            return await self._dead_letter(delivery, verdict.reason)
        if verdict is Outcome.DONE:
            self.stats.handled += 1
        return verdict

    async def _dead_letter(self, delivery: Delivery, reason: str) -> Outcome:
        try:
            await self._publisher.dead_letter(delivery.position, delivery.key, delivery.value, reason)
        except TRANSIENT_ERRORS as err:
            log.warning("cannot write dead letter to %s yet (%s); will retry", topic_names.dlq(delivery.topic), err)
            return Outcome.RETRY
        except PayloadTooLarge as err:  # not even a minimal letter fits: the broker's limits need fixing
            log.error("cannot write dead letter to %s (%s); will retry", topic_names.dlq(delivery.topic), err)
            return Outcome.RETRY
        self.stats.dead_lettered += 1
        short = reason.split(":", 1)[0]
        self.stats.dead_letter_reasons[short] = self.stats.dead_letter_reasons.get(short, 0) + 1
        if self._on_dead_letter is not None:
            self._on_dead_letter(delivery.topic)
        return Outcome.DONE

    def release(self, holding: Mapping[tuple[str, int], int] | None = None) -> None:
        """Mark every message handled so far as durable, hence committable (deferred mode) --
        except, per ``(topic, partition)`` in ``holding``, the messages from that offset on,
        which the application still buffers (ingest flushes each model on its own)."""
        if not holding:
            self._pending.update(self._handled)
            self._handled.clear()
            return
        for tp, handled in list(self._handled.items()):
            held = holding.get((tp.topic, tp.partition))
            if held is None or held >= handled:
                self._pending[tp] = handled
                del self._handled[tp]
            elif held > self._released.get(tp, -1):
                self._pending[tp] = held
        for tp, offset in self._pending.items():
            self._released[tp] = max(offset, self._released.get(tp, -1))

    async def rewind(self) -> None:
        """Read again everything handled but not released (deferred mode): the application
        lost what it buffered (a send the broker refused) and needs the messages once more."""
        consumer = self._consumer
        self._handled.clear()
        self._read.clear()
        if consumer is None:
            return
        for tp in consumer.assignment():
            offset = self._pending.get(tp)
            if offset is None:
                offset = await consumer.committed(tp)
            if offset is None:
                await consumer.seek_to_beginning(tp)  # nothing committed: from the start, as on joining
            else:
                consumer.seek(tp, offset)

    @property
    def behind(self) -> bool:
        """True when the last poll left messages on the broker: the consumer has a backlog."""
        return self.lag > 0

    def _measure_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Messages on the broker past what this replica has read, by the last fetch's high watermarks."""
        lag = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            read = self._read.get(tp)
            if high is not None and read is not None:
                lag += max(0, high - read)
        self.lag = lag

    async def _drain_and_commit(self, only: set[TopicPartition] | None = None) -> None:
        if self._drain is not None:
            try:
                await self._drain()
            except Exception:
                log.exception("drain failed: handled messages stay uncommitted and will be redelivered")
        await self._commit(only)

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        offsets = {tp: off for tp, off in self._pending.items() if only is None or tp in only}
        if consumer is None or not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as err:
            log.warning("commit failed (%s); the messages will be redelivered if this replica stops", err)
            return
        self.stats.commits += 1
        for tp, off in offsets.items():
            if self._pending.get(tp) == off:
                del self._pending[tp]

    def _forget(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self._pending.pop(tp, None)
            self._handled.pop(tp, None)
            self._released.pop(tp, None)
            self._read.pop(tp, None)
        self._policy.forget(lambda topic, partition: TopicPartition(topic, partition) in revoked)
