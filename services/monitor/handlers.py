"""Monitor use-cases: a prediction was logged, a label arrived, a deployment changed.

One :class:`~services.monitor.watch.ModelWatch` per model holds everything the monitor knows
about it — the drift streams, the prediction/label join, live accuracy, the running canary
trial and the post-promotion watch — and is checkpointed to the object store
(``monitor/<model>/state.json``) so a restarted or rebalanced monitor carries on where it
stopped. The join's entries live in the mapping passed in (a faust Table in the service, whose
changelog follows the partition). Decisions leave as events: ``DriftDetected`` on ``drift``,
``DeploymentChanged`` on ``deployments`` (with the registry's aliases moved first).

Each joined pair is scored by the model's task (:func:`~services.monitor.outcome.score`): a
classifier's right or wrong, a regressor's absolute error (live MAE / RMSE, the canary judge and
the champion watch) and whether it is a miss against the champion's threshold (the concept stream).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, MutableMapping
from datetime import datetime, timedelta
from typing import Any

from services.monitor.canary import CanaryJudge, CanaryTrial, ChampionWatch, ChangeWait, Verdict
from services.monitor.categorical import category_of
from services.monitor.drift import DriftUpdate
from services.monitor.join import JoinedPair
from services.monitor.metrics import MonitorMetrics
from services.monitor.outcome import Outcome, score
from services.monitor.watch import RECENT_VALUES, Decision, ModelWatch, load_checkpoint, state_key
from shared.bus import Publisher
from shared.errors import KeyNotFound
from shared.events import (
    AnnotationSubmitted,
    DeploymentChanged,
    DriftDetected,
    PredictionsLogged,
    TrainingCompleted,
)
from shared.reference import ExpectedError, Reference
from shared.registry import CANARY, PRODUCTION, SHADOW, Alias, Registry
from shared.spec import SpecCatalog
from shared.store import ObjectStore

log = logging.getLogger("driftloop.monitor")

_NUMBER_TYPES = frozenset({float, int, type(None)})  # a column whose numbers are kept as recent values

ACTOR = "monitor"


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
        self._settling: dict[str, asyncio.Lock] = {}
        """Per model: one ``_settle`` at a time. The agents of different topics run concurrently,
        and two settling the same queue would both carry out its first decision."""
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
        """The version's reference statistics, with its expected error (taken from the card's
        holdout accuracy for cards written before the reference carried it)."""
        if version is None:
            return None
        try:
            card = self.registry.card(model, version)
        except KeyNotFound:
            return None
        reference = card.reference
        if reference.expected_error is None and "accuracy" in card.metrics:
            expected = ExpectedError.of(card.metrics["accuracy"], card.holdout_rows)
            reference = reference.model_copy(update={"expected_error": expected})
        return reference

    def _load(self, model: str) -> ModelWatch | None:
        spec = self.catalog.get(model)
        if spec is None:
            return None
        try:
            data = self.store.get(state_key(model))
        except KeyNotFound:
            aliases = self.registry.aliases(model)
            champion = aliases.get(PRODUCTION)
            return ModelWatch.fresh(
                spec,
                champion,
                aliases.get(CANARY),
                self._reference(model, champion),
                self.join_table,
                self.join_max_rows,
                self.accuracy_window,
            )
        state = load_checkpoint(data)
        reference = self._reference(model, state.champion)
        watch = ModelWatch.restore(state, spec, reference, self.join_table, self.join_max_rows)
        log.info("%s: monitor state restored (champion v%s)", model, state.champion)
        return watch

    async def checkpoint(self, only_dirty: bool = True) -> int:
        """Write the state of every (changed) model to the object store; returns how many."""
        written = 0
        for watch in list(self.models.values()):
            if only_dirty and not watch.dirty:
                continue
            data = watch.state().model_dump_json().encode()
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
        await self._settle(watch)
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
                if watch.spec.regression and event.variant == "champion" and event.version == watch.champion:
                    _remember_predictions(watch, [event.labels[i] for i in fresh[-RECENT_VALUES:]])
                everything = len(fresh) == len(event.inference_ids)
                features = event.features if everything else [event.features[i] for i in fresh]
                update = watch.drift.observe_predictions(  # typed rows: numbers, categories, flags, null
                    event.feature_names,
                    features,
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
        """Recent values of every feature, for the report's live histograms and category bars:
        numbers of the numeric features, categories of the others (a feature without a categorical
        reference is numeric unless its values are text or flags). One transposition (in C) and a
        set of types per column: a test per cell was a third of the time at 300 features."""
        categorical, kept, features = watch.drift.categorical, rows[-RECENT_VALUES:], event.features
        columns = zip(*(features if len(kept) == len(features) else [features[i] for i in kept]), strict=True)
        for name, values in zip(event.feature_names, columns, strict=False):
            buckets = categorical.get(name)
            kinds = set(map(type, values))
            if buckets is None and kinds <= _NUMBER_TYPES:
                recent = watch.recent.setdefault(name, deque(maxlen=RECENT_VALUES))
                recent.extend(values if type(None) not in kinds else [v for v in values if v is not None])
                continue
            boolean = buckets is not None and buckets.boolean
            keys = (category_of(v, boolean) for v in values)
            categories = watch.recent_categories.setdefault(name, deque(maxlen=RECENT_VALUES))
            categories.extend(key for key in keys if key is not None)

    async def on_annotation(self, event: AnnotationSubmitted) -> None:
        """A label; when it is ground truth for an earlier prediction, the join's label side."""
        if event.inference_id is None:
            return
        watch = await self.watch_of(event.model)
        if watch is None:
            return
        await self._settle(watch)
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
        if watch is None:
            return
        await self._settle(watch)
        await self._apply_deployment(watch, event)
        await self._settle(watch)  # what the change itself decided (the previous champion as a shadow)

    async def _apply_deployment(self, watch: ModelWatch, event: DeploymentChanged) -> None:
        """Bring the watch in line with a deployment change, once per event. What may fail (reading
        the new champion's reference) happens before anything changes, so a retry starts clean."""
        if str(event.event_id) in watch.handled:
            return
        at = event.occurred_at
        changes_champion = event.action == "promoted" or (
            event.action == "rolled_back" and watch.canary != event.version
        )
        reference = await asyncio.to_thread(self._reference, watch.model, event.version) if changes_champion else None
        shadow = (await asyncio.to_thread(self.registry.aliases, watch.model)).get(SHADOW) if changes_champion else None
        if event.action == "canary_started":
            watch.canary = event.version
            watch.trial = CanaryTrial(champion_version=watch.champion, canary_version=event.version, started_at=at)
        elif event.action == "promoted":
            previous = watch.champion
            watch.champion = event.version
            if watch.canary == event.version:
                watch.canary = None
            watch.trial = _trial_against(watch, at)
            watch.change_wait = None
            self.metrics.waiting_rows.labels(watch.model).set(0)
            watch.drift.reset(event.version, reference)
            ended, watch.watch = watch.watch, None
            if previous is not None and previous != event.version:
                spec = watch.spec.deployment
                watch.watch = ChampionWatch.start(
                    event.version, previous, spec.promote_after, spec.rollback_on, regression=watch.spec.regression
                )
                ours = ended is not None and ended.shadowed and shadow == ended.previous_version
                if shadow is None or ours:  # an operator's or the trainer's shadow is left alone
                    watch.watch.shadowed = True
                    watch.decisions.append(self._shadow_decision(watch, previous, event.version, shadow))
            elif ended is not None and ended.shadowed and shadow == ended.previous_version:
                watch.decisions.append(_clear_shadow(f"v{event.version} promoted; the champion watch is over"))
        elif event.action == "rolled_back":
            if not changes_champion:  # a canary removed
                watch.canary = None
                watch.trial = None
            else:  # production went back to event.version
                ended, watch.watch = watch.watch, None
                watch.champion = event.version
                watch.trial = _trial_against(watch, at)
                watch.drift.reset(event.version, reference)
                if ended is not None and ended.shadowed and shadow == ended.previous_version:
                    watch.decisions.append(_clear_shadow(f"production back on v{event.version}"))
        watch.mark(at, event.action, f"v{event.version}: {event.reason}"[:300])
        watch.handled.append(str(event.event_id))

    async def on_training(self, event: TrainingCompleted) -> None:
        """A retrain finished: a marker on the timeline."""
        watch = await self.watch_of(event.model)
        if watch is None:
            return
        verdict = "passed" if event.gate.passed else "rejected"
        version = f"v{event.version}" if event.version is not None else "no version"
        watch.mark(event.occurred_at, "retrain", f"{version} trained ({event.trigger}), gate {verdict}")

    # --- outcomes and decisions ------------------------------------------------------------

    def _score(self, watch: ModelWatch, pair: JoinedPair) -> Outcome | None:
        """The pair's outcome by the model's task; a pair that cannot be scored is counted."""
        reference = watch.drift.reference  # the champion's: its threshold makes an error a miss
        label = watch.spec.label
        outcome = score(
            pair, watch.spec.regression, reference.expected_error if reference else None, label.min, label.max
        )
        if outcome is None:
            watch.unscored += 1
            self._child(self.metrics.unscored, watch.model).inc()
        return outcome

    def _count_outcome(self, watch: ModelWatch, pair: JoinedPair) -> Outcome | None:
        model = watch.model
        self._child(self.metrics.join_hits, model).inc()
        self._child(self.metrics.label_lag, model).observe(max(0.0, pair.lag_seconds))
        outcome = self._score(watch, pair)
        if outcome is None:
            return None
        if pair.variant == "shadow" and watch.watch is not None:  # the previous champion, on the same traffic
            watch.watch.record_previous(pair.version, outcome)
        labels = (model, str(pair.version), pair.variant)
        self._child(self.metrics.labelled, *labels).inc()
        point = watch.live.record(model, pair.version, pair.variant, outcome, pair.predicted_at)
        if point is not None and watch.spec.regression:
            self._child(self.metrics.live_mae, *labels).set(point.mae)
            self._child(self.metrics.live_rmse, *labels).set(point.rmse)
        elif point is not None:
            self._child(self.metrics.live_accuracy, *labels).set(point.accuracy)
            self._child(self.metrics.error_rate, *labels).set(point.error_rate)
        return outcome

    async def _on_outcome(self, watch: ModelWatch, pair: JoinedPair) -> None:
        outcome = self._count_outcome(watch, pair)
        if outcome is None:  # no ground truth the trainer will see either: not a labelled row
            return
        if watch.change_wait is not None:
            watch.change_wait.record_labelled()
            self._child(self.metrics.waiting_rows, watch.model).set(watch.change_wait.waiting_rows)
        if pair.variant == "champion" and pair.version == watch.champion and outcome.miss is not None:
            update = watch.drift.observe_outcome(outcome.miss, pair.labelled_at)
            await self._after_drift_update(watch, update, pair.labelled_at)
        if watch.trial is not None:
            watch.trial.record(pair.version, outcome, pair.predicted_at)
            spec = watch.spec.deployment
            verdict = watch.trial.decide(CanaryJudge(spec.promote_after, spec.rollback_on, watch.spec.regression))
            if verdict is not None:
                await self._decide(watch, self._canary_decision(watch, verdict))
        champion_watch = watch.watch
        if champion_watch is not None and pair.variant == "champion":
            verdict = champion_watch.record(pair.version, outcome)
            if verdict is not None and verdict.previous_version is not None:
                await self._decide(watch, self._rollback_decision(watch, verdict, verdict.previous_version))
            elif champion_watch.done and champion_watch.shadowed:
                champion_watch.shadowed = False
                reason = f"the watch of v{champion_watch.version} ended without a rollback"
                await self._decide(watch, _clear_shadow(reason))

    async def _after_drift_update(self, watch: ModelWatch, update: DriftUpdate, at: datetime) -> None:
        model = watch.model
        for (kind, feature), value in update.statistics.items():
            self._child(self.metrics.drift_statistic, model, kind, feature or "").set(value)
        for stream, value in update.psi.items():
            self._child(self.metrics.psi, model, stream).set(value)
        for feature, count in update.unseen_values.items():
            if count:
                self._child(self.metrics.unseen_categories, model, feature).inc(count)
        for feature, rate in update.unseen.items():
            self._child(self.metrics.unseen_rate, model, feature).set(rate)
        for suppressed in update.suppressed:
            self.metrics.suppressed_alarms.labels(model, suppressed.kind, suppressed.reason).inc()
        for alarm in update.alarms:
            event = alarm.to_event()
            watch.decisions.append(Decision(event=event))  # published by _settle, below
            self.metrics.drift_detections.labels(model, event.kind, event.severity).inc()
            watch.last_drift = event
            window = watch.spec.training.window
            if event.kind == "concept" and window.since_change:
                watch.change_wait = ChangeWait(min_rows=window.min_rows_after_change)
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
        if update.alarms:
            await self._settle(watch)

    async def _decide(self, watch: ModelWatch, decision: Decision) -> None:
        """Queue a verdict on the watch, then carry it out (see :meth:`_settle`)."""
        watch.decisions.append(decision)
        watch.dirty = True
        await self._settle(watch)

    async def _settle(self, watch: ModelWatch) -> None:
        """Carry out the watch's queued decisions: move the registry's aliases, publish the event
        (``DeploymentChanged``, applied here too, or ``DriftDetected``). A decision leaves the
        queue only once moved and published, so a store or broker outage on the way (retried by
        the consumer, whose redelivered message is a duplicate by then) delays it, never loses it."""
        async with self._settling.setdefault(watch.model, asyncio.Lock()):
            await self._settle_queue(watch)

    async def _settle_queue(self, watch: ModelWatch) -> None:
        model = watch.model
        while watch.decisions:
            decision = watch.decisions[0]
            for alias, version, reason in decision.moves:
                await asyncio.to_thread(self.registry.set_alias, model, alias, version, ACTOR, reason)
            event = decision.event
            if event is not None:
                await self.publisher.publish(event)
            watch.decisions.pop(0)
            watch.dirty = True
            if event is None or isinstance(event, DriftDetected) or event.action == "shadow_started":
                continue
            self.metrics.canary_verdicts.labels(model, event.action).inc()
            log.info("%s: v%d %s: %s", model, event.previous_version or 0, event.action, event.reason)
            await self._apply_deployment(watch, event)  # our own consumer will see it again: once

    @staticmethod
    def _canary_decision(watch: ModelWatch, verdict: Verdict) -> Decision:
        promoted = verdict.action == "promoted"
        moves: list[tuple[Alias, int | None, str]] = (
            [(PRODUCTION, verdict.version, verdict.reason), (CANARY, None, "promoted to production")]
            if promoted
            else [(CANARY, None, verdict.reason)]
        )
        event = DeploymentChanged(
            model=watch.model,
            action=verdict.action,
            version=verdict.version,
            previous_version=verdict.previous_version,
            traffic=1.0 if promoted else 0.0,
            reason=verdict.reason,
            actor=ACTOR,
        )
        return Decision(moves=moves, event=event)

    @staticmethod
    def _rollback_decision(watch: ModelWatch, verdict: Verdict, target: int) -> Decision:
        log.warning("%s: champion v%d rolled back to v%d: %s", watch.model, verdict.version, target, verdict.reason)
        event = DeploymentChanged(
            model=watch.model,
            action="rolled_back",
            version=target,
            previous_version=verdict.version,
            traffic=1.0,
            reason=verdict.reason,
            actor=ACTOR,
        )
        moves: list[tuple[Alias, int | None, str]] = [(PRODUCTION, target, verdict.reason)]
        if watch.watch is not None and watch.watch.shadowed:
            watch.watch.shadowed = False
            moves.append((SHADOW, None, f"v{target} is production again"))
        return Decision(moves=moves, event=event)

    @staticmethod
    def _shadow_decision(watch: ModelWatch, previous: int, champion: int, current: int | None) -> Decision:
        """Score the previous champion beside the new one while the champion watch runs."""
        reason = f"v{previous} scores the same traffic as the new champion v{champion} while the watch runs"
        event = DeploymentChanged(
            model=watch.model,
            action="shadow_started",
            version=previous,
            previous_version=current,
            traffic=0.0,
            reason=reason,
            actor=ACTOR,
        )
        return Decision(moves=[(SHADOW, previous, reason)], event=event)

    # --- reading ---------------------------------------------------------------------------

    async def status(self, model: str) -> dict[str, Any] | None:
        """``GET /v1/models/{m}/status``: versions, live metrics, drift state."""
        watch = await self.watch_of(model)
        return None if watch is None else self._status_of(watch)

    async def overview(self) -> list[dict[str, Any]]:
        """The status of every model with a spec, by name (the landing page). A model this replica
        does not watch is read from its checkpoint and not kept: its partition is another
        replica's, and a watch kept here would be checkpointed over that replica's state."""
        statuses = []
        for model in sorted(await asyncio.to_thread(self.catalog.all)):
            watch = self.models.get(model) or await asyncio.to_thread(self._load, model)
            if watch is not None:
                statuses.append(self._status_of(watch))
        return statuses

    def _status_of(self, watch: ModelWatch) -> dict[str, Any]:
        model = watch.model
        regression = watch.spec.regression
        reference = watch.drift.reference
        expected = reference.expected_error if reference else None
        live = []
        for key in watch.live.keys(model):
            _, version, variant = key
            totals = watch.live.totals(*key)
            latest = watch.live.latest(*key)
            row: dict[str, Any] = {"version": version, "variant": variant, "labelled": totals.labelled}
            if regression:
                row |= {
                    "mae": totals.error_rate,
                    "rmse": totals.rmse,
                    "window_mae": latest.mae if latest else None,
                    "window_rmse": latest.rmse if latest else None,
                }
                if version == watch.champion and expected is not None and expected.mae is not None:
                    row["expected_mae"] = expected.mae  # the holdout's, from the card
            else:
                row |= {"accuracy": totals.accuracy, "window_accuracy": latest.accuracy if latest else None}
            live.append(row)
        trial = watch.trial
        trial_status: dict[str, Any] | None = None
        if trial is not None:
            trial_status = {
                "champion": trial.champion_version,
                "canary": trial.canary_version,
                "champion_labelled": trial.champion.labelled,
                "champion_error": trial.champion.error_rate,
                "canary_labelled": trial.canary.labelled,
                "canary_error": trial.canary.error_rate,
                "needed": watch.spec.deployment.promote_after.labelled_samples,
            }
            if regression:  # the errors above are the MAEs; the RMSEs beside them
                trial_status |= {
                    "champion_mae": trial.champion.error_rate,
                    "champion_rmse": trial.champion.rmse,
                    "canary_mae": trial.canary.error_rate,
                    "canary_rmse": trial.canary.rmse,
                }
        return {
            "model": model,
            "task": "regression" if regression else "classification",
            "champion": watch.champion,
            "canary": watch.canary,
            "live": live,
            "join": {
                "hits": watch.join.hits,
                "misses": watch.join.misses,
                "hit_rate": watch.join.hit_rate,
                "held": len(watch.join),  # predictions awaiting labels, labels awaiting predictions, recent joins
                "unscored": watch.unscored,
            },
            "expected_error": None if expected is None else expected.model_dump(mode="json"),
            "canary_trial": trial_status,
            "drift": {
                **watch.drift.status(),
                "last": watch.last_drift.model_dump(mode="json") if watch.last_drift else None,
                "retrain_waiting_rows": watch.change_wait.waiting_rows if watch.change_wait else 0,
                "rows_after_change": watch.change_wait.rows_after_change if watch.change_wait else None,
            },
            "events": [m.model_dump(mode="json") for m in watch.markers[-50:]],
        }


def _trial_against(watch: ModelWatch, at: datetime) -> CanaryTrial | None:
    """A running canary's trial against the champion that has just changed, counted from ``at``.

    The trial compares canary and champion over the same period; once production moves (a
    rollback, a promotion by hand) its champion no longer answers, and a trial kept against it
    would wait for ever while the canary keeps its share of traffic.
    """
    if watch.canary is None or watch.canary == watch.champion:
        return None
    return CanaryTrial(champion_version=watch.champion, canary_version=watch.canary, started_at=at)


def _remember_predictions(watch: ModelWatch, values: list[Any]) -> None:
    """A regressor's recent predicted values (finite numbers), for the report's histogram."""
    watch.recent_predictions.extend(
        float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    )


def _clear_shadow(reason: str) -> Decision:
    """Take the previous champion out of the shadow slot the champion watch put it in (replicas
    see the alias move on their next sweep of the registry)."""
    return Decision(moves=[(SHADOW, None, reason)])
