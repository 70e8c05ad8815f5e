"""The MLflow mirror's Prometheus metrics, built against a registry the app passes in."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass
class MlflowSyncMetrics:
    """Every metric the mirror exports (names: ``driftloop_mlflow_sync_<thing>_<unit>``)."""

    runs: Counter
    versions: Counter
    alias_moves: Counter
    unavailable: Counter
    reachable: Gauge
    dead_letters: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> MlflowSyncMetrics:
        """Register the metrics on ``registry``."""
        return cls(
            runs=Counter(
                "driftloop_mlflow_sync_runs_total",
                "Training runs logged to MLflow, by status (FINISHED, FAILED); a redelivered run is not counted again.",
                ["model", "status"],
                registry=registry,
            ),
            versions=Counter(
                "driftloop_mlflow_sync_versions_total",
                "Registered versions mirrored into MLflow's model registry.",
                ["model"],
                registry=registry,
            ),
            alias_moves=Counter(
                "driftloop_mlflow_sync_alias_moves_total",
                "Aliases set or removed in MLflow's model registry to match driftloop's.",
                ["model", "alias"],
                registry=registry,
            ),
            unavailable=Counter(
                "driftloop_mlflow_sync_unavailable_total",
                "Attempts that found MLflow unreachable (the event waits on Kafka and is retried).",
                registry=registry,
            ),
            reachable=Gauge(
                "driftloop_mlflow_sync_reachable",
                "1 while the last call to MLflow succeeded, 0 while MLflow is unreachable.",
                registry=registry,
            ),
            dead_letters=Counter(
                "driftloop_mlflow_sync_dead_letters_total",
                "Events MLflow refused for good, sent to <topic>.dlq with the reason (an outage never is).",
                ["topic"],
                registry=registry,
            ),
        )
