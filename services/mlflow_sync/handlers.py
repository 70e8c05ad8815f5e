"""The mirror's use-cases: a training run completed, a deployment changed.

Why it is a consumer of its own, beside the loop rather than inside the trainer: the loop never
waits on MLflow. The mirror reads ``training.completed`` and ``deployments`` as consumer group
``driftloop-mlflow-sync`` and commits an event's offset only once MLflow has taken everything
it implies. While MLflow is down, the handler raises :class:`MlflowUnavailable` (a transient
error to the bus), the offset stays where it is and the bus retries with capped backoff; when
MLflow returns, the backlog is logged in order. The group's offset is the durable cursor: a
restart, a crash or a rebalance resumes from it.

Idempotence (an event is delivered at least once, and a crash may stop a mirror halfway):
every write is keyed (:mod:`services.mlflow_sync.core`) and looked up before it is made -- a
run by its ``driftloop.run_key`` tag, a model version by its ``driftloop.version`` tag -- and
what is written again is written identically. A run is created RUNNING and marked FINISHED
(or FAILED) last, so a run left RUNNING is one whose mirror was interrupted, and the next
delivery completes it.

Order: model versions are created in driftloop's order. Mirroring version ``n`` first mirrors
any registered version below ``n`` that MLflow lacks (their cards are in the registry), so a
mirror started late -- after the events of old versions left Kafka's retention -- still
backfills them, and MLflow's version numbers follow driftloop's. A deployment event makes
MLflow's ``production`` / ``canary`` / ``shadow`` aliases what the registry says *now*, so an
out-of-order or redelivered event converges to the same state.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from services.mlflow_sync import core
from services.mlflow_sync.metrics import MlflowSyncMetrics
from services.mlflow_sync.rest import MlflowUnavailable, RunInfo
from shared.bus import Delivery
from shared.events import DeploymentChanged, TrainingCompleted
from shared.registry import ModelCard, Registry, card_key
from shared.store import ObjectStore

if TYPE_CHECKING:
    from services.mlflow_sync.rest import MlflowRest

log = logging.getLogger(__name__)

TERMINAL = ("FINISHED", "FAILED", "KILLED")


class MlflowSyncHandlers:
    """Mirrors training runs, registered versions and aliases into one MLflow server.

    Parameters
    ----------
    store
        The object store holding the registry (cards, ONNX graphs, aliases).
    mlflow
        The MLflow server (:class:`services.mlflow_sync.rest.MlflowRest`).
    metrics
        The mirror's metrics.
    experiment_prefix
        Each model's runs go to experiment ``<prefix><model>``.
    model_prefix
        Each model's versions go to registered model ``<prefix><model>`` (a prefix keeps them
        apart from a team's own registered models of the same name).
    """

    def __init__(
        self,
        store: ObjectStore,
        mlflow: MlflowRest,
        metrics: MlflowSyncMetrics,
        experiment_prefix: str = "driftloop/",
        model_prefix: str = "",
    ) -> None:
        self.store = store
        self.registry = Registry(store)
        self.mlflow = mlflow
        self.metrics = metrics
        self.experiment_prefix = experiment_prefix
        self.model_prefix = model_prefix
        self._experiments: dict[str, str] = {}
        self._mirrored: dict[str, dict[int, str]] = {}
        self._runs: dict[tuple[str, int], str] = {}
        self.unavailable_since: float | None = None
        """Monotonic time of the first failed call of the current MLflow outage (None: reachable)."""

    def registered_name(self, model: str) -> str:
        """The registered model in MLflow that mirrors ``model``."""
        return f"{self.model_prefix}{model}"

    async def on_event(self, event: TrainingCompleted | DeploymentChanged, delivery: Delivery) -> None:
        """Mirror one event; returning means MLflow has it (the bus then commits the offset)."""
        try:
            if isinstance(event, TrainingCompleted):
                await self.log_training(event)
            else:
                await self.mirror_aliases(event.model, event)
        except MlflowUnavailable as err:
            self.metrics.unavailable.inc()
            self.metrics.reachable.set(0)
            if self.unavailable_since is None:
                self.unavailable_since = asyncio.get_running_loop().time()
                log.warning("%s; %s waits on Kafka and is mirrored when MLflow is back", err, delivery.topic)
            raise
        self.metrics.reachable.set(1)
        if self.unavailable_since is not None:
            waited = asyncio.get_running_loop().time() - self.unavailable_since
            self.unavailable_since = None
            log.info("MLflow at %s reachable again after %.0fs; catching up", self.mlflow.base_url, waited)

    # --- runs -------------------------------------------------------------------------------

    async def log_training(self, event: TrainingCompleted) -> None:
        """A training run completed: its MLflow run, and for a registered version, its model version."""
        if event.version is None:
            await self._ensure_run(event.model, core.run_of_failure(event), {})
            return
        mirrored = await self.mirror_version(event.model, event.version)
        run_id = self._runs.get((event.model, event.version))
        if run_id is None:  # the version was mirrored by an earlier process: find its run
            experiment = await self._experiment(event.model)
            found = await self.mlflow.find_run(experiment, core.RUN_KEY_TAG, core.run_key(event.version, None))
            run_id = found.run_id if found is not None else None
        if run_id is not None:
            await self.mlflow.log_batch(run_id, tags=core.event_tags(event))
        log.info("%s v%d: run and MLflow version %s mirrored", event.model, event.version, mirrored)
        await self.mirror_aliases(event.model)

    async def _experiment(self, model: str) -> str:
        experiment = self._experiments.get(model)
        if experiment is None:
            experiment = await self.mlflow.experiment_id(core.experiment_name(self.experiment_prefix, model))
            self._experiments[model] = experiment
        return experiment

    async def _ensure_run(self, model: str, run: core.MlflowRun, artifacts: dict[str, bytes]) -> RunInfo:
        """The MLflow run ``run`` describes, created or completed; untouched if already complete."""
        experiment = await self._experiment(model)
        found = await self.mlflow.find_run(experiment, core.RUN_KEY_TAG, run.key)
        if found is not None and found.status in TERMINAL:
            return found
        info = found or await self.mlflow.create_run(experiment, run.name, run.started_ms, {core.RUN_KEY_TAG: run.key})
        params, tags = core.batches(run.params), core.batches(run.tags)
        for i in range(max(len(params), len(tags))):
            await self.mlflow.log_batch(
                info.run_id,
                params=params[i] if i < len(params) else None,
                metrics=run.metrics if i == 0 else None,
                tags=tags[i] if i < len(tags) else None,
                timestamp_ms=run.ended_ms,
            )
        if artifacts:
            await self._upload(model, info, artifacts)
        await self.mlflow.finish_run(info.run_id, run.status, run.ended_ms)
        self.metrics.runs.labels(model, run.status).inc()
        log.info("%s: MLflow run %s logged (%s, %s)", model, info.run_id, run.name, run.status)
        return info

    async def _upload(self, model: str, info: RunInfo, artifacts: dict[str, bytes]) -> None:
        path = core.artifact_path(info.artifact_uri)
        if path is None:
            why = (
                f"artifacts not uploaded: the run's artifact store {info.artifact_uri} is not served by the tracking "
                "server; run `mlflow server` with --serve-artifacts (its default) and an --artifacts-destination"
            )
            log.warning("%s: %s", model, why)
            await self.mlflow.log_batch(info.run_id, tags={core.ARTIFACTS_TAG: why})
            return
        for name, data in artifacts.items():
            await self.mlflow.upload_artifact(path, name, data)

    # --- versions ---------------------------------------------------------------------------

    async def _mirrored_versions(self, model: str) -> dict[int, str]:
        """driftloop version -> MLflow version, for what MLflow has (read once, then kept up to date)."""
        mirrored = self._mirrored.get(model)
        if mirrored is None:
            found = await self.mlflow.versions_by_tag(self.registered_name(model), core.VERSION_TAG)
            mirrored = {int(v): mv for v, mv in found.items() if v.isdigit()}
            self._mirrored[model] = mirrored
        return mirrored

    async def mirror_version(self, model: str, version: int) -> str:
        """Mirror registered version ``version`` (and any older one MLflow lacks, first); its MLflow version."""
        mirrored = await self._mirrored_versions(model)
        if version in mirrored:
            return mirrored[version]
        registered = await asyncio.to_thread(self.registry.versions, model)
        for older in [v for v in registered if v < version and v not in mirrored]:
            log.info("%s: v%d is not in MLflow yet; mirroring it before v%d", model, older, version)
            await self._mirror_one(model, older, mirrored)
        return await self._mirror_one(model, version, mirrored)

    async def _mirror_one(self, model: str, version: int, mirrored: dict[int, str]) -> str:
        card, card_bytes, onnx = await asyncio.to_thread(self._read_version, model, version)
        run = await self._ensure_run(
            model, core.run_of_card(card), {core.CARD_ARTIFACT: card_bytes, core.ONNX_ARTIFACT: onnx}
        )
        self._runs[(model, version)] = run.run_id
        name = self.registered_name(model)
        await self.mlflow.ensure_registered_model(name, f"driftloop model {model!r}, mirrored from its registry.")
        existing = await self.mlflow.find_version(name, core.VERSION_TAG, str(version))
        if existing is None:
            existing = await self.mlflow.create_version(
                name,
                f"{run.artifact_uri}/{core.ONNX_ARTIFACT}",
                run.run_id,
                core.version_tags(card),
                core.card_note(card),
            )
            self.metrics.versions.labels(model).inc()
            log.info("%s: v%d registered in MLflow as %s version %s", model, version, name, existing)
        mirrored[version] = existing
        return existing

    def _read_version(self, model: str, version: int) -> tuple[ModelCard, bytes, bytes]:
        """A version's card, the card's bytes as stored, and its ONNX graph (sha256-checked)."""
        card = self.registry.card(model, version)
        return card, self.store.get(card_key(model, version)), self.registry.load_onnx(model, version)

    # --- aliases ----------------------------------------------------------------------------

    async def mirror_aliases(self, model: str, change: DeploymentChanged | None = None) -> None:
        """Make MLflow's driftloop aliases of ``model`` what the registry says now."""
        wanted = await asyncio.to_thread(self.registry.aliases, model)
        mirrored = await self._mirrored_versions(model)
        moved = {change.version} if change is not None else set()
        for version in sorted(set(wanted.values()) | moved):  # the moved version too: it gets the note
            if version not in mirrored:
                await self.mirror_version(model, version)
        name = self.registered_name(model)
        plan = core.plan_aliases(wanted, mirrored, await self.mlflow.aliases(name))
        for alias, target in plan.set.items():
            await self.mlflow.set_alias(name, alias, target)
            self.metrics.alias_moves.labels(model, alias).inc()
            log.info("%s: MLflow alias %s -> version %s (driftloop v%d)", model, alias, target, wanted[alias])
        for alias in plan.delete:
            await self.mlflow.delete_alias(name, alias)
            self.metrics.alias_moves.labels(model, alias).inc()
            log.info("%s: MLflow alias %s removed (cleared in driftloop)", model, alias)
        if change is not None and change.version in mirrored:
            await self.mlflow.set_version_tag(
                name, mirrored[change.version], core.DEPLOYMENT_TAG, core.deployment_note(change)
            )
