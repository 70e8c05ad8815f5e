"""When a confirmed change started: a bounded history of a stream's sample times. Pure: no I/O.

A drift is published after its confirmation saw enough fresh samples; the alarm dates the
change (``change_started_at``) as the sample that many back -- the detector's estimate of the
new regime plus the fresh samples -- from the times kept here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime

from services.monitor.alarms import Pending
from shared.events import epoch, from_epoch


class SampleTimes:
    """A bounded history of sample times, to date "the n-th most recent sample"."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._times: deque[float] = deque(maxlen=size)

    def add(self, at: datetime) -> None:
        self._times.append(epoch(at))

    def extend(self, epochs: Iterable[float]) -> None:
        """Add many sample times (epoch seconds), oldest first."""
        self._times.extend(epochs)

    def ago(self, samples: int | None, newer: Sequence[float] = ()) -> datetime | None:
        """Time of the sample ``samples`` back (1 = the latest); the oldest kept if further.

        ``newer``: epoch times of samples not added yet, as if they had been (a batch that
        is being observed sample by sample).
        """
        if samples is None:
            return None
        kept = min(self._size, len(self._times) + len(newer))
        if kept == 0:
            return None
        back = min(max(samples, 1), kept)
        if back <= len(newer):
            return from_epoch(newer[-back])
        return from_epoch(self._times[len(newer) - back])

    def change_started(self, pending: Pending | None, newer: Sequence[float] = ()) -> datetime | None:
        """Time of the first new-regime sample if ``pending`` confirms on the next observation
        (None without a pending candidate); ``newer`` as for :meth:`ago`."""
        if pending is None:
            return None
        change = pending.candidate.change_samples or 0
        return self.ago(change + (pending.confirmation.seen + 1) * pending.window_size, newer)

    def values(self) -> list[float]:
        """The kept times, oldest first (epoch seconds)."""
        return list(self._times)
