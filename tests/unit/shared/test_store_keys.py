"""Key and prefix validation of shared.store, and MinioStore's configuration checks (no I/O)."""

from __future__ import annotations

import doctest

import pytest

import shared.store
from shared.errors import ConfigError, InvalidInput
from shared.store import KEY_MAX_BYTES, MinioStore, validate_key, validate_prefix


@pytest.mark.parametrize(
    "key",
    [
        "specs/credit.yaml",
        "datasets/credit/shards/" + "ab" * 32 + ".parquet",
        "datasets/credit/versions/3.json",
        "registry/credit/versions/12/model.onnx",
        "a",
        "a/..b/c..",
        "a/.hidden",
        "models/crédit score/v1.0.json",
        "k" * KEY_MAX_BYTES,
    ],
)
def test_valid_keys_are_returned_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "must not be empty"),
        ("/etc/passwd", "no leading '/'"),
        ("a/", "must not end with '/'"),
        ("a\\b", "never '\\'"),
        ("a\x00b", "control characters"),
        ("a\tb", "control characters"),
        ("a\x7f", "control characters"),
        ("a//b", "empty segments"),
        ("a/./b", "'.' segments"),
        ("../x", "'..' segments"),
        ("a/b/..", "'..' segments"),
        ("a/.tmp-123", "reserved for temporary files"),
        ("é" * 513, "at most 1024 bytes"),
        ("a\udcffb", "valid UTF-8"),
    ],
)
def test_invalid_keys_raise_invalid_input_naming_key_and_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        validate_key(key)

    assert repr(key) in raised.value.message
    assert reason in raised.value.message
    assert raised.value.status_code == 422


def test_a_non_string_key_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="must be a string, not bytes"):
        validate_key(b"specs/a.yaml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "prefix", ["", "datasets/", "datasets/cre", "datasets/credit/versions/1.json", "a/..", "a/.", ".."]
)
def test_lenient_prefixes_are_accepted(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/datasets", "../", "a/../b", "./", "a/./", "a\\", "a\nb"])
def test_prefixes_that_could_leave_the_store_are_refused(prefix: str) -> None:
    with pytest.raises(InvalidInput, match="invalid key prefix"):
        validate_prefix(prefix)


def test_minio_store_rejects_an_invalid_bucket_name_without_network() -> None:
    with pytest.raises(ConfigError, match="not a valid S3 bucket name"):
        MinioStore("127.0.0.1:9000", "access", "secret", "Bad_Bucket")


def test_minio_store_rejects_an_endpoint_with_a_scheme() -> None:
    with pytest.raises(ConfigError, match="without scheme"):
        MinioStore("http://127.0.0.1:9000", "access", "secret", "driftloop")


def test_minio_store_describes_bucket_and_endpoint() -> None:
    store = MinioStore("minio.internal:9000", "access", "secret", "driftloop")

    assert store.describe() == "s3://driftloop@minio.internal:9000"
    assert store.bucket == "driftloop"


def test_module_doctests_pass() -> None:
    result = doctest.testmod(shared.store)

    assert result.attempted >= 2
    assert result.failed == 0
