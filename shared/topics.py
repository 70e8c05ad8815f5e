"""Kafka topic names: spelled here and nowhere else.

The partitioning key of every topic is the model name.
"""

from __future__ import annotations

ANNOTATIONS = "annotations"
ANNOTATIONS_REJECTED = "annotations.rejected"
DATASETS = "datasets"
DRIFT = "drift"
TRAINING_COMPLETED = "training.completed"
DEPLOYMENTS = "deployments"
PREDICTIONS = "predictions"

ALL = (
    ANNOTATIONS,
    ANNOTATIONS_REJECTED,
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
