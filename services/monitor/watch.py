"""Everything the monitor keeps about one model, and its checkpoint. Pure: no I/O.

A :class:`ModelWatch` holds a model's drift streams (:class:`~services.monitor.drift.ModelDrift`),
the prediction/label joins of the champion and canary and of the shadow, live accuracy (a
regressor's MAE and RMSE), the running canary trial, the post-promotion watch and the report's
timeline. Its checkpoint
(``monitor/<model>/state.json``) is one :class:`WatchState`: ``model_dump_json()`` to write,
:func:`load_checkpoint` to read, which migrates an older ``schema_version`` in
:func:`migrate_v1` -- the one place that knows old formats.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from services.monitor.canary import CanaryTrial, ChampionWatch, ChangeWait, LiveAccuracy, LiveAccuracyState
from services.monitor.drift import ModelDrift, ModelDriftState
from services.monitor.join import Join, JoinCounts
from services.monitor.state import State
from shared.events import DeploymentChanged, DriftDetected, UtcDatetime, from_epoch
from shared.reference import Reference
from shared.registry import Alias
from shared.spec import ModelSpec

SCHEMA_VERSION = 2
"""Version of :class:`WatchState`; 1 is the hand-written format before it (no ``schema_version``)."""

RECENT_VALUES = 2000
"""Recent values kept per feature for the report's current-vs-reference histograms (and bars)."""

HANDLED_EVENTS = 256
"""Ids of applied deployment events remembered (the monitor also consumes its own)."""

MarkerKind = Literal["drift", "retrain", "promoted", "rolled_back", "canary_started", "shadow_started"]


def state_key(model: str) -> str:
    """Where a model's monitor state is checkpointed."""
    return f"monitor/{model}/state.json"


class Marker(State):
    """Something that happened to a model, for the report's timeline."""

    at: UtcDatetime
    kind: MarkerKind
    text: str


class Decision(State):
    """Something the monitor decided and has still to carry out: the registry's aliases to move
    (alias, version or None to clear, reason), then the event to publish (if any)."""

    moves: list[tuple[Alias, int | None, str]] = []
    event: DeploymentChanged | DriftDetected | None = None


class WatchState(State):
    """A model's :class:`ModelWatch` as checkpointed (the spec and references are not: they come
    from the catalog and the model card)."""

    schema_version: Literal[2] = 2
    champion: int | None
    canary: int | None
    drift: ModelDriftState
    join: JoinCounts
    shadow_join: JoinCounts
    live: LiveAccuracyState
    trial: CanaryTrial | None = None
    watch: ChampionWatch | None = None
    markers: list[Marker] = []
    recent: dict[str, list[float]] = {}
    recent_categories: dict[str, list[str]] = {}
    """Recent categories of the categorical and boolean features (missing values not kept)."""
    last_drift: DriftDetected | None = None
    handled: list[str] = []
    change_wait: ChangeWait | None = None
    decisions: list[Decision] = []
    recent_predictions: list[float] = []
    """A regressor's recent predicted values (the champion's), for the report's histogram."""
    unscored: int = 0
    """Joined pairs that could not be scored (a regressor's value that is not a finite number)."""


@dataclass
class ModelWatch:
    """Everything the monitor keeps about one model."""

    model: str
    spec: ModelSpec
    champion: int | None
    canary: int | None
    drift: ModelDrift
    join: Join
    shadow_join: Join
    live: LiveAccuracy
    trial: CanaryTrial | None = None
    watch: ChampionWatch | None = None
    markers: list[Marker] = field(default_factory=list)
    recent: dict[str, deque[float]] = field(default_factory=dict)
    """Recent values of the numeric features."""
    recent_categories: dict[str, deque[str]] = field(default_factory=dict)
    """Recent categories (:func:`services.monitor.categorical.category_of`) of the other features."""
    last_drift: DriftDetected | None = None
    change_wait: ChangeWait | None = None
    """Set while a since-change retrain waits for labelled rows after a detected change."""
    handled: deque[str] = field(default_factory=lambda: deque(maxlen=HANDLED_EVENTS))
    """Ids of the deployment events already applied (the monitor also sees its own)."""
    decisions: list[Decision] = field(default_factory=list)
    """Verdicts and alarms decided but not yet carried out (a store or broker outage)."""
    recent_predictions: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_VALUES))
    """A regressor's recent predicted values (the champion's): the report's histogram against the
    reference's predicted values."""
    unscored: int = 0
    """Joined pairs that could not be scored (a regressor's predicted or actual value that is not a
    finite number): counted, not fed to any mean."""
    dirty: bool = False

    @classmethod
    def fresh(
        cls,
        spec: ModelSpec,
        champion: int | None,
        canary: int | None,
        reference: Reference | None,
        join_table: MutableMapping[str, Any],
        join_max_rows: int,
        accuracy_window: timedelta,
    ) -> ModelWatch:
        """A model seen for the first time (no checkpoint)."""
        model, retention = spec.name, spec.monitoring.join_retention
        return cls(
            model=model,
            spec=spec,
            champion=champion,
            canary=canary,
            drift=ModelDrift(model, champion, reference, spec.monitoring),
            join=Join(join_table, retention, join_max_rows, f"{model}/"),
            shadow_join=Join(join_table, retention, join_max_rows, f"{model}/shadow/"),
            live=LiveAccuracy(accuracy_window),
        )

    @classmethod
    def restore(
        cls,
        state: WatchState,
        spec: ModelSpec,
        reference: Reference | None,
        join_table: MutableMapping[str, Any],
        join_max_rows: int,
    ) -> ModelWatch:
        """Continue from a checkpoint, against the current spec and the champion's reference.
        The joins' entries are read later, with :meth:`Join.rebuild` (on the event loop's thread)."""
        model, retention = spec.name, spec.monitoring.join_retention
        return cls(
            model=model,
            spec=spec,
            champion=state.champion,
            canary=state.canary,
            drift=ModelDrift.from_state(state.drift, reference, spec.monitoring),
            join=Join.from_state(state.join, join_table, retention, join_max_rows, f"{model}/", rebuild=False),
            shadow_join=Join.from_state(
                state.shadow_join, join_table, retention, join_max_rows, f"{model}/shadow/", rebuild=False
            ),
            live=LiveAccuracy.from_state(state.live),
            trial=state.trial,
            watch=state.watch,
            markers=list(state.markers),
            recent={name: deque(values, maxlen=RECENT_VALUES) for name, values in state.recent.items()},
            recent_categories={
                name: deque(values, maxlen=RECENT_VALUES) for name, values in state.recent_categories.items()
            },
            last_drift=state.last_drift,
            change_wait=state.change_wait,
            handled=deque(state.handled, maxlen=HANDLED_EVENTS),
            decisions=list(state.decisions),
            recent_predictions=deque(state.recent_predictions, maxlen=RECENT_VALUES),
            unscored=state.unscored,
        )

    def mark(self, at: datetime, kind: MarkerKind, text: str) -> None:
        """Add to the timeline (the newest 500 are kept)."""
        self.markers.append(Marker(at=at, kind=kind, text=text))
        del self.markers[:-500]
        self.dirty = True

    def state(self) -> WatchState:
        """The checkpoint."""
        return WatchState(
            champion=self.champion,
            canary=self.canary,
            drift=self.drift.state(),
            join=self.join.state(),
            shadow_join=self.shadow_join.state(),
            live=self.live.state(),
            trial=self.trial,
            watch=self.watch,
            markers=self.markers,
            recent={name: list(values) for name, values in self.recent.items()},
            recent_categories={name: list(values) for name, values in self.recent_categories.items()},
            last_drift=self.last_drift,
            handled=list(self.handled),
            change_wait=self.change_wait if self.change_wait and self.change_wait.waiting else None,
            decisions=self.decisions,
            recent_predictions=list(self.recent_predictions),
            unscored=self.unscored,
        )


