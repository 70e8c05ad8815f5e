"""Monitor use-cases: a prediction was logged, a label arrived, a deployment changed.

One :class:`ModelWatch` per model holds everything the monitor knows about it — the drift
streams (:class:`~services.monitor.core.ModelDrift`), the prediction/label join, live accuracy,
the running canary trial and the post-promotion watch — and is checkpointed to the object store
(``monitor/<model>/state.json``) so a restarted or rebalanced monitor carries on where it
stopped. The join's entries live in the mapping passed in (a faust Table in the service, whose
changelog follows the partition). Decisions leave as events: ``DriftDetected`` on ``drift``,
``DeploymentChanged`` on ``deployments`` (with the registry's aliases moved first).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np

from services.monitor.core import (
    CanaryJudge,
    CanaryTrial,
    ChampionWatch,
    ChangeWait,
    DriftUpdate,
    LiveAccuracy,
    ModelDrift,
    Verdict,
)
from services.monitor.join import Join, JoinedPair
from services.monitor.metrics import MonitorMetrics
from shared.bus import Publisher
from shared.errors import KeyNotFound
from shared.events import (
    AnnotationSubmitted,
    DeploymentChanged,
    DriftDetected,
    PredictionsLogged,
    TrainingCompleted,
)
from shared.registry import Alias, Reference, Registry
from shared.spec import ModelSpec, SpecCatalog
from shared.store import ObjectStore

log = logging.getLogger("driftloop.monitor")

ACTOR = "monitor"
PRODUCTION: Alias = "production"
RECENT_VALUES = 2000
"""Recent values kept per feature for the report's current-vs-reference histograms."""
MarkerKind = Literal["drift", "retrain", "promoted", "rolled_back", "canary_started", "shadow_started"]


def state_key(model: str) -> str:
    """Where a model's monitor state is checkpointed."""
    return f"monitor/{model}/state.json"


@dataclass
class Marker:
    """Something that happened to a model, for the report's timeline."""

    at: datetime
    kind: MarkerKind
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "kind": self.kind, "text": self.text}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Marker:
        return cls(datetime.fromisoformat(data["at"]), data["kind"], data["text"])


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
    last_drift: DriftDetected | None = None
    change_wait: ChangeWait | None = None
    """Set while a since-change retrain waits for labelled rows after a detected change."""
    handled: deque[str] = field(default_factory=lambda: deque(maxlen=256))
    """Ids of the deployment events already applied (the monitor also sees its own)."""
    dirty: bool = False

    def mark(self, at: datetime, kind: MarkerKind, text: str) -> None:
        self.markers.append(Marker(at, kind, text))
        del self.markers[:-500]
        self.dirty = True

    def to_state(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "canary": self.canary,
            "drift": self.drift.to_state(),
            "join": self.join.to_state(),
            "shadow_join": self.shadow_join.to_state(),
            "live": self.live.to_state(),
            "trial": self.trial.to_state() if self.trial else None,
            "watch": self.watch.to_state() if self.watch else None,
            "markers": [m.to_json() for m in self.markers],
            "recent": {name: list(values) for name, values in self.recent.items()},
            "last_drift": self.last_drift.model_dump(mode="json") if self.last_drift else None,
            "handled": list(self.handled),
            "change_wait": None
            if self.change_wait is None or self.change_wait.rows_after_change is None
            else [self.change_wait.min_rows, self.change_wait.rows_after_change],
        }


