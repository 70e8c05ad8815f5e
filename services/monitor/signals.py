"""The detectors' protocol: one value in, one :class:`DriftSignal` out, and JSON checkpoints.

Every wrapper of a River detector (:mod:`services.monitor.adwin`, :mod:`services.monitor.detectors`)
reads River's flag right after River's own update (River clears it on the next call) and
writes its state as JSON headed by :func:`state_header`: the wrapper type, :data:`STATE_VERSION`
and the River version, which :func:`check_state_header` verifies before a restore.
"""

from __future__ import annotations

import base64
import math
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import version as _package_version
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

STATE_VERSION = 1
"""Bumped whenever a wrapper's ``to_state`` layout changes."""

RIVER_VERSION = _package_version("river")
"""Recorded in every state: internal-attribute states are only trusted by the same River."""


class IncompatibleState(ValueError):
    """A checkpoint cannot be restored by this code (unknown type, layout or River version)."""


class DriftSignal(NamedTuple):
    """What a detector says after one sample (immutable; a named tuple because one is built for
    every feature value the monitor sees, and a frozen dataclass costs three times as much).

    Attributes
    ----------
    drifted
        The detector flagged a change on this very sample.
    statistic, threshold
        The detector's own evidence and the bound it is compared with (same units; a drift
        means the statistic crossed the threshold). Between drifts they show how close the
        stream is to an alarm, for the dashboards.
    samples
        Samples this detector has seen in its lifetime (monotonic, survives checkpoints and
        resets after drifts).
    change_samples
        On a drift, how many of the most recent samples belong to the new regime (see the
        module docstring for each detector's estimate); None otherwise.
    reference_mean, reference_samples
        On a drift, the mean of the stream before the change and how many samples it rests on,
        so a confirmation step can test fresh samples against it; None / 0 otherwise.
    """

    drifted: bool
    statistic: float
    threshold: float
    samples: int
    change_samples: int | None = None
    reference_mean: float | None = None
    reference_samples: int = 0


@dataclass(frozen=True, slots=True)
class BatchSignals:
    """What a detector says after many samples: each drift with the index of the sample that
    caused it, and the signal after the last sample (None for no samples)."""

    drifts: list[tuple[int, DriftSignal]]
    last: DriftSignal | None


@runtime_checkable
class Detector(Protocol):
    """A streaming change detector: one value in, one :class:`DriftSignal` out."""

    name: str
    """River's name for the method (``ADWIN``, ``KSWIN``, ``DDM``, ``HDDM_A``, ``HDDM_W``)."""

    def update(self, x: float) -> DriftSignal:
        """Feed one sample; the signal is final (read right after River's update)."""
        ...

    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue identically, as JSON-serialisable data."""
        ...


def update_many(detector: Detector, values: Sequence[float] | NDArray[np.float64]) -> BatchSignals:
    """Feed ``values`` in order: the detector's own ``update_many`` when it has one (ADWIN),
    else :meth:`Detector.update` one by one -- the same signals either way."""
    batch = getattr(detector, "update_many", None)
    if batch is not None:
        result: BatchSignals = batch(values)
        return result
    drifts: list[tuple[int, DriftSignal]] = []
    last: DriftSignal | None = None
    for i, value in enumerate(values.tolist() if isinstance(values, np.ndarray) else values):
        last = detector.update(value)
        if last.drifted:
            drifts.append((i, last))
    return BatchSignals(drifts, last)


# --- checkpoint helpers of the detector wrappers ------------------------------------------------


def pack_floats(values: Iterable[float]) -> str:
    """Float64 values as base64 (exact, and about 3x smaller than JSON numbers)."""
    buf = array("d", values)
    if sys.byteorder != "little":  # pragma: no cover - every platform we run on is little-endian
        buf.byteswap()
    return base64.b64encode(buf.tobytes()).decode("ascii")


def unpack_floats(text: str) -> array[float]:
    buf = array("d")
    buf.frombytes(base64.b64decode(text.encode("ascii")))
    if sys.byteorder != "little":  # pragma: no cover
        buf.byteswap()
    return buf


def finite_or_none(value: float) -> float | None:
    """JSON has no infinity: River's "not yet set" infinities are stored as null."""
    return value if math.isfinite(value) else None


def state_header(name: str, params: dict[str, Any], samples: int) -> dict[str, Any]:
    return {
        "type": name,
        "state_version": STATE_VERSION,
        "river": RIVER_VERSION,
        "params": params,
        "samples": samples,
    }


def check_state_header(state: dict[str, Any], name: str, *, same_river: bool) -> None:
    if state.get("type") != name:
        raise IncompatibleState(f"state is for {state.get('type')!r}, not {name}")
    if state.get("state_version") != STATE_VERSION:
        raise IncompatibleState(f"{name} state version {state.get('state_version')!r} is not {STATE_VERSION}")
    if same_river and state.get("river") != RIVER_VERSION:
        raise IncompatibleState(
            f"{name} state was written with River {state.get('river')}, this is {RIVER_VERSION}: "
            "its internal attributes may differ"
        )
