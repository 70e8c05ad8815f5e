"""Fixtures of the store contract suite: a real moto S3 server process and one store per backend."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.store import FileStore, MinioStore, ObjectStore

S3_READY_TIMEOUT_S = 15.0
S3_ACCESS_KEY = "test"
S3_SECRET_KEY = "test"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means the server is serving
    except OSError:
        return False


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a moto S3 server process on a free loopback port, for the whole session."""
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + S3_READY_TIMEOUT_S
        while not _answers_http(f"http://{endpoint}/"):
            if process.poll() is not None:
                pytest.fail(f"moto_server exited ({process.returncode}) early:\n{_log_tail(log_path)}")
            if time.monotonic() > deadline:
                waited = f"{endpoint} within {S3_READY_TIMEOUT_S} s"
                pytest.fail(f"moto_server did not answer on {waited}:\n{_log_tail(log_path)}")
            time.sleep(0.05)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


MinioStoreFactory = Callable[..., MinioStore]


@pytest.fixture
def minio_store_factory(s3_endpoint: str) -> MinioStoreFactory:
    """Build MinioStores on the moto server: a fresh bucket unless one is named, fast timeouts."""

    def build(
        bucket: str | None = None,
        *,
        endpoint: str = s3_endpoint,
        create_bucket: bool = True,
        timeout_s: float = 10.0,
        retries: int = 1,
    ) -> MinioStore:
        return MinioStore(
            endpoint,
            S3_ACCESS_KEY,
            S3_SECRET_KEY,
            bucket or f"contract-{uuid.uuid4().hex[:16]}",
            region="us-east-1",
            create_bucket=create_bucket,
            timeout_s=timeout_s,
            retries=retries,
        )

    return build


@pytest.fixture(params=["file", "minio"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """An empty store of each kind; the S3 server only starts when a minio case runs."""
    if request.param == "file":
        return FileStore(tmp_path / "store")
    factory: MinioStoreFactory = request.getfixturevalue("minio_store_factory")
    return factory()
