"""What the demo measured, as figures and a plot. Pure: served predictions and a timeline in.

The demo records every prediction it was served (event index, truth, answer, version, variant)
and every loop event it saw (drift, training, deployment) with the event index at that moment.
From those alone this module computes the figures of the summary table — accuracy before the
drift, right after it and after recovery (a regressor's mean absolute error instead), detection
delay, drift-to-new-champion time — and draws accuracy (or the error) over time with the loop's
events marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WINDOW = 1000
"""Served predictions per accuracy figure (before the drift, right after it, at the end)."""
RECOVERED_MAE_RATIO = 1.25
"""A regressor has recovered when its MAE after the new champion is at most this many times
the MAE before the drift (a new concept need not be as predictable as the old one)."""


@dataclass(frozen=True)
class Served:
    """One prediction the demo was served, with the truth it later published."""

    index: int
    correct: bool
    version: int
    variant: str
    error: float | None = None
    """A regressor's absolute error (None for a classifier, whose ``correct`` tells)."""


@dataclass(frozen=True)
class LoopEvent:
    """Something the loop did, stamped with the demo's clock and position in the stream."""

    seconds: float
    index: int
    kind: str  # drift | training | canary_started | promoted | rolled_back | shadow_started
    version: int | None
    text: str


@dataclass
class LoopFigures:
    """The summary of one run of the loop."""

    switch_index: int
    switch_seconds: float
    accuracy_before: float | None = None
    accuracy_right_after: float | None = None
    accuracy_recovered: float | None = None
    mae_before: float | None = None
    mae_right_after: float | None = None
    mae_recovered: float | None = None
    """A regressor's figures, in place of the three accuracies (which stay None)."""
    detection_delay_events: int | None = None
    detection_delay_seconds: float | None = None
    champion_delay_events: int | None = None
    champion_delay_seconds: float | None = None
    new_champion: int | None = None
    retrains_before_drift: int = 0
    alarms_before_drift: int = 0
    versions: list[str] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        """True when the figures are a regressor's errors."""
        return self.mae_before is not None

    def checks(self) -> dict[str, bool]:
        """What the demo promises, each true or false."""
        checks = {
            "no retrain before the drift": self.retrains_before_drift == 0,
            "no drift alarm before the drift": self.alarms_before_drift == 0,
            "drift detected": self.detection_delay_events is not None,
            "a new champion after the drift": self.new_champion is not None,
        }
        if self.regression:
            recovered = self.mae_recovered is not None and self.mae_recovered <= RECOVERED_MAE_RATIO * (
                self.mae_before or 0.0
            )
            checks[f"recovered within {RECOVERED_MAE_RATIO:g} x the pre-drift MAE"] = recovered
        else:
            checks["recovered within 5 points of pre-drift accuracy"] = (
                self.accuracy_before is not None
                and self.accuracy_recovered is not None
                and self.accuracy_recovered >= self.accuracy_before - 0.05
            )
        return checks

    def rows(self) -> list[tuple[str, str]]:
        """(figure, value) for the summary table."""

        def pct(value: float | None) -> str:
            return "—" if value is None else f"{value:.3f}"

        def delay(events: int | None, seconds: float | None) -> str:
            return "not reached" if events is None or seconds is None else f"{events} events / {seconds:.1f} s"

        if self.regression:
            measured = [
                (f"MAE before the drift (last {WINDOW} served)", pct(self.mae_before)),
                (f"MAE right after the drift (first {WINDOW} served)", pct(self.mae_right_after)),
                (f"MAE after recovery (last {WINDOW} served)", pct(self.mae_recovered)),
            ]
        else:
            measured = [
                (f"accuracy before the drift (last {WINDOW} served)", pct(self.accuracy_before)),
                (f"accuracy right after the drift (first {WINDOW} served)", pct(self.accuracy_right_after)),
                (f"accuracy after recovery (last {WINDOW} served)", pct(self.accuracy_recovered)),
            ]
        return [
            ("model versions", ", ".join(self.versions) or "—"),
            *measured,
            ("detection delay", delay(self.detection_delay_events, self.detection_delay_seconds)),
            ("drift to new champion", delay(self.champion_delay_events, self.champion_delay_seconds)),
            ("new champion", "—" if self.new_champion is None else f"v{self.new_champion}"),
            ("retrains before the drift", str(self.retrains_before_drift)),
            ("drift alarms before the drift", str(self.alarms_before_drift)),
        ]


