"""The monitor reads only the annotations it can join: ground truth for a prediction."""

from __future__ import annotations

import pytest

from services.monitor.app import decode_ground_truth
from shared import topics
from shared.errors import InvalidEvent
from shared.events import AnnotationSubmitted, encode_event


def annotation(inference_id: str | None) -> bytes:
    return encode_event(
        AnnotationSubmitted(model="m", record_id="r-1", features={"x": 1.0}, label="a", inference_id=inference_id)
    )


def test_ground_truth_is_decoded_whole() -> None:
    event = decode_ground_truth(topics.ANNOTATIONS, annotation("inf-7"))
    assert isinstance(event, AnnotationSubmitted) and event.inference_id == "inf-7"


def test_training_data_without_an_inference_id_is_skipped_before_validation() -> None:
    assert decode_ground_truth(topics.ANNOTATIONS, annotation(None)) is None
    assert decode_ground_truth(topics.ANNOTATIONS, b'{"model": "m", "features": "not even valid"}') is None


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'{"model": "m", "inference_id": "i", "label": []}'])
def test_what_does_not_decode_is_still_refused(data: bytes) -> None:
    with pytest.raises(InvalidEvent):
        decode_ground_truth(topics.ANNOTATIONS, data)
