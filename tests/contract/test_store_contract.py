"""The object-store contract: one suite that FileStore and MinioStore (on moto) must both pass.

Dataset versions and model versions are claimed with put_if_absent, shards are trusted by name:
these tests pin exactly the behaviour that code relies on, on both backends.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.errors import AlreadyExists, InvalidInput, KeyNotFound, StoreError
from shared.store import TEMP_PREFIX, FileStore, MinioStore, ObjectStore

MinioStoreFactory = Callable[..., MinioStore]

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "a/../../outside",
    "a/./b",
    ".",
    "a//b",
    "a/",
    "a\\b",
    "..\\outside",
    "a\x00b",
    "a\nb",
    "a/\x7fb",
    f"a/{TEMP_PREFIX}x",
    "k" * 1025,
]


def _seeded_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", bytes(range(256)) * 4, b"\x00\xff\r\n" * 3, _seeded_bytes(5 * 1024 * 1024 + 123, seed=7)],
    ids=["empty", "all-byte-values", "crlf-nul", "5MiB+123"],
)
def test_put_then_get_returns_the_same_bytes(store: ObjectStore, data: bytes) -> None:
    store.put("datasets/credit/shards/blob.bin", data)

    assert store.get("datasets/credit/shards/blob.bin") == data


def test_put_overwrites_an_existing_key(store: ObjectStore) -> None:
    store.put("specs/credit.yaml", b"version: 1")
    store.put("specs/credit.yaml", b"version: 2, longer than before")
    store.put("specs/credit.yaml", b"v3")

    assert store.get("specs/credit.yaml") == b"v3"
    assert store.list("specs/") == ["specs/credit.yaml"]


def test_get_of_a_missing_key_raises_key_not_found_naming_the_key(store: ObjectStore) -> None:
    store.put("registry/credit/versions/1/model.onnx", b"onnx")

    with pytest.raises(KeyNotFound, match="registry/credit/versions/2/model.onnx"):
        store.get("registry/credit/versions/2/model.onnx")
    with pytest.raises(KeyNotFound):
        store.get("registry/credit/versions/1")  # a prefix of a key is not a key


def test_keys_with_unicode_spaces_and_dots_round_trip(store: ObjectStore) -> None:
    keys = ["models/crédit score/v1.0.json", "a/..b/c..", "a/.hidden", "a/b c+d=e&f"]
    for number, key in enumerate(keys):
        store.put(key, str(number).encode())

    assert [store.get(key) for key in keys] == [b"0", b"1", b"2", b"3"]
    assert store.list("") == sorted(keys)


# --- exists ---------------------------------------------------------------------------------------


def test_exists_follows_put_and_delete(store: ObjectStore) -> None:
    key = "datasets/credit/versions/1.json"
    assert store.exists(key) is False

    store.put(key, b"{}")
    assert store.exists(key) is True

    store.delete(key)
    assert store.exists(key) is False


def test_a_prefix_of_existing_keys_does_not_exist(store: ObjectStore) -> None:
    store.put("datasets/credit/versions/1.json", b"{}")

    assert store.exists("datasets/credit") is False
    assert store.exists("datasets/credit/versions") is False


# --- list -----------------------------------------------------------------------------------------

NESTED_KEYS = [
    "datasets/credit/shards/aa.parquet",
    "datasets/credit/shards/bb.parquet",
    "datasets/credit/versions/1.json",
    "datasets/crema/versions/1.json",
    "datasets/fraud/versions/1.json",
    "registry/credit/versions/1/model.onnx",
    "specs/credit.yaml",
    "a-b",
    "a/b",
    "a0",
]


@pytest.fixture
def filled(store: ObjectStore) -> ObjectStore:
    for number, key in enumerate(reversed(NESTED_KEYS)):
        store.put(key, f"payload {number}".encode())
    return store


def test_list_with_empty_prefix_returns_every_key_sorted(filled: ObjectStore) -> None:
    # '-' (0x2d) < '/' (0x2f) < '0' (0x30): the order is the plain string order of the keys.
    assert filled.list() == sorted(NESTED_KEYS)
    assert filled.list("")[:3] == ["a-b", "a/b", "a0"]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("datasets/credit/", [k for k in NESTED_KEYS if k.startswith("datasets/credit/")]),
        ("datasets/cre", [k for k in NESTED_KEYS if k.startswith("datasets/cre")]),
        ("datasets/credit/shards/a", ["datasets/credit/shards/aa.parquet"]),
        ("registry/", ["registry/credit/versions/1/model.onnx"]),
        ("specs/credit.yaml", ["specs/credit.yaml"]),
        ("a", ["a-b", "a/b", "a0"]),
        ("a/", ["a/b"]),
        ("nothing/", []),
        ("datasets/credit/shards/aa.parquet/", []),
        ("datasets//", []),
    ],
)
def test_list_returns_exactly_the_keys_starting_with_the_prefix(
    filled: ObjectStore, prefix: str, expected: list[str]
) -> None:
    assert filled.list(prefix) == sorted(expected)


def test_list_is_recursive_over_deep_keys(store: ObjectStore) -> None:
    deep = "/".join(f"level{n}" for n in range(12)) + "/leaf.json"
    store.put(deep, b"deep")

    assert store.list("level0/") == [deep]
    assert store.list("level0/level1/level2/lev") == [deep]


@pytest.mark.parametrize("prefix", ["/datasets", "../", "a/../", "./a", "a\\b", "a\x00"])
def test_list_rejects_prefixes_that_try_to_leave_the_store(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidInput, match="prefix"):
        store.list(prefix)


# --- delete ---------------------------------------------------------------------------------------


def test_delete_removes_only_that_key_and_is_idempotent(store: ObjectStore) -> None:
    store.put("a/b/one", b"1")
    store.put("a/b/two", b"2")

    store.delete("a/b/one")
    store.delete("a/b/one")
    store.delete("never/written")

    with pytest.raises(KeyNotFound):
        store.get("a/b/one")
    assert store.get("a/b/two") == b"2"
    assert store.list() == ["a/b/two"]


def test_a_key_can_be_created_where_a_deleted_prefix_was(store: ObjectStore) -> None:
    store.put("registry/credit/aliases/production/current", b"v1")
    store.delete("registry/credit/aliases/production/current")

    store.put("registry/credit/aliases/production", b"v2")
    store.put_if_absent("registry/credit/aliases/production-history", b"h")

    assert store.get("registry/credit/aliases/production") == b"v2"
    assert store.list("registry/") == [
        "registry/credit/aliases/production",
        "registry/credit/aliases/production-history",
    ]


# --- put_if_absent --------------------------------------------------------------------------------


def test_put_if_absent_first_writer_wins_and_content_stays(store: ObjectStore) -> None:
    key = "datasets/credit/versions/7.json"
    store.put_if_absent(key, b"first")

    with pytest.raises(AlreadyExists, match="datasets/credit/versions/7.json"):
        store.put_if_absent(key, b"second")
    assert store.get(key) == b"first"
    assert store.list("datasets/") == [key]


def test_put_if_absent_of_empty_and_large_payloads(store: ObjectStore) -> None:
    big = _seeded_bytes(3 * 1024 * 1024, seed=11)
    store.put_if_absent("empty", b"")
    store.put_if_absent("big", big)

    assert store.get("empty") == b""
    assert store.get("big") == big
    with pytest.raises(AlreadyExists):
        store.put_if_absent("empty", b"not empty")
    assert store.get("empty") == b""


def test_put_if_absent_after_delete_creates_again(store: ObjectStore) -> None:
    store.put_if_absent("claims/1", b"old")
    store.delete("claims/1")

    store.put_if_absent("claims/1", b"new")

    assert store.get("claims/1") == b"new"


def test_put_if_absent_fails_on_a_key_written_by_put_and_put_still_overwrites(store: ObjectStore) -> None:
    store.put("claims/2", b"by put")

    with pytest.raises(AlreadyExists):
        store.put_if_absent("claims/2", b"conditional")
    store.put("claims/2", b"overwritten")

    assert store.get("claims/2") == b"overwritten"


def test_concurrent_put_if_absent_has_exactly_one_winner_per_key(store: ObjectStore) -> None:
    contenders = 4
    winners: dict[str, list[int]] = {}
    losers: dict[str, list[int]] = {}
    unexpected: list[BaseException] = []
    lock = threading.Lock()

    def claim(key: str, writer: int, barrier: threading.Barrier) -> None:
        barrier.wait(timeout=10)
        try:
            store.put_if_absent(key, f"writer-{writer}".encode())
        except AlreadyExists:
            with lock:
                losers.setdefault(key, []).append(writer)
        except BaseException as exc:  # reported by the assertion below
            with lock:
                unexpected.append(exc)
        else:
            with lock:
                winners.setdefault(key, []).append(writer)

    keys = [f"datasets/race/versions/{n}.json" for n in range(20)]
    for key in keys:
        barrier = threading.Barrier(contenders)
        threads = [threading.Thread(target=claim, args=(key, w, barrier)) for w in range(contenders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    assert unexpected == []
    for key in keys:
        assert len(winners.get(key, [])) == 1, f"{key}: winners {winners.get(key)}"
        assert len(losers.get(key, [])) == contenders - 1
        assert store.get(key) == f"writer-{winners[key][0]}".encode()
    assert store.list("datasets/race/") == sorted(keys)


# --- bad keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", BAD_KEYS, ids=[repr(k)[:24] for k in BAD_KEYS])
def test_every_operation_rejects_bad_keys_and_writes_nothing(store: ObjectStore, key: str) -> None:
    operations: list[Callable[[], Any]] = [
        lambda: store.put(key, b"x"),
        lambda: store.put_if_absent(key, b"x"),
        lambda: store.get(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ]
    for operation in operations:
        with pytest.raises(InvalidInput, match="invalid object key"):
            operation()

    assert store.list() == []


def test_describe_names_the_location(store: ObjectStore) -> None:
    location = store.describe()

    if isinstance(store, FileStore):
        assert location == store.root.as_uri()
    else:
        assert isinstance(store, MinioStore)
        assert location.startswith(f"s3://{store.bucket}@127.0.0.1:")


# --- FileStore only -------------------------------------------------------------------------------


def test_filestore_never_lists_temporary_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("datasets/credit/versions/1.json", b"{}")
    (tmp_path / "datasets" / "credit" / "versions" / f"{TEMP_PREFIX}crashed-writer").write_bytes(b"partial")

    assert store.list() == ["datasets/credit/versions/1.json"]
    assert store.list("datasets/credit/versions/.") == []


def test_filestore_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("a/one", b"1")
    store.put("a/one", b"2")
    store.put_if_absent("a/two", b"1")
    with pytest.raises(AlreadyExists):
        store.put_if_absent("a/two", b"2")

    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["one", "two"]


def test_filestore_removes_the_temporary_file_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path)

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StoreError, match="No space left on device"):
        store.put("a/key", b"data")

    assert list((tmp_path / "a").iterdir()) == []


def test_filestore_readers_never_see_a_torn_write(tmp_path: Path) -> None:
    # FileStore only: moto answers concurrent PUTs of one key with HTTP 500 (it closes the buffer
    # of the object being replaced while the other request still reads it); S3 and MinIO do not.
    store = FileStore(tmp_path)
    payloads = [bytes([n]) * 300_000 for n in range(6)]
    store.put("shared/key", payloads[0])
    barrier = threading.Barrier(len(payloads) + 1)
    done = threading.Event()
    errors: list[BaseException] = []
    seen: set[bytes] = set()

    def write(data: bytes) -> None:
        barrier.wait(timeout=10)
        try:
            for _ in range(10):
                store.put("shared/key", data)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def read() -> None:
        barrier.wait(timeout=10)
        while not done.is_set():
            data = store.get("shared/key")
            seen.add(data[:1] if data in payloads else b"torn")

    writers = [threading.Thread(target=write, args=(data,)) for data in payloads]
    reader = threading.Thread(target=read)
    for thread in [*writers, reader]:
        thread.start()
    for thread in writers:
        thread.join(timeout=30)
    done.set()
    reader.join(timeout=30)

    assert errors == []
    assert seen and b"torn" not in seen
    assert store.get("shared/key") in payloads
    assert store.list("") == ["shared/key"]


def test_filestore_refuses_a_symlink_that_leads_out_of_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    store = FileStore(root)
    (root / "escape").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidInput, match="outside the store"):
        store.put("escape/stolen", b"x")
    with pytest.raises(InvalidInput, match="outside the store"):
        store.list("escape/")
    assert list(outside.iterdir()) == []


def test_filestore_reports_a_key_that_is_also_a_prefix_as_store_error(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("a", b"file")

    with pytest.raises(StoreError, match="prefix of another key"):
        store.put("a/b", b"x")
    assert store.get("a") == b"file"


def _claim_keys(root: str, writer: int, keys: list[str], barrier: Any, results: Any) -> None:
    """Child process: race the others for every key; report the keys this writer won."""
    store = FileStore(root)
    won: list[str] = []
    for key in keys:
        barrier.wait(timeout=30)
        try:
            store.put_if_absent(key, f"process-{writer}".encode())
        except AlreadyExists:
            continue
        won.append(key)
    results.put((writer, won))


def test_filestore_put_if_absent_has_one_winner_across_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    processes_count = 4
    keys = [f"registry/credit/versions/{n}/card.json" for n in range(20)]
    barrier = context.Barrier(processes_count)
    results = context.Queue()
    processes = [
        context.Process(target=_claim_keys, args=(str(tmp_path), w, keys, barrier, results))
        for w in range(processes_count)
    ]
    for process in processes:
        process.start()
    reports = dict(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(timeout=30)

    assert [p.exitcode for p in processes] == [0] * processes_count
    store = FileStore(tmp_path)
    for key in keys:
        owners = [writer for writer, won in reports.items() if key in won]
        assert len(owners) == 1, f"{key}: won by {owners}"
        assert store.get(key) == f"process-{owners[0]}".encode()
    assert store.list() == sorted(keys)


# --- MinioStore only ------------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("create_bucket", [True, False])
def test_minio_unreachable_endpoint_raises_store_error(closed_port: int, create_bucket: bool) -> None:
    endpoint = f"127.0.0.1:{closed_port}"
    store = MinioStore(
        endpoint,
        "test",
        "test",
        "unreachable",
        region="us-east-1",
        create_bucket=create_bucket,
        timeout_s=1.0,
        retries=0,
    )
    operations: dict[str, Callable[[], Any]] = {
        "put": lambda: store.put("k", b"x"),
        "put_if_absent": lambda: store.put_if_absent("k", b"x"),
        "get": lambda: store.get("k"),
        "exists": lambda: store.exists("k"),
        "list": lambda: store.list("a/"),
        "delete": lambda: store.delete("k"),
    }
    started = time.monotonic()
    for name, operation in operations.items():
        with pytest.raises(StoreError) as raised:
            operation()
        message = str(raised.value)
        assert f"s3://unreachable@{endpoint}" in message
        assert f"{name} " in message
        assert "refused" in message.lower()
        assert raised.value.__cause__ is not None
    assert time.monotonic() - started < 5


def test_minio_without_create_bucket_fails_on_missing_bucket(minio_store_factory: MinioStoreFactory) -> None:
    store = minio_store_factory(create_bucket=False)

    with pytest.raises(StoreError, match="NoSuchBucket"):
        store.put("k", b"x")
    with pytest.raises(StoreError, match="NoSuchBucket"):
        store.list()


def test_minio_stores_racing_to_create_one_bucket_both_work(minio_store_factory: MinioStoreFactory) -> None:
    first = minio_store_factory()
    stores = [first] + [minio_store_factory(first.bucket) for _ in range(3)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def write(index: int) -> None:
        barrier.wait(timeout=10)
        try:
            stores[index].put(f"from/{index}", b"x")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert first.list() == [f"from/{i}" for i in range(len(stores))]


def test_minio_list_skips_objects_whose_names_are_not_keys(minio_store_factory: MinioStoreFactory) -> None:
    store = minio_store_factory()
    store.put("real/key", b"x")
    store._client.put_object(store.bucket, "real/folder-marker/", io.BytesIO(b""), length=0)
    raw = [item.object_name for item in store._client.list_objects(store.bucket, recursive=True)]

    assert sorted(raw) == ["real/folder-marker/", "real/key"]
    assert store.list("real/") == ["real/key"]
