"""The trainer's Prometheus metrics, built against a registry the app passes in."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class TrainerMetrics:
    """Every metric the trainer exports (names: ``driftloop_trainer_<thing>_<unit>``)."""

    triggers: Counter
    suppressed: Counter
    pending: Gauge
    waiting_rows: Gauge
    runs: Counter
    run_seconds: Histogram
    phase_seconds: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> TrainerMetrics:
        """Register the metrics on ``registry``."""
        return cls(
            triggers=Counter(
                "driftloop_trainer_triggers_total", "Triggers recorded, by kind.", ["model", "kind"], registry=registry
            ),
            suppressed=Counter(
                "driftloop_trainer_suppressed_triggers_total",
                "Triggers deferred by the cooldown or the hourly run budget (they run later).",
                ["model"],
                registry=registry,
            ),
            pending=Gauge(
                "driftloop_trainer_pending_triggers", "Triggers waiting for a run.", ["model"], registry=registry
            ),
            waiting_rows=Gauge(
                "driftloop_trainer_waiting_rows",
                "Labelled rows after a drift's change point that its run still waits for (window.since_change).",
                ["model"],
                registry=registry,
            ),
            runs=Counter(
                "driftloop_trainer_runs_total",
                "Training runs by outcome (passed, rejected, failed).",
                ["model", "outcome"],
                registry=registry,
            ),
            run_seconds=Histogram(
                "driftloop_trainer_run_seconds",
                "Duration of a training run.",
                ["model"],
                buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
                registry=registry,
            ),
            phase_seconds=Gauge(
                "driftloop_trainer_last_run_phase_seconds",
                "Seconds spent in each phase of the last run (load, fit, export, total).",
                ["model", "phase"],
                registry=registry,
            ),
        )