def load_checkpoint(data: bytes) -> WatchState:
    """A checkpoint of any schema version, as the current :class:`WatchState`."""
    raw = json.loads(data)
    if raw.get("schema_version") is None:
        raw = migrate_v1(raw)
    return WatchState.model_validate(raw)


def migrate_v1(old: dict[str, Any]) -> dict[str, Any]:
    """A version-1 checkpoint (hand-written JSON: pairs as lists, a ``"0101"`` string, epoch
    seconds, infinities as ``"inf"``) in the shape of :class:`WatchState`."""
    drift = dict(old["drift"])
    policy = drift.pop("policy")
    drift["policy"] = {
        "model": policy["model"],
        "version": policy["version"],
        "cooldown": float(policy["cooldown_s"]),
        "confirming": {key: _pending_v1(p) for key, p in policy["pending"].items()},
        "last_alarm": policy["last_alarm"],
        "latched_causes": policy["latched"],
    }
    live = old["live"]
    trial, watch, wait = old["trial"], old["watch"], old.get("change_wait")
    return {
        "schema_version": SCHEMA_VERSION,
        "champion": old["champion"],
        "canary": old["canary"],
        "drift": drift,
        "join": old["join"],
        "shadow_join": old["shadow_join"],
        "live": {
            "window": float(live["window_s"]),
            "max_points": live["max_points"],
            "series": [
                {
                    "model": s["key"][0],
                    "version": s["key"][1],
                    "variant": s["key"][2],
                    "total": _counts_v1(s["total"]),
                    "points": s["points"],
                }
                for s in live["series"]
            ],
        },
        "trial": None
        if trial is None
        else {
            "champion_version": trial["champion_version"],
            "canary_version": trial["canary_version"],
            "started_at": from_epoch(float(trial["started_at"])).isoformat(),
            "champion": _counts_v1(trial["champion"]),
            "canary": _counts_v1(trial["canary"]),
            "decided": trial["decided"],
        },
        "watch": None if watch is None else _watch_v1(watch),
        "markers": old["markers"],
        "recent": old["recent"],
        "last_drift": old["last_drift"],
        "handled": old.get("handled", []),
        "change_wait": None if not wait else {"min_rows": int(wait[0]), "rows_after_change": int(wait[1])},
    }


def _watch_v1(watch: dict[str, Any]) -> dict[str, Any]:
    """A champion watch: its window was a ``"0101"`` string; the recorded previous error is no
    longer kept (the watch compares both versions on the same traffic now)."""
    migrated = {k: v for k, v in watch.items() if k != "previous_error"}
    migrated["recent"] = [int(c) for c in watch["recent"]]
    return migrated


def _counts_v1(pair: list[int]) -> dict[str, int]:
    return {"labelled": int(pair[0]), "errors": int(pair[1])}


def _pending_v1(pending: dict[str, Any]) -> dict[str, Any]:
    candidate = dict(pending["candidate"])
    candidate["statistic"] = float(candidate["statistic"])
    candidate["threshold"] = float(candidate["threshold"])
    confirmation = dict(pending["confirmation"])
    if confirmation["kind"] == "mean_rise":  # before the patient stage, patience was the extension
        confirmation.setdefault("z_patient", confirmation["z"])
        confirmation.setdefault("patience", confirmation["extend"])
    if "ratio" in confirmation:
        confirmation["ratio"] = float(confirmation["ratio"])
    return {"candidate": candidate, "confirmation": confirmation, "window_size": pending["window_size"]}
