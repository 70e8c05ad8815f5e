"""The inference service's Prometheus metrics, built against a registry the app passes in."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class InferenceMetrics:
    """Every metric inference exports (names: ``driftloop_inference_<thing>_<unit>``)."""

    requests: Counter
    latency: Histogram
    load_seconds: Histogram
    load_failures: Counter
    serving_version: Gauge
    log_depth: Gauge
    log_spilled: Gauge
    log_lost: Gauge
    log_sent: Gauge
    unseen_categories: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> InferenceMetrics:
        """Register the metrics on ``registry``."""
        return cls(
            requests=Counter(
                "driftloop_inference_requests_total",
                "Requests by model, version, variant and HTTP status.",
                ["model", "version", "variant", "status"],
                registry=registry,
            ),
            latency=Histogram(
                "driftloop_inference_request_seconds",
                "Request latency inside the service.",
                ["model", "version", "variant"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            load_seconds=Histogram(
                "driftloop_inference_model_load_seconds",
                "Time to load and warm up a version.",
                ["model"],
                registry=registry,
            ),
            load_failures=Counter(
                "driftloop_inference_model_load_failures_total",
                "Versions that failed to load (the current one kept serving).",
                ["model"],
                registry=registry,
            ),
            serving_version=Gauge(
                "driftloop_inference_serving_version",
                "Version serving each variant (0: none).",
                ["model", "variant"],
                registry=registry,
            ),
            log_depth=Gauge(
                "driftloop_inference_prediction_log_buffered", "Predictions waiting in memory.", registry=registry
            ),
            log_spilled=Gauge(
                "driftloop_inference_prediction_log_spilled",
                "Predictions spilled to the disk journal.",
                registry=registry,
            ),
            log_lost=Gauge(
                "driftloop_inference_prediction_log_lost",
                "Predictions that could not be kept at all.",
                registry=registry,
            ),
            log_sent=Gauge(
                "driftloop_inference_prediction_log_sent", "Predictions published to Kafka.", registry=registry
            ),
            unseen_categories=Counter(
                "driftloop_inference_unseen_categories_total",
                "Categorical values the answering version did not see in training (answered as valid inputs).",
                ["model", "feature"],
                registry=registry,
            ),
        )
