"""Kafka topic names: spelled here and nowhere else.

The partitioning key of every topic is the model name.
"""

from __future__ import annotations

ANNOTATIONS = "annotations"
ANNOTATIONS_REJECTED = "annotations.rejected"
ANNOTATIONS_GROUND_TRUTH = "annotations.ground-truth"
"""The monitor's own: the annotations of ``annotations`` that carry an ``inference_id``, forwarded
as they are and keyed by model (:mod:`services.monitor.ground_truth`), so its join reads only those."""
DATASETS = "datasets"
DRIFT = "drift"
TRAINING_COMPLETED = "training.completed"
DEPLOYMENTS = "deployments"
PREDICTIONS = "predictions"

ALL = (
    ANNOTATIONS,
    ANNOTATIONS_REJECTED,
    ANNOTATIONS_GROUND_TRUTH,
    DATASETS,
    DRIFT,
    TRAINING_COMPLETED,
    DEPLOYMENTS,
    PREDICTIONS,
)

DLQ_SUFFIX = ".dlq"


def dlq(topic: str) -> str:
    """Name of the dead-letter topic that receives what ``topic``'s consumers cannot handle.

    >>> dlq(ANNOTATIONS)
    'annotations.dlq'
    """
    return topic + DLQ_SUFFIX