class MonitorHandlers:
    """The monitor's use-cases over every model this replica is assigned."""

    def __init__(
        self,
        registry: Registry,
        catalog: SpecCatalog,
        store: ObjectStore,
        publisher: Publisher,
        metrics: MonitorMetrics,
        join_table: MutableMapping[str, Any],
        accuracy_window: timedelta = timedelta(seconds=30),
        settled: Callable[[], bool] = lambda: True,
        join_max_rows: int = 1_000_000,
    ) -> None:
        self.registry = registry
        self.settled = settled
        """False while the join table is being recovered (a start or a rebalance): a watch loaded
        then would index a partial table, so it is served but not kept."""
        self.catalog = catalog
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.join_table = join_table
        self.accuracy_window = accuracy_window
        self.join_max_rows = join_max_rows
        self.models: dict[str, ModelWatch] = {}
        self._lock = asyncio.Lock()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the per-label path calls this several times."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # --- loading and checkpointing ---------------------------------------------------------

    async def watch_of(self, model: str) -> ModelWatch | None:
        """The model's watch, restored from its checkpoint or built fresh; None without a spec."""
        found = self.models.get(model)
        if found is not None:
            return found
        async with self._lock:
            if model in self.models:
                return self.models[model]
            built = await asyncio.to_thread(self._load, model)
            if built is None:
                return None
            # The join's entries are read here, on the loop's thread: a faust table is written by
            # the agents on this thread, and a fresh watch (no checkpoint yet) may find entries too.
            built.join.rebuild()
            built.shadow_join.rebuild()
            if self.settled():
                self.models[model] = built
            return built

    def _reference(self, model: str, version: int | None) -> Reference | None:
        if version is None:
            return None
        try:
            return self.registry.card(model, version).reference
        except KeyNotFound:
            return None

    def _load(self, model: str) -> ModelWatch | None:
        spec = self.catalog.get(model)
        if spec is None:
            return None
        retention = spec.monitoring.join_retention
        try:
            state = json.loads(self.store.get(state_key(model)))
        except KeyNotFound:
            state = None
        if state is None:
            aliases = self.registry.aliases(model)
            champion = aliases.get(PRODUCTION)
            reference = self._reference(model, champion)
            return ModelWatch(
                model=model,
                spec=spec,
                champion=champion,
                canary=aliases.get("canary"),
                drift=ModelDrift(model, champion, reference, spec.monitoring),
                join=Join(self.join_table, retention, self.join_max_rows, f"{model}/"),
                shadow_join=Join(self.join_table, retention, self.join_max_rows, f"{model}/shadow/"),
                live=LiveAccuracy(self.accuracy_window),
            )
        champion = state["champion"]
        reference = self._reference(model, champion)
        watch = ModelWatch(
            model=model,
            spec=spec,
            champion=champion,
            canary=state["canary"],
            drift=ModelDrift.from_state(state["drift"], reference, spec.monitoring),
            join=Join.from_state(
                state["join"], self.join_table, retention, self.join_max_rows, f"{model}/", rebuild=False
            ),
            shadow_join=Join.from_state(
                state["shadow_join"], self.join_table, retention, self.join_max_rows, f"{model}/shadow/", rebuild=False
            ),
            live=LiveAccuracy.from_state(state["live"]),
            trial=CanaryTrial.from_state(state["trial"]) if state["trial"] else None,
            watch=ChampionWatch.from_state(state["watch"]) if state["watch"] else None,
            markers=[Marker.from_json(m) for m in state["markers"]],
            recent={name: deque(values, maxlen=RECENT_VALUES) for name, values in state["recent"].items()},
            last_drift=DriftDetected.model_validate(state["last_drift"]) if state["last_drift"] else None,
            handled=deque(state.get("handled", []), maxlen=256),
        )
        if state.get("change_wait"):
            watch.change_wait = ChangeWait(int(state["change_wait"][0]))
            watch.change_wait.rows_after_change = int(state["change_wait"][1])
        log.info("%s: monitor state restored (champion v%s)", model, champion)
        return watch

    async def checkpoint(self, only_dirty: bool = True) -> int:
        """Write the state of every (changed) model to the object store; returns how many."""
        written = 0
        for watch in list(self.models.values()):
            if only_dirty and not watch.dirty:
                continue
            data = json.dumps(watch.to_state()).encode()
            await asyncio.to_thread(self.store.put, state_key(watch.model), data)
            watch.dirty = False
            written += 1
        return written

    async def release(self) -> None:
        """Partitions were revoked: save everything and forget it (another replica takes over)."""
        await self.checkpoint(only_dirty=False)
        self.models.clear()

    def _expire(self, watch: ModelWatch, now: datetime) -> None:
        """Drop the model's join entries past their retention, in the model's own event (a faust
        table is written from within the stream of the partition it belongs to)."""
        before = watch.join.misses
        watch.join.expire(now)
        watch.shadow_join.expire(now)
        if watch.join.misses > before:
            self.metrics.join_misses.labels(watch.model).inc(watch.join.misses - before)

    # --- events ----------------------------------------------------------------------------

    async def on_predictions(self, event: PredictionsLogged) -> None:
        """Logged predictions: drift streams, and the join's prediction side."""
        watch = await self.watch_of(event.model)
        if watch is None:
            return
        self.metrics.predictions.labels(event.model, event.variant).inc(len(event.inference_ids))
        latest = max(event.predicted_at)
        message = str(event.event_id)
        if event.variant == "shadow":  # only its accuracy is kept: same features as the champion's rows
            _, pairs = watch.shadow_join.add_predictions(
                message, event.version, "shadow", event.inference_ids, event.labels, event.predicted_at
            )
            for pair in pairs:
                self._count_outcome(watch, pair)
        else:
            fresh, pairs = watch.join.add_predictions(
                message, event.version, event.variant, event.inference_ids, event.labels, event.predicted_at
            )
            if fresh:  # rows not seen before (a redelivered message is counted once)
                self._remember_values(watch, event, fresh)
                everything = len(fresh) == len(event.inference_ids)
                features = event.features if everything else [event.features[i] for i in fresh]
                matrix = np.array(features, dtype=np.float64)  # None -> nan
                update = watch.drift.observe_predictions(
                    event.feature_names,
                    matrix,
                    event.labels if everything else [event.labels[i] for i in fresh],
                    event.probabilities if everything else [event.probabilities[i] for i in fresh],
                    event.classes,
                    event.predicted_at if everything else [event.predicted_at[i] for i in fresh],
                    version=event.version,
                )
                await self._after_drift_update(watch, update, latest)
            for pair in pairs:  # labels that had arrived before their predictions
                await self._on_outcome(watch, pair)
        self._expire(watch, latest)  # event time of the stream, not the wall clock
        watch.dirty = True

    @staticmethod
    def _remember_values(watch: ModelWatch, event: PredictionsLogged, rows: list[int]) -> None:
        """Recent values of every feature, for the report's live histograms."""
        for k, name in enumerate(event.feature_names):
            recent = watch.recent.setdefault(name, deque(maxlen=RECENT_VALUES))
            recent.extend(v for v in (event.features[i][k] for i in rows[-RECENT_VALUES:]) if v is not None)

    async def on_annotation(self, event: AnnotationSubmitted) -> None:
        """A label; when it is ground truth for an earlier prediction, the join's label side."""
        if event.inference_id is None:
            return
        watch = await self.watch_of(event.model)
        if watch is None:
            return
        pair = watch.join.add_label(event.inference_id, event.label, event.occurred_at)
        if len(watch.shadow_join):  # a shadow runs (or ran within the retention): its pair too
            shadow = watch.shadow_join.add_label(event.inference_id, event.label, event.occurred_at)
            if shadow is not None:
                self._count_outcome(watch, shadow)
        if pair is not None:
            await self._on_outcome(watch, pair)
        self._expire(watch, event.occurred_at)
        watch.dirty = True

    async def on_deployment(self, event: DeploymentChanged) -> None:
        """Promotions reset the alarms and start a watch; a canary start opens a trial."""
        watch = await self.watch_of(event.model)
        if watch is None or str(event.event_id) in watch.handled:
            return
        watch.handled.append(str(event.event_id))
        at = event.occurred_at
        watch.mark(at, event.action, f"v{event.version}: {event.reason}"[:300])
        if event.action == "canary_started":
            watch.canary = event.version
            watch.trial = CanaryTrial(watch.champion, event.version, at)
        elif event.action == "promoted":
            previous = watch.champion
            previous_error = self._recent_error(watch, previous)
            watch.champion = event.version
            if watch.canary == event.version:
                watch.canary = None
            watch.trial = None
            watch.change_wait = None
            self.metrics.waiting_rows.labels(watch.model).set(0)
            reference = await asyncio.to_thread(self._reference, watch.model, event.version)
            watch.drift.reset(event.version, reference)
            if previous is not None and previous != event.version and previous_error is not None:
                spec = watch.spec.deployment
                watch.watch = ChampionWatch(
                    event.version, previous, previous_error, spec.promote_after, spec.rollback_on
                )
            else:
                watch.watch = None
        elif event.action == "rolled_back":
            if watch.canary == event.version:  # a canary removed
                watch.canary = None
                watch.trial = None
            else:  # production went back to event.version
                watch.champion = event.version
                watch.watch = None
                reference = await asyncio.to_thread(self._reference, watch.model, event.version)
                watch.drift.reset(event.version, reference)

    async def on_training(self, event: TrainingCompleted) -> None:
        """A retrain finished: a marker on the timeline."""
        watch = await self.watch_of(event.model)
        if watch is None:
            return
        verdict = "passed" if event.gate.passed else "rejected"
        version = f"v{event.version}" if event.version is not None else "no version"
        watch.mark(event.occurred_at, "retrain", f"{version} trained ({event.trigger}), gate {verdict}")

    # --- outcomes and decisions ------------------------------------------------------------

    def _recent_error(self, watch: ModelWatch, version: int | None) -> float | None:
        """The error recorded for ``version``: its canary-trial figure, else its live total."""
        if version is None:
            return None
        trial = watch.trial
        if trial is not None and trial.champion_version == version and trial.champion.labelled:
            return trial.champion.error_rate
        totals = watch.live.totals(watch.model, version, "champion")
        return totals.error_rate if totals.labelled else None

    def _count_outcome(self, watch: ModelWatch, pair: JoinedPair) -> None:
        model = watch.model
        labels = (model, str(pair.version), pair.variant)
        self._child(self.metrics.labelled, *labels).inc()
        self._child(self.metrics.join_hits, model).inc()
        self._child(self.metrics.label_lag, model).observe(max(0.0, pair.lag_seconds))
        point = watch.live.record(model, pair.version, pair.variant, pair.correct, pair.predicted_at)
        if point is not None:
            self._child(self.metrics.live_accuracy, *labels).set(point.accuracy)
            self._child(self.metrics.error_rate, *labels).set(point.error_rate)

    async def _on_outcome(self, watch: ModelWatch, pair: JoinedPair) -> None:
        self._count_outcome(watch, pair)
        if watch.change_wait is not None:
            watch.change_wait.record_labelled()
            self._child(self.metrics.waiting_rows, watch.model).set(watch.change_wait.waiting_rows)
        if pair.variant == "champion" and pair.version == watch.champion:
            update = watch.drift.observe_outcome(not pair.correct, pair.labelled_at)
            await self._after_drift_update(watch, update, pair.labelled_at)
        if watch.trial is not None:
            watch.trial.record(pair.version, pair.correct, pair.predicted_at)
            spec = watch.spec.deployment
            verdict = watch.trial.decide(CanaryJudge(spec.promote_after, spec.rollback_on))
            if verdict is not None:
                await self._canary_verdict(watch, verdict)
        if watch.watch is not None and pair.variant == "champion":
            verdict = watch.watch.record(pair.version, pair.correct)
            if verdict is not None:
                await self._champion_rollback(watch, verdict)

    async def _after_drift_update(self, watch: ModelWatch, update: DriftUpdate, at: datetime) -> None:
        model = watch.model
        for (kind, feature), value in update.statistics.items():
            self._child(self.metrics.drift_statistic, model, kind, feature or "").set(value)
        for stream, value in update.psi.items():
            self._child(self.metrics.psi, model, stream).set(value)
        for suppressed in update.suppressed:
            self.metrics.suppressed_alarms.labels(model, suppressed.kind, suppressed.reason).inc()
        for alarm in update.alarms:
            event = alarm.to_event()
            await self.publisher.publish(event)
            self.metrics.drift_detections.labels(model, event.kind, event.severity).inc()
            watch.last_drift = event
            window = watch.spec.training.window
            if event.kind == "concept" and window.since_change:
                watch.change_wait = ChangeWait(window.min_rows_after_change)
                watch.change_wait.start(event.change_samples)
                self.metrics.waiting_rows.labels(model).set(watch.change_wait.waiting_rows)
            where = f" on {event.feature}" if event.feature else ""
            watch.mark(at, "drift", f"{event.kind} drift{where} ({event.detector}, {event.severity})")
            log.warning(
                "%s: %s drift%s confirmed by %s: statistic %.4g vs threshold %.4g over %d samples (%s); "
                "change began ~%s samples ago",
                model,
                event.kind,
                where,
                event.detector,
                event.statistic,
                event.threshold,
                event.samples,
                event.severity,
                event.change_samples,
            )

    async def _canary_verdict(self, watch: ModelWatch, verdict: Verdict) -> None:
        model = watch.model
        if verdict.action == "promoted":
            await asyncio.to_thread(self.registry.set_alias, model, PRODUCTION, verdict.version, ACTOR, verdict.reason)
            await asyncio.to_thread(self.registry.set_alias, model, "canary", None, ACTOR, "promoted to production")
            traffic = 1.0
        else:
            await asyncio.to_thread(self.registry.set_alias, model, "canary", None, ACTOR, verdict.reason)
            traffic = 0.0
        self.metrics.canary_verdicts.labels(model, verdict.action).inc()
        log.info("%s: canary v%d %s: %s", model, verdict.version, verdict.action, verdict.reason)
        event = DeploymentChanged(
            model=model,
            action=verdict.action,
            version=verdict.version,
            previous_version=verdict.previous_version,
            traffic=traffic,
            reason=verdict.reason,
            actor=ACTOR,
        )
        await self.publisher.publish(event)
        await self.on_deployment(event)  # our own consumer will see it again: handled idempotently

    async def _champion_rollback(self, watch: ModelWatch, verdict: Verdict) -> None:
        model = watch.model
        target = verdict.previous_version
        if target is None:
            return
        await asyncio.to_thread(self.registry.set_alias, model, PRODUCTION, target, ACTOR, verdict.reason)
        self.metrics.canary_verdicts.labels(model, "rolled_back").inc()
        log.warning("%s: champion v%d rolled back to v%d: %s", model, verdict.version, target, verdict.reason)
        event = DeploymentChanged(
            model=model,
            action="rolled_back",
            version=target,
            previous_version=verdict.version,
            traffic=1.0,
            reason=verdict.reason,
            actor=ACTOR,
        )
        await self.publisher.publish(event)
        await self.on_deployment(event)

    # --- reading ---------------------------------------------------------------------------

    async def status(self, model: str) -> dict[str, Any] | None:
        """``GET /v1/models/{m}/status``: versions, live metrics, drift state."""
        watch = await self.watch_of(model)
        if watch is None:
            return None
        live = []
        for key in watch.live.keys(model):
            _, version, variant = key
            totals = watch.live.totals(*key)
            latest = watch.live.latest(*key)
            live.append(
                {
                    "version": version,
                    "variant": variant,
                    "labelled": totals.labelled,
                    "accuracy": totals.accuracy,
                    "window_accuracy": latest.accuracy if latest else None,
                }
            )
        trial = watch.trial
        return {
            "model": model,
            "champion": watch.champion,
            "canary": watch.canary,
            "live": live,
            "join": {
                "hits": watch.join.hits,
                "misses": watch.join.misses,
                "hit_rate": watch.join.hit_rate,
                "held": len(watch.join),  # predictions awaiting labels, labels awaiting predictions, recent joins
            },
            "canary_trial": None
            if trial is None
            else {
                "champion": trial.champion_version,
                "canary": trial.canary_version,
                "champion_labelled": trial.champion.labelled,
                "champion_error": trial.champion.error_rate,
                "canary_labelled": trial.canary.labelled,
                "canary_error": trial.canary.error_rate,
                "needed": watch.spec.deployment.promote_after.labelled_samples,
            },
            "drift": {
                **watch.drift.status(),
                "last": watch.last_drift.model_dump(mode="json") if watch.last_drift else None,
                "retrain_waiting_rows": watch.change_wait.waiting_rows if watch.change_wait else 0,
                "rows_after_change": watch.change_wait.rows_after_change if watch.change_wait else None,
            },
            "events": [m.to_json() for m in watch.markers[-50:]],
        }