def _accuracy(served: list[Served]) -> float | None:
    return sum(s.correct for s in served) / len(served) if served else None


def _mae(served: list[Served]) -> float | None:
    errors = [s.error for s in served if s.error is not None]
    return sum(errors) / len(errors) if errors else None


def is_regression(served: list[Served]) -> bool:
    """True when the served predictions are a regressor's (they carry errors)."""
    return any(s.error is not None for s in served)


def new_champion(timeline: list[LoopEvent], switch_index: int, first_version: int) -> LoopEvent | None:
    """The first promotion after the change of a version that may have learnt the new concept:
    one not seen before the change (the first version, an operator's canary or promotion there
    learnt the old one)."""
    stale = {first_version} | {e.version for e in timeline if e.index < switch_index}
    return next(
        (e for e in timeline if e.index >= switch_index and e.kind == "promoted" and e.version not in (None, *stale)),
        None,
    )


def figures(
    served: list[Served],
    timeline: list[LoopEvent],
    switch_index: int,
    switch_seconds: float,
    first_version: int,
    versions: list[str],
) -> LoopFigures:
    """The summary figures of a run (``served`` in index order)."""
    before = [s for s in served if s.index < switch_index]
    after = [s for s in served if s.index >= switch_index]
    result = LoopFigures(switch_index=switch_index, switch_seconds=switch_seconds, versions=versions)
    if is_regression(served):
        result.mae_before, result.mae_right_after = _mae(before[-WINDOW:]), _mae(after[:WINDOW])
    else:
        result.accuracy_before, result.accuracy_right_after = _accuracy(before[-WINDOW:]), _accuracy(after[:WINDOW])
    pre = [e for e in timeline if e.index < switch_index]
    result.retrains_before_drift = sum(e.kind == "training" and e.version != first_version for e in pre)
    result.alarms_before_drift = sum(e.kind == "drift" for e in pre)
    post = [e for e in timeline if e.index >= switch_index]
    drift = next((e for e in post if e.kind == "drift"), None)
    if drift is not None:
        result.detection_delay_events = drift.index - switch_index
        result.detection_delay_seconds = drift.seconds - switch_seconds
    champion = new_champion(timeline, switch_index, first_version)
    if champion is not None:
        result.new_champion = champion.version
        result.champion_delay_events = champion.index - switch_index
        result.champion_delay_seconds = champion.seconds - switch_seconds
        recovered = [s for s in after if s.index >= champion.index][-WINDOW:]
        if result.regression:
            result.mae_recovered = _mae(recovered)
        else:
            result.accuracy_recovered = _accuracy(recovered)
    return result


MARKER_STYLE: dict[str, tuple[str, str]] = {
    "drift": ("#d62728", "drift detected"),
    "training": ("#7f7f7f", "retrain"),
    "canary_started": ("#1f77b4", "canary started"),
    "promoted": ("#2ca02c", "promoted"),
    "rolled_back": ("#ff7f0e", "rolled back"),
    "shadow_started": ("#9467bd", "shadow started"),
}


def plot(served: list[Served], timeline: list[LoopEvent], switch_index: int, path: Path, title: str) -> None:
    """Accuracy of the served predictions over the stream (rolling 200), with the loop's events
    (a regressor's absolute error, rolling 200, instead)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    regression = is_regression(served)
    measure = "absolute error" if regression else "accuracy"
    if served:
        index = np.array([s.index for s in served])
        values = np.array([(s.error or 0.0) if regression else s.correct for s in served], dtype=float)
        width = min(200, len(values))
        rolling = np.convolve(values, np.ones(width) / width, mode="valid")
        ax.plot(index[width - 1 :], rolling, color="#333", linewidth=1.4, label=f"served {measure} (rolling 200)")
    ax.axvline(switch_index, color="#000", linestyle=":", linewidth=1.5, label="concept switch")
    seen: set[str] = set()
    for event in timeline:
        colour, name = MARKER_STYLE.get(event.kind, ("#000", event.kind))
        ax.axvline(event.index, color=colour, linestyle="--", linewidth=1, label=None if name in seen else name)
        seen.add(name)
    if regression:
        ax.set_ylim(bottom=0.0)
    else:
        ax.set_ylim(0.4, 1.02)
    ax.set_xlabel("event in the stream")
    ax.set_ylabel(measure)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left" if regression else "lower left", fontsize=8, ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def to_json(result: LoopFigures) -> dict[str, Any]:
    """The figures as stored next to the report."""
    return dict(result.__dict__) | {"checks": result.checks()}
