"""The join of logged predictions with their ground-truth labels, in either arrival order.

Predictions arrive in columns, many per message (:class:`~shared.events.PredictionsLogged`);
labels arrive one per message. The join keeps what it holds in memory for lookups and writes it
through to ``store`` -- a faust Table in the service, whose changelog follows the partition, a
dict in tests -- so that a restarted or rebalanced monitor reads it back with :meth:`Join.rebuild`:

* one entry per prediction *message* (``<namespace>b:<message id>``: the ids, versions,
  variants, labels and times of its rows) -- one changelog record for up to thousands of
  predictions, which is what lets one monitor follow tens of thousands of predictions a second;
* one entry per *label* (``<namespace>i:<inference id>``): ``l`` a label waiting for its
  prediction, or ``j`` a joined pair's tombstone, so that an at-least-once redelivery of either
  side is recognised as a duplicate until it expires.

Retention: :meth:`Join.expire` drops what is older than ``retention`` before the event time it is
given (a message's entry when its newest row is); beyond ``max_entries`` held rows the oldest
go early. Counts: ``hits`` (labels joined), ``misses`` (labels that expired or were evicted
without their prediction -- the join's failures), ``unlabelled`` (predictions that expired without
a label: normal, most traffic is never labelled), ``duplicates`` (rows or labels seen twice).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.monitor.state import State
from shared.events import Target, epoch, from_epoch

_BATCH, _ID = "b:", "i:"
CHUNK_ROWS = 2000
"""Rows per stored entry of a prediction message (a changelog record stays well under 1 MB)."""
_LABEL, _JOINED = "l", "j"


class JoinCounts(State):
    """What a :class:`Join` counted, as checkpointed (its entries are in the store)."""

    hits: int = 0
    misses: int = 0
    unlabelled: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class JoinedPair:
    """A prediction and its ground truth."""

    inference_id: str
    version: int
    variant: str
    predicted: Target
    actual: Target
    """A class, or a regressor's number: what they mean is the model's task's business
    (:func:`services.monitor.outcome.score`)."""
    predicted_at: datetime
    labelled_at: datetime

    @property
    def correct(self) -> bool:
        """Labels compare as strings (``1`` and ``"1"`` match, as in the spec)."""
        return str(self.predicted) == str(self.actual)

    @property
    def lag_seconds(self) -> float:
        """Label time minus prediction time (event times; negative if the label is dated earlier)."""
        return (self.labelled_at - self.predicted_at).total_seconds()


@dataclass(eq=False)
class _Batch:
    """The rows of one prediction message."""

    key: str
    at: float
    version: int
    variant: str
    ids: list[str]
    labels: list[Target]
    times: list[float]

    def to_entry(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "version": self.version,
            "variant": self.variant,
            "ids": self.ids,
            "labels": self.labels,
            "times": self.times,
        }

    @classmethod
    def from_entry(cls, key: str, entry: Mapping[str, Any]) -> _Batch:
        return cls(
            key,
            float(entry["at"]),
            int(entry["version"]),
            str(entry["variant"]),
            list(entry["ids"]),
            list(entry["labels"]),
            [float(t) for t in entry["times"]],
        )


class Join:
    """Predictions (in messages) and labels (one by one) joined by inference id.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> join = Join({}, retention=timedelta(hours=1))
    >>> join.add_label("b", 1, t)  # a label before its prediction
    >>> fresh, pairs = join.add_predictions("msg-1", 3, "champion", ["a", "b"], [0, 1], [t, t])
    >>> fresh, [(p.inference_id, p.correct) for p in pairs]
    ([0, 1], [('b', True)])
    >>> join.add_label("a", 1, t).correct
    False
    """

    def __init__(
        self,
        store: MutableMapping[str, dict[str, Any]],
        retention: timedelta,
        max_entries: int = 1_000_000,
        namespace: str = "",
    ) -> None:
        self.store = store
        self.retention = retention
        self.max_entries = max_entries
        self.namespace = namespace
        self.hits = 0
        self.misses = 0
        self.unlabelled = 0
        self.duplicates = 0
        self._batches: dict[str, _Batch] = {}
        self._waiting: dict[str, tuple[_Batch, int]] = {}
        """Predictions waiting for their label: inference id -> (message, row)."""
        self._labels: dict[str, tuple[float, Target]] = {}
        """Labels waiting for their prediction: inference id -> (time, label)."""
        self._joined: dict[str, float] = {}
        """Tombstones of joined pairs: inference id -> the time they expire by."""
        self._order: list[tuple[float, str]] = []
        """(time, store key) of every entry, oldest first."""

    # --- adding -------------------------------------------------------------------------------

    def add_predictions(
        self,
        message_id: str,
        version: int,
        variant: str,
        ids: Sequence[str],
        labels: Sequence[Target],
        times: Sequence[datetime],
    ) -> tuple[list[int], list[JoinedPair]]:
        """The rows of one prediction message (``message_id`` names it). Returns the rows seen for
        the first time, and the pairs of those whose labels were waiting. A redelivered message
        is all duplicates; so is a row whose inference id is already held."""
        epochs = [epoch(t) for t in times]
        fresh: list[int] = []
        pairs: list[JoinedPair] = []
        for start in range(0, len(ids), CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            key = f"{self.namespace}{_BATCH}{message_id}/{start // CHUNK_ROWS}"
            if key in self._batches:  # a redelivered message
                self.duplicates += len(ids[rows])
                continue
            batch = _Batch(key, max(epochs[rows]), version, variant, list(ids[rows]), list(labels[rows]), epochs[rows])
            self._add_rows(batch, start, fresh, pairs)
        return fresh, pairs

    def _add_rows(self, batch: _Batch, offset: int, fresh: list[int], pairs: list[JoinedPair]) -> None:
        waiting, joined, waiting_labels = self._waiting, self._joined, self._labels
        kept = False
        for i, inference_id in enumerate(batch.ids):
            if inference_id in waiting or inference_id in joined:
                self.duplicates += 1
                continue
            fresh.append(offset + i)
            label = waiting_labels.pop(inference_id, None)
            if label is None:
                waiting[inference_id] = (batch, i)
                kept = True
                continue
            labelled_at, actual = label
            self.hits += 1
            self._tombstone(inference_id, max(labelled_at, batch.at))
            predicted_at = from_epoch(batch.times[i])
            pairs.append(
                JoinedPair(
                    inference_id,
                    batch.version,
                    batch.variant,
                    batch.labels[i],
                    actual,
                    predicted_at,
                    from_epoch(labelled_at),
                )
            )
        if kept:
            self._batches[batch.key] = batch  # something waits for a label: keep the rows
            self.store[batch.key] = batch.to_entry()
            self._push(batch.at, batch.key)

    def add_label(self, inference_id: str, label: Target, at: datetime) -> JoinedPair | None:
        """A ground-truth label; returns the pair if its prediction was waiting."""
        found = self._waiting.pop(inference_id, None)
        if found is not None:
            batch, i = found
            self.hits += 1
            self._tombstone(inference_id, batch.at)
            return JoinedPair(
                inference_id, batch.version, batch.variant, batch.labels[i], label, from_epoch(batch.times[i]), at
            )
        if inference_id in self._joined or inference_id in self._labels:
            self.duplicates += 1
            return None
        seconds = epoch(at)
        self._labels[inference_id] = (seconds, label)
        key = self.namespace + _ID + inference_id
        self.store[key] = {"k": _LABEL, "at": seconds, "label": label}
        self._push(seconds, key)
        return None

    def _tombstone(self, inference_id: str, at: float) -> None:
        # Kept as long as the message entry its prediction came in (which still lists the row),
        # so a redelivered side and a rebuild both see the pair as joined.
        key = self.namespace + _ID + inference_id
        self._joined[inference_id] = at
        self.store[key] = {"k": _JOINED, "at": at}
        self._push(at, key)

    def _push(self, at: float, key: str) -> None:
        heapq.heappush(self._order, (at, key))
        while len(self) > self.max_entries and self._order:
            self._drop(*heapq.heappop(self._order))

    # --- dropping -----------------------------------------------------------------------------

    def _drop(self, at: float, key: str) -> bool:
        """Drop the entry behind a heap item unless it was replaced since; True if dropped."""
        name = key[len(self.namespace) :]
        if name.startswith(_BATCH):
            batch = self._batches.get(key)
            if batch is None or batch.at != at:
                return False
            del self._batches[key]
            for inference_id in batch.ids:
                found = self._waiting.get(inference_id)
                if found is not None and found[0] is batch:
                    del self._waiting[inference_id]
                    self.unlabelled += 1
        else:
            inference_id = name[len(_ID) :]
            label = self._labels.get(inference_id)
            if label is not None and label[0] == at:
                del self._labels[inference_id]
                self.misses += 1
            elif self._joined.get(inference_id) == at:
                del self._joined[inference_id]
            else:
                return False
        self.store.pop(key, None)
        return True

    def expire(self, now: datetime) -> int:
        """Drop entries older than ``retention`` before ``now`` (event time); returns how many."""
        cutoff = epoch(now) - self.retention.total_seconds()
        dropped = 0
        while self._order and self._order[0][0] < cutoff:
            dropped += self._drop(*heapq.heappop(self._order))
        return dropped

    # --- reading and restoring ----------------------------------------------------------------

    def __len__(self) -> int:
        """Rows held: predictions awaiting labels, labels awaiting predictions, recent joins."""
        return len(self._waiting) + len(self._labels) + len(self._joined)

    @property
    def hit_rate(self) -> float:
        """Labels joined over labels resolved (joined or missed); 0 before any."""
        resolved = self.hits + self.misses
        return self.hits / resolved if resolved else 0.0

    def rebuild(self) -> None:
        """Read what the join holds back from the store (after a restart or a rebalance)."""
        self._batches, self._waiting, self._labels, self._joined = {}, {}, {}, {}
        batches: list[_Batch] = []
        for key, entry in list(self.store.items()):
            if not key.startswith(self.namespace):
                continue
            name = key[len(self.namespace) :]
            if name.startswith(_BATCH):
                batches.append(_Batch.from_entry(key, entry))
            elif name.startswith(_ID) and entry.get("k") == _LABEL:
                self._labels[name[len(_ID) :]] = (float(entry["at"]), entry["label"])
            elif name.startswith(_ID) and entry.get("k") == _JOINED:
                self._joined[name[len(_ID) :]] = float(entry["at"])
        for batch in batches:
            self._batches[batch.key] = batch
            for i, inference_id in enumerate(batch.ids):
                if inference_id not in self._joined and inference_id not in self._waiting:
                    self._waiting[inference_id] = (batch, i)
        self._order = [(b.at, b.key) for b in batches]
        self._order += [(at, self.namespace + _ID + i) for i, (at, _) in self._labels.items()]
        self._order += [(at, self.namespace + _ID + i) for i, at in self._joined.items()]
        heapq.heapify(self._order)

    def state(self) -> JoinCounts:
        """The counters (the entries themselves are in the store)."""
        return JoinCounts(hits=self.hits, misses=self.misses, unlabelled=self.unlabelled, duplicates=self.duplicates)

    @classmethod
    def from_state(
        cls,
        counts: JoinCounts,
        store: MutableMapping[str, dict[str, Any]],
        retention: timedelta,
        max_entries: int = 1_000_000,
        namespace: str = "",
        rebuild: bool = True,
    ) -> Join:
        """A join over ``store`` with the saved counters. ``rebuild=False`` leaves reading the
        store to a later :meth:`rebuild` (a faust table is read on the event loop's thread)."""
        join = cls(store, retention, max_entries, namespace)
        join.hits, join.misses, join.unlabelled, join.duplicates = (
            counts.hits,
            counts.misses,
            counts.unlabelled,
            counts.duplicates,
        )
        if rebuild:
            join.rebuild()
        return join
