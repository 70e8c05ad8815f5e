"""Composition root of the MLflow mirror: settings, store, bus, MLflow client, metrics, HTTP. No logic here.

``driftloop serve mlflow-sync`` runs it beside the four services, when a team wants driftloop's
runs and versions in the MLflow server it already browses. It is optional in every sense: the
loop neither knows nor waits for it, and the core package needs nothing for it but httpx
(``pip install 'driftloop[mlflow]'``).
"""

from __future__ import annotations

import importlib.util
import logging

from pydantic import Field, SecretStr

from shared import topics
from shared.bus import Subscriber
from shared.config import ServiceSettings, build_store, load_settings
from shared.errors import ConfigError
from shared.lifecycle import configure_logging, run_forever
from shared.service import BusService

log = logging.getLogger("driftloop.mlflow_sync")


class MlflowSyncSettings(ServiceSettings):
    """Settings of the MLflow mirror (``DRIFTLOOP_*``); ``DRIFTLOOP_MLFLOW_TRACKING_URI`` is required here."""

    port: int = Field(default=8004, ge=0, le=65535, description="HTTP port for health and metrics.")
    group_id: str = Field(
        default="driftloop-mlflow-sync",
        description="Consumer group of the mirror; its committed offsets are how far MLflow has caught up.",
    )
    mlflow_experiment_prefix: str = Field(
        default="driftloop/", description="Each model's runs are logged to MLflow experiment <prefix><model>."
    )
    mlflow_model_prefix: str = Field(
        default="",
        description="Each model's versions are mirrored to MLflow registered model <prefix><model>; a prefix keeps "
        "them apart from a team's own registered models of the same name.",
    )
    mlflow_timeout_s: float = Field(
        default=10.0, gt=0, description="Per request to MLflow; a server that does not answer in time is retried."
    )
    mlflow_token: SecretStr | None = Field(
        default=None, description="Bearer token for an MLflow server that requires one; never defaulted."
    )
    mlflow_username: str | None = Field(default=None, description="Basic-auth user of an MLflow server with auth.")
    mlflow_password: SecretStr | None = Field(
        default=None, description="Basic-auth password (with DRIFTLOOP_MLFLOW_USERNAME); never defaulted."
    )


class MlflowSyncService(BusService):
    """The mirror wired up: consume ``training.completed`` and ``deployments``, write to MLflow."""

    def __init__(self, settings: MlflowSyncSettings) -> None:
        if settings.mlflow_tracking_uri is None:
            raise ConfigError(
                "the MLflow mirror needs a server: set DRIFTLOOP_MLFLOW_TRACKING_URI=http(s)://host:port "
                "(the URI `mlflow server` prints)"
            )
        if importlib.util.find_spec("httpx") is None:
            raise ConfigError("the MLflow mirror needs httpx: pip install 'driftloop[mlflow]'")
        from services.mlflow_sync.handlers import MlflowSyncHandlers
        from services.mlflow_sync.metrics import MlflowSyncMetrics
        from services.mlflow_sync.rest import MlflowRest

        super().__init__(settings, "mlflow-sync", [topics.TRAINING_COMPLETED, topics.DEPLOYMENTS])
        self.mlflow = MlflowRest(
            settings.mlflow_tracking_uri,
            timeout_s=settings.mlflow_timeout_s,
            token=settings.mlflow_token.get_secret_value() if settings.mlflow_token else None,
            username=settings.mlflow_username,
            password=settings.mlflow_password.get_secret_value() if settings.mlflow_password else None,
        )
        metrics = MlflowSyncMetrics.create(self.registry)
        self.handlers = MlflowSyncHandlers(
            build_store(settings),
            self.mlflow,
            metrics,
            experiment_prefix=settings.mlflow_experiment_prefix,
            model_prefix=settings.mlflow_model_prefix,
        )
        self.subscriber = Subscriber(
            self.options,
            settings.group_id,
            [topics.TRAINING_COMPLETED, topics.DEPLOYMENTS],
            self.handlers.on_event,
            self.publisher,
            max_records=50,
            co_partitioned=True,  # a model's runs and alias moves meet in one replica, in order
            on_dead_letter=lambda topic: metrics.dead_letters.labels(topic).inc(),
        )

    def not_ready(self) -> str | None:
        """Not ready while MLflow is unreachable (the backlog waits on Kafka), besides the bus's reasons."""
        if self.handlers.unavailable_since is not None:
            return f"MLflow at {self.mlflow.base_url} unreachable; events wait on Kafka until it is back"
        return super().not_ready()

    async def consume(self) -> None:
        """Consume until stopped, then close the MLflow connections."""
        try:
            await super().consume()
        finally:
            await self.mlflow.close()


def main() -> int:
    """``driftloop serve mlflow-sync``."""
    settings = load_settings(MlflowSyncSettings)
    configure_logging(settings.log_level)
    run_forever(MlflowSyncService(settings).run())
    return 0
