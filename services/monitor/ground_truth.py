"""The monitor reads only the annotations it can join: a filter in front of the join.

Most of ``annotations`` can be labelled history without an ``inference_id`` (a team loading its
training data: hundreds of thousands of records in a minute). The monitor can never join those,
yet reading them through its faust agents cost ~100 µs each -- a bulk load of 400,000 took a
whole core for as long as it lasted, and slowed a concurrent training run 3-6x. So the monitor
does not read ``annotations`` with faust at all:

* :class:`GroundTruthFilter` reads ``annotations`` with the bus's lean consumer (consumer group
  ``<monitor group>-ground-truth``, replicas splitting its partitions). A record that cannot
  carry an inference id is recognised from its bytes (:func:`may_join`, well under a
  microsecond) and passed over unread; the few that can are forwarded, byte for byte, to
  ``annotations.ground_truth``, keyed by their model. Offsets are committed only once the
  broker has acknowledged the forwards, so a crash forwards again rather than losing a label.
* The faust agent consumes ``annotations.ground_truth``, which is co-partitioned with
  ``predictions`` (same key, same partition count), so a label meets its prediction in the
  replica that holds it, whichever replica's filter forwarded it -- and even when the
  annotation system did not key its records by model. A label forwarded twice is a duplicate
  the join already recognises (:mod:`services.monitor.join`).

This is Kafka Streams' repartition step, kept to the records that need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiokafka.structs import RecordMetadata

from shared import topics
from shared.bus import Delivery, KafkaOptions, Publisher, Subscriber, confirm, raw_value
from shared.events import AnnotationSubmitted, decode_as

log = logging.getLogger(__name__)

_KEY = b'"inference_id"'
_ESCAPE = b"\\u"
_BLANK = b" \t\r\n"


def may_join(value: bytes | None) -> bool:
    """False when the annotation surely has no ``inference_id`` (absent or null), from its bytes.

    JSON escapes quotes inside strings, so ``"inference_id"`` followed by a colon is always a
    key. Exactly one such key followed by ``null`` -- or none at all -- means the record has no
    inference id (the key is the record's own, or a nested one and the record's is absent).
    Anything less certain (the key twice, ``\\u`` escapes that could spell it, bytes that are not
    an object) is decoded to decide; what does not decode is left to ingest, which dead-letters it.

    >>> may_join(b'{"model": "m", "label": 1, "inference_id": null}')
    False
    >>> may_join(b'{"model": "m", "label": 1}')
    False
    >>> may_join(b'{"model": "m", "label": 1, "inference_id" : "abc"}')
    True
    >>> may_join(b'{"model": "m", "features": {"inference_id": 2.0}, "inference_id": "x"}')
    True
    """
    if not value:
        return False
    at = value.find(_KEY)
    if _ESCAPE in value:
        return _decoded_id(value) is not None
    if at < 0:
        return False
    end = at + len(_KEY)
    if value.find(_KEY, end) < 0:  # the key once
        rest = value[end : end + 16].lstrip(_BLANK)
        if rest[:1] == b":":
            return not rest[1:].lstrip(_BLANK).startswith(b"null")
    return _decoded_id(value) is not None


def _decoded_id(value: bytes) -> Any:
    with contextlib.suppress(orjson.JSONDecodeError):
        body = orjson.loads(value)
        if isinstance(body, dict):
            return body.get("inference_id")
    return None


def decode_ground_truth(topic: str, data: bytes) -> AnnotationSubmitted | None:
    """An annotation forwarded to the join, decoded as every consumer decodes it (what does not
    decode is a dead letter); None for one that turns out to have no inference id."""
    event = decode_as(AnnotationSubmitted, data)
    return event if event.inference_id is not None else None


def ground_truth_key(value: bytes, key: bytes | None) -> bytes | None:
    """The partitioning key of a forwarded annotation: its model, as ``predictions`` is keyed."""
    with contextlib.suppress(orjson.JSONDecodeError):
        body = orjson.loads(value)
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            model: str = body["model"]
            return model.encode()
    return key


class GroundTruthFilter:
    """Forwards the annotations that can join a prediction to ``annotations.ground_truth``.

    Parameters
    ----------
    options, publisher
        The monitor's broker connection and producer.
    group_id
        The filter's consumer group (one per monitor deployment; its replicas split the topic).
    max_records
        Records per poll: large, since most are passed over unread.
    """

    def __init__(self, options: KafkaOptions, publisher: Publisher, group_id: str, max_records: int = 5000) -> None:
        self.publisher = publisher
        self._sent: list[asyncio.Future[RecordMetadata]] = []
        self.forwarded = 0
        self.subscriber: Subscriber[bytes] = Subscriber(
            options,
            group_id,
            [topics.ANNOTATIONS],
            self._forward,
            publisher,
            raw_value,
            max_records=max_records,
            drain=self._confirm,
            after_poll=self._confirm,
            wanted=may_join,
        )

    @property
    def passed(self) -> int:
        """Annotations passed over unread (no inference id)."""
        return self.subscriber.stats.passed

    async def _forward(self, value: bytes, delivery: Delivery) -> None:
        key = ground_truth_key(value, delivery.key)
        self._sent.append(await self.publisher.enqueue(topics.ANNOTATIONS_GROUND_TRUTH, value, key))
        self.forwarded += 1

    async def _confirm(self) -> None:
        """Offsets become committable once the broker has every forward (raises if it refused one)."""
        if self._sent:
            sent, self._sent = self._sent, []
            try:
                await confirm(sent)
            except Exception:
                await self.subscriber.rewind()  # not released: read again and forwarded again
                raise
        self.subscriber.release()

    async def run(self) -> None:
        """Filter until :meth:`stop`."""
        await self.subscriber.run()

    def stop(self) -> None:
        """Finish the poll in hand, confirm, commit and close."""
        self.subscriber.stop()
