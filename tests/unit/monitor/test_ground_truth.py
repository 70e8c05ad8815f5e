"""The monitor reads only the annotations it can join: ground truth for a prediction."""

from __future__ import annotations

import json

import pytest

from services.monitor.ground_truth import decode_ground_truth, ground_truth_key, may_join
from shared import topics
from shared.errors import InvalidEvent
from shared.events import AnnotationSubmitted, encode_event


def annotation(inference_id: str | None, features: dict[str, float | str] | None = None) -> bytes:
    return encode_event(
        AnnotationSubmitted(
            model="m", record_id="r-1", features=features or {"x": 1.0}, label="a", inference_id=inference_id
        )
    )


def test_training_data_without_an_inference_id_is_passed_over_from_its_bytes() -> None:
    assert not may_join(annotation(None)), "the encoder writes inference_id: null"
    assert not may_join(b'{"model": "m", "label": 1}'), "no key at all"
    assert not may_join(b'{"model": "m", "inference_id"  :\n null}')
    assert not may_join(b"") and not may_join(None)


@pytest.mark.parametrize(
    "data",
    [
        b'{"model": "m", "label": 1, "inference_id": "abc"}',
        b'{"model": "m", "inference_id" : "null-ish"}',
        # a feature named inference_id: two keys, so the record is decoded to decide
        b'{"model": "m", "features": {"inference_id": null}, "inference_id": "x"}',
        # an escape could spell the key: decoded to decide
        b'{"model": "m", "inference\\u005fid": "x"}',
    ],
)
def test_an_annotation_that_may_carry_an_inference_id_is_forwarded(data: bytes) -> None:
    assert may_join(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"model": "m", "features": {"inference_id": "x"}, "inference_id": null}',
        b'{"model": "m", "note": "\\"inference_id\\": \\"x\\""}',  # a string that quotes the key
        b"{not json",
        b"[1, 2]",
    ],
)
def test_what_surely_cannot_join_is_passed_over(data: bytes) -> None:
    assert not may_join(data)


def test_the_byte_check_agrees_with_the_decoded_record_on_real_annotations() -> None:
    for inference_id in (None, "inf-7", "null", ""):
        data = annotation(inference_id, {"inference_id": 2.0, "note": '"inference_id": null'})
        assert may_join(data) == (json.loads(data)["inference_id"] is not None)


def test_a_forwarded_annotation_is_keyed_by_its_model_whatever_key_it_came_with() -> None:
    assert ground_truth_key(annotation("i-1"), None) == b"m"
    assert ground_truth_key(annotation("i-1"), b"other") == b"m"
    assert ground_truth_key(b"{broken", b"k") == b"k"


def test_ground_truth_is_decoded_whole() -> None:
    event = decode_ground_truth(topics.ANNOTATIONS_GROUND_TRUTH, annotation("inf-7"))
    assert isinstance(event, AnnotationSubmitted) and event.inference_id == "inf-7"
    assert decode_ground_truth(topics.ANNOTATIONS_GROUND_TRUTH, annotation(None)) is None


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'{"model": "m", "inference_id": "i", "label": []}'])
def test_what_does_not_decode_is_still_refused(data: bytes) -> None:
    with pytest.raises(InvalidEvent):
        decode_ground_truth(topics.ANNOTATIONS_GROUND_TRUTH, data)
