"""The monitor's Prometheus metrics, built against a registry the app passes in.

The names are fixed: the Grafana dashboard in deploy/ queries them as they are spelled here.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LABEL_LAG_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
"""Seconds from a prediction to its ground truth: labels come from people, minutes to a day."""


@dataclass
class MonitorMetrics:
    """Every metric the monitor exports (names: ``driftloop_monitor_<thing>_<unit>``)."""

    live_accuracy: Gauge
    error_rate: Gauge
    live_mae: Gauge
    live_rmse: Gauge
    labelled: Counter
    unscored: Counter
    predictions: Counter
    drift_statistic: Gauge
    psi: Gauge
    unseen_categories: Counter
    unseen_rate: Gauge
    drift_detections: Counter
    suppressed_alarms: Counter
    label_lag: Histogram
    join_hits: Counter
    join_misses: Counter
    canary_verdicts: Counter
    waiting_rows: Gauge
    handler_retries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> MonitorMetrics:
        """Register the metrics on ``registry``."""
        return cls(
            live_accuracy=Gauge(
                "driftloop_monitor_live_accuracy_ratio",
                "Accuracy of joined predictions in the latest tumbling window (classifiers).",
                ["model", "version", "variant"],
                registry=registry,
            ),
            error_rate=Gauge(
                "driftloop_monitor_error_rate_ratio",
                "Error rate of joined predictions in the latest tumbling window (classifiers).",
                ["model", "version", "variant"],
                registry=registry,
            ),
            live_mae=Gauge(
                "driftloop_monitor_live_mae",
                "A regressor's mean absolute error of joined predictions in the latest tumbling window "
                "(in the label's unit).",
                ["model", "version", "variant"],
                registry=registry,
            ),
            live_rmse=Gauge(
                "driftloop_monitor_live_rmse",
                "A regressor's root mean squared error of joined predictions in the latest tumbling window "
                "(in the label's unit).",
                ["model", "version", "variant"],
                registry=registry,
            ),
            unscored=Counter(
                "driftloop_monitor_unscored_outcomes_total",
                "Joined predictions that could not be scored (a regressor's predicted or actual value "
                "that is not a finite number, or an actual outside the declared range).",
                ["model"],
                registry=registry,
            ),
            labelled=Counter(
                "driftloop_monitor_labelled_predictions_total",
                "Predictions joined with their ground-truth label.",
                ["model", "version", "variant"],
                registry=registry,
            ),
            predictions=Counter(
                "driftloop_monitor_predictions_total",
                "Logged predictions consumed.",
                ["model", "variant"],
                registry=registry,
            ),
            drift_statistic=Gauge(
                "driftloop_monitor_drift_statistic",
                "Latest drift detector statistic per stream (feature is empty for concept drift).",
                ["model", "kind", "feature"],
                registry=registry,
            ),
            psi=Gauge(
                "driftloop_monitor_psi",
                "Population stability index of the last closed window against the training reference "
                "(category shares for a categorical or boolean feature).",
                ["model", "feature"],
                registry=registry,
            ),
            unseen_categories=Counter(
                "driftloop_monitor_unseen_categories_total",
                "Logged values of categorical and boolean features whose category is not in the training reference.",
                ["model", "feature"],
                registry=registry,
            ),
            unseen_rate=Gauge(
                "driftloop_monitor_unseen_category_ratio",
                "Share of unseen categories among a feature's values in the last closed window.",
                ["model", "feature"],
                registry=registry,
            ),
            drift_detections=Counter(
                "driftloop_monitor_drift_detections_total",
                "Confirmed drifts published, by kind and severity.",
                ["model", "kind", "severity"],
                registry=registry,
            ),
            suppressed_alarms=Counter(
                "driftloop_monitor_suppressed_alarms_total",
                "Drift candidates not published (unconfirmed, cooldown).",
                ["model", "kind", "reason"],
                registry=registry,
            ),
            label_lag=Histogram(
                "driftloop_monitor_label_lag_seconds",
                "Time from a prediction to its ground-truth label (event times).",
                ["model"],
                buckets=LABEL_LAG_BUCKETS,
                registry=registry,
            ),
            join_hits=Counter(
                "driftloop_monitor_join_hits_total",
                "Labels joined with their logged prediction.",
                ["model"],
                registry=registry,
            ),
            join_misses=Counter(
                "driftloop_monitor_join_misses_total",
                "Labels whose prediction never arrived within the join retention.",
                ["model"],
                registry=registry,
            ),
            canary_verdicts=Counter(
                "driftloop_monitor_canary_verdicts_total",
                "Canary and champion verdicts published, by action (promoted, rolled_back).",
                ["model", "action"],
                registry=registry,
            ),
            waiting_rows=Gauge(
                "driftloop_monitor_waiting_rows",
                "Labelled rows still needed after a change point before a since-change retrain.",
                ["model"],
                registry=registry,
            ),
            handler_retries=Counter(
                "driftloop_monitor_handler_retries_total",
                "Messages tried again after a transient failure (the store or the broker away).",
                ["topic"],
                registry=registry,
            ),
        )
