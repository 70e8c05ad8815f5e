"""Ingest's Prometheus metrics, built against a registry the app passes in."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class IngestMetrics:
    """Every metric ingest exports (names: ``driftloop_ingest_<thing>_<unit>``)."""

    accepted: Counter
    rejected: Counter
    duplicates: Counter
    dead_letters: Counter
    versions: Counter
    flush_seconds: Histogram
    buffered_rows: Gauge
    rejection_rate: Gauge
    rejection_alarm: Gauge
    label_shift: Gauge
    label_shift_flags: Counter
    rows_total: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngestMetrics:
        """Register the metrics on ``registry``."""
        return cls(
            accepted=Counter(
                "driftloop_ingest_accepted_records_total",
                "Records accepted and stored in a dataset version.",
                ["model"],
                registry=registry,
            ),
            rejected=Counter(
                "driftloop_ingest_rejected_records_total",
                "Records rejected, once per failed rule.",
                ["model", "rule"],
                registry=registry,
            ),
            duplicates=Counter(
                "driftloop_ingest_duplicate_records_total",
                "Records skipped because their record_id was already stored.",
                ["model"],
                registry=registry,
            ),
            dead_letters=Counter(
                "driftloop_ingest_dead_letters_total", "Messages sent to annotations.dlq.", registry=registry
            ),
            versions=Counter(
                "driftloop_ingest_dataset_versions_total", "Dataset versions written.", ["model"], registry=registry
            ),
            flush_seconds=Histogram(
                "driftloop_ingest_flush_seconds",
                "Time to write a shard and manifest and publish the version.",
                registry=registry,
            ),
            buffered_rows=Gauge(
                "driftloop_ingest_buffered_rows", "Accepted rows waiting for the next flush.", registry=registry
            ),
            rejection_rate=Gauge(
                "driftloop_ingest_rejection_rate_ratio",
                "Share of records rejected in the last window.",
                ["model"],
                registry=registry,
            ),
            rejection_alarm=Gauge(
                "driftloop_ingest_rejection_alarm",
                "1 while the last window's rejection rate is above the spec's limit.",
                ["model"],
                registry=registry,
            ),
            label_shift=Gauge(
                "driftloop_ingest_label_shift_ratio",
                "How far the last batch's labels moved from the dataset's: total-variation distance "
                "for a class label, PSI for a regression label.",
                ["model"],
                registry=registry,
            ),
            label_shift_flags=Counter(
                "driftloop_ingest_label_shift_flags_total",
                "Batches whose label distribution shifted beyond the spec's threshold.",
                ["model"],
                registry=registry,
            ),
            rows_total=Gauge(
                "driftloop_ingest_dataset_rows", "Rows in the newest dataset version.", ["model"], registry=registry
            ),
        )
