"""Object stores: one small synchronous contract, a local-directory and an S3/MinIO implementation.

Everything durable in driftloop lives under string keys in one object store (see the "Object
store layout" in DESIGN.md): model specs, content-addressed dataset shards, dataset manifests,
ONNX models and their cards, alias pointers. Two promises of the contract carry the design:

* ``put`` is atomic. A reader sees the old bytes or the new bytes, never a torn file. Shards
  are named by their sha256, so a half-written shard under its final name would be trusted
  forever.
* ``put_if_absent`` is a conditional create: of any number of concurrent writers of one key,
  exactly one succeeds and every other one gets :class:`~shared.errors.AlreadyExists`. Dataset
  and model version numbers are claimed this way, so two replicas can never both own
  version ``n`` -- no lock service, no leader.

:class:`FileStore` keeps the promises with a temporary file in the key's directory and
``os.replace`` (put) or ``os.link`` (put-if-absent, which fails if the name exists);
:class:`MinioStore` with S3 ``PutObject`` and the ``If-None-Match: *`` precondition, which
MinIO and AWS S3 evaluate atomically. The contract suite in ``tests/contract`` runs the same
tests against both.

The interface is synchronous on purpose: both clients block, and async services call it through
``asyncio.to_thread``. Every method validates its key first (:func:`validate_key`), so a key
such as ``../../etc/passwd`` is refused the same way by both stores.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import certifi
from minio import Minio
from minio.error import MinioException, S3Error
from minio.helpers import check_bucket_name
from urllib3 import PoolManager, Retry, Timeout
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import MaxRetryError

from shared.errors import AlreadyExists, ConfigError, DriftloopError, InvalidInput, KeyNotFound, StoreError

__all__ = [
    "KEY_MAX_BYTES",
    "TEMP_PREFIX",
    "FileStore",
    "MinioStore",
    "ObjectStore",
    "validate_key",
    "validate_prefix",
]

KEY_MAX_BYTES = 1024
"""S3's limit on an object key, in UTF-8 bytes; applied to both stores so they agree."""

TEMP_PREFIX = ".tmp-"
"""Name prefix of FileStore's in-flight temporary files; no key segment may start with it."""

_MKDIR_ATTEMPTS = 5
"""How often a FileStore write re-creates a directory that a concurrent delete pruned away."""

_RETRY_BACKOFF_S = 0.2
"""MinioStore's retries wait 0, 0.4, 0.8 ... seconds (urllib3's exponential backoff)."""

_ALREADY_EXISTS_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


class ObjectStore(Protocol):
    """What services need from an object store. Keys are checked by :func:`validate_key`."""

    def put(self, key: str, data: bytes) -> None:
        """Create or overwrite ``key`` atomically: readers see the old bytes or the new ones."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> None:
        """Create ``key``; raise :class:`~shared.errors.AlreadyExists` if it exists (one writer wins)."""
        ...

    def get(self, key: str) -> bytes:
        """Return the bytes of ``key``; raise :class:`~shared.errors.KeyNotFound` if it does not exist."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists (a mere prefix of other keys does not)."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Every key that starts with ``prefix`` (a plain string prefix, at any depth), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a key that does not exist is not an error."""
        ...

    def describe(self) -> str:
        """Where the store is, for logs and messages: ``file:///...`` or ``s3://bucket@host:port``."""
        ...


def _control_char(text: str) -> str | None:
    for char in text:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return char
    return None


def _key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid key, or None if it is."""
    if not key:
        return "a key must not be empty"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "a key must be valid UTF-8"
    if size > KEY_MAX_BYTES:
        return f"a key must be at most {KEY_MAX_BYTES} bytes of UTF-8, this one has {size}"
    if key.startswith("/"):
        return "a key must be relative (no leading '/')"
    if key.endswith("/"):
        return "a key must not end with '/'"
    if "\\" in key:
        return "a key must use '/' as separator, never '\\'"
    char = _control_char(key)
    if char is not None:
        return f"a key must not contain control characters (found {char!r})"
    for segment in key.split("/"):
        if not segment:
            return "a key must not contain empty segments ('//')"
        if segment in (".", ".."):
            return f"a key must not contain '{segment}' segments"
        if segment.startswith(TEMP_PREFIX):
            return f"segments starting with {TEMP_PREFIX!r} are reserved for temporary files"
    return None


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid object-store key, else raise InvalidInput.

    A key is relative and '/'-separated, like ``datasets/credit/versions/3.json``: not empty, at
    most 1024 UTF-8 bytes, no leading or trailing '/', no backslash, no control character, no
    empty, '.' or '..' segment, and no segment starting with ``.tmp-`` (FileStore's temporary
    files). Both stores call it on every key, so a key that works on one works on the other.

    Raises
    ------
    InvalidInput
        With a message that names the key and the rule it breaks.

    Examples
    --------
    >>> validate_key("datasets/credit/versions/3.json")
    'datasets/credit/versions/3.json'
    >>> validate_key("specs/../x")
    Traceback (most recent call last):
    ...
    shared.errors.InvalidInput: invalid object key 'specs/../x': a key must not contain '..' segments
    """
    if not isinstance(key, str):
        raise InvalidInput(f"invalid object key {key!r}: a key must be a string, not {type(key).__name__}")
    problem = _key_problem(key)
    if problem is not None:
        raise InvalidInput(f"invalid object key {key!r}: {problem}")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged if :meth:`ObjectStore.list` accepts it, else raise InvalidInput.

    Prefixes are checked leniently: ``''``, ``'datasets/'`` and the partial ``'datasets/cre'`` are
    all fine. Refused are a leading '/', a backslash, control characters, and '.' or '..' as a
    complete segment (one followed by '/'), since those can only be attempts to leave the store.
    """
    if not isinstance(prefix, str):
        kind = type(prefix).__name__
        raise InvalidInput(f"invalid key prefix {prefix!r}: a prefix must be a string, not {kind}")
    problem: str | None = None
    if prefix.startswith("/"):
        problem = "a prefix must be relative (no leading '/')"
    elif "\\" in prefix:
        problem = "a prefix must use '/' as separator, never '\\'"
    elif _control_char(prefix) is not None:
        problem = "a prefix must not contain control characters"
    elif any(segment in (".", "..") for segment in prefix.split("/")[:-1]):
        problem = "a prefix must not contain '.' or '..' segments"
    if problem is not None:
        raise InvalidInput(f"invalid key prefix {prefix!r}: {problem}")
    return prefix


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_directory(directory: Path) -> None:
    """Make a rename or link in ``directory`` durable (it lives in the directory's entries)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """An object store in a local directory: key ``a/b/c.json`` is the file ``<root>/a/b/c.json``.

    Safe for concurrent use by threads and by processes sharing the directory: writes go to a
    temporary file (``.tmp-*``, fsynced) in the key's own directory, then ``os.replace`` (put) or
    ``os.link`` (put-if-absent) publishes it in one step, so no reader ever sees a partial file
    and of several put-if-absent writers exactly one link succeeds. Temporary files never appear
    in :meth:`list`; a process killed mid-write may leave one behind, which is harmless.

    Deleting the last key under a directory removes the emptied directories, so that, as on S3,
    ``a`` can be created once ``a/b`` is gone. What S3 allows and a file system cannot is ``a``
    and ``a/b`` existing at the same time: that raises :class:`~shared.errors.StoreError`.
    The file system must support hard links (every local Linux file system does).

    Parameters
    ----------
    root
        The directory holding the store; created if missing.
    """

    def __init__(self, root: Path | str) -> None:
        try:
            Path(root).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"FileStore: cannot create root directory {str(root)!r}: {exc}") from exc
        self._root = Path(os.path.realpath(root))

    @property
    def root(self) -> Path:
        """The store's directory, resolved."""
        return self._root

    def __repr__(self) -> str:
        return f"FileStore({str(self._root)!r})"

    def describe(self) -> str:
        """The root as a ``file://`` URI."""
        return self._root.as_uri()

    def _path(self, key: str) -> Path:
        """The file for ``key``, refusing any key that would resolve outside the root."""
        validate_key(key)
        path = self._root.joinpath(*key.split("/"))
        self._check_inside(path, f"invalid object key {key!r}")
        return path

    def _check_inside(self, path: Path, what: str) -> None:
        resolved = Path(os.path.realpath(path))
        if resolved == self._root or not resolved.is_relative_to(self._root):
            where = f"it resolves to {str(resolved)!r}, outside the store at {self.describe()}"
            raise InvalidInput(f"{what}: {where}")

    @contextmanager
    def _os_errors(self, operation: str, key: str) -> Iterator[None]:
        try:
            yield
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
            raise StoreError(
                f"{self.describe()}: cannot {operation} {key!r}: a key is also the prefix of another key "
                f"('a' and 'a/b'), which a directory cannot hold ({exc})"
            ) from exc
        except OSError as exc:
            raise StoreError(f"{self.describe()}: {operation} {key!r} failed: {exc}") from exc

    def _write_temp(self, directory: Path, data: bytes) -> str:
        """Write ``data`` to a new fsynced temporary file in ``directory``; return its path."""
        for attempt in range(_MKDIR_ATTEMPTS):
            try:
                directory.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
                break
            except FileNotFoundError:
                # A concurrent delete pruned the (empty) directory between mkdir and mkstemp.
                if attempt == _MKDIR_ATTEMPTS - 1:
                    raise
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return tmp

    def put(self, key: str, data: bytes) -> None:
        """Create or overwrite ``key``: temporary file, fsync, ``os.replace``."""
        path = self._path(key)
        with self._os_errors("put", key):
            tmp = self._write_temp(path.parent, data)
            try:
                os.replace(tmp, path)
            except BaseException:
                _unlink_quietly(tmp)
                raise
            _fsync_directory(path.parent)

    def put_if_absent(self, key: str, data: bytes) -> None:
        """Create ``key`` unless it exists: temporary file, fsync, ``os.link`` (fails if taken).

        Raises
        ------
        AlreadyExists
            The key exists; its content is left untouched.
        """
        path = self._path(key)
        with self._os_errors("put_if_absent", key):
            tmp = self._write_temp(path.parent, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                if not path.is_dir():
                    raise AlreadyExists(f"{key!r} already exists in {self.describe()}") from None
                raise
            finally:
                _unlink_quietly(tmp)
            _fsync_directory(path.parent)

    def get(self, key: str) -> bytes:
        """The bytes of ``key``; :class:`~shared.errors.KeyNotFound` if it does not exist."""
        path = self._path(key)
        try:
            with open(path, "rb") as file:
                return file.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFound(f"{key!r} not found in {self.describe()}") from None
        except OSError as exc:
            raise StoreError(f"{self.describe()}: get {key!r} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        """Whether ``key`` is a stored object (a directory, i.e. a prefix, is not)."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists, then remove the directories this left empty."""
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise StoreError(f"{self.describe()}: delete {key!r} failed: {exc}") from exc
        self._prune_empty_directories(path.parent)

    def _prune_empty_directories(self, directory: Path) -> None:
        # rmdir only succeeds on an empty directory, so this cannot remove anything a concurrent
        # writer has put (or is writing: its temporary file is already there).
        while directory != self._root and directory.is_relative_to(self._root):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def list(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix``, sorted; temporary files are never listed."""
        validate_prefix(prefix)
        directory_part = prefix.rpartition("/")[0]
        start = self._root.joinpath(*directory_part.split("/")) if directory_part else self._root
        if directory_part:
            self._check_inside(start, f"invalid key prefix {prefix!r}")
        keys: list[str] = []
        # os.walk skips directories that vanish under it (a concurrent delete), which is right here.
        for dirpath, dirnames, filenames in os.walk(start):
            relative = os.path.relpath(dirpath, self._root)
            base = "" if relative == "." else relative.replace(os.sep, "/") + "/"
            dirnames[:] = [
                name
                for name in dirnames
                if (base + name + "/").startswith(prefix) or prefix.startswith(base + name + "/")
            ]
            for name in filenames:
                key = base + name
                if key.startswith(prefix) and _key_problem(key) is None:
                    keys.append(key)
        return sorted(keys)


class MinioStore:
    """An object store in one bucket of MinIO or any S3-compatible server, over ``minio``.

    ``put_if_absent`` sends ``PUT`` with ``If-None-Match: *`` (S3 conditional writes, MinIO and
    AWS since 2024): the server creates the object only if the key is free, atomically. minio
    7.2's ``put_object`` turns extra headers into ``X-Amz-Meta-*`` user metadata, so that request
    goes through the client's lower-level ``_execute``. It also uses a second connection pool
    that never retries once a request may have reached the server: a retried conditional PUT
    whose first attempt succeeded would report our own write as someone else's.

    Every failure other than a missing key or a lost put-if-absent is raised as
    :class:`~shared.errors.StoreError` naming endpoint, bucket, operation and cause. The
    constructor does no network I/O; the bucket is checked (and created, when ``create_bucket``)
    on first use. Safe to share between threads.

    Parameters
    ----------
    endpoint
        ``host:port`` of the server, without scheme.
    access_key, secret_key
        Credentials.
    bucket
        The bucket holding every key.
    secure
        Use HTTPS (CA bundle from ``SSL_CERT_FILE``, else certifi's).
    region
        The bucket's region; None asks the server once per bucket.
    create_bucket
        Create the bucket on first use if it does not exist.
    timeout_s
        Connect and read timeout of each HTTP request, in seconds.
    retries
        How often a failed request is retried (connection errors, HTTP 5xx), with backoff.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str | None = None,
        create_bucket: bool = True,
        timeout_s: float = 60.0,
        retries: int = 3,
    ) -> None:
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as exc:
            raise ConfigError(f"MinioStore: {bucket!r} is not a valid S3 bucket name ({exc})") from exc
        self._endpoint = endpoint
        self._bucket = bucket
        self._bucket_ready = not create_bucket
        self._bucket_lock = threading.Lock()
        timeout = Timeout(connect=timeout_s, read=timeout_s)
        ca_certs = os.environ.get("SSL_CERT_FILE") or certifi.where()

        def client(retry: Retry) -> Minio:
            retry = retry.new(backoff_factor=_RETRY_BACKOFF_S)
            # urllib3 2 verifies certificates by default; ca_certs as minio's own default pool does.
            pool = PoolManager(timeout=timeout, retries=retry, maxsize=32, ca_certs=ca_certs)
            return Minio(endpoint, access_key, secret_key, secure=secure, region=region, http_client=pool)

        try:
            # Idempotent requests: retry connection failures, dropped connections and 5xx answers.
            self._client = client(Retry(retries, status_forcelist=(500, 502, 503, 504)))
            # The conditional PUT: retry only what certainly never reached the server.
            self._conditional_client = client(Retry(retries, connect=retries, read=0, status=0, other=0))
        except ValueError as exc:
            raise ConfigError(
                f"MinioStore: bad endpoint {endpoint!r} ({exc}); give host:port without scheme, "
                "and secure=True for HTTPS"
            ) from exc

    @property
    def bucket(self) -> str:
        """The bucket holding every key."""
        return self._bucket

    def __repr__(self) -> str:
        return f"MinioStore({self.describe()!r})"

    def describe(self) -> str:
        """``s3://<bucket>@<host:port>``."""
        return f"s3://{self._bucket}@{self._endpoint}"

    @contextmanager
    def _s3_errors(self, operation: str, key: str) -> Iterator[None]:
        """Turn client and transport errors into StoreError (DriftloopErrors pass through)."""
        try:
            yield
        except DriftloopError:
            raise
        except S3Error as exc:
            cause = f"S3 error {exc.code}: {exc.message}"
            raise StoreError(f"{self.describe()}: {operation} {key!r} failed: {cause}") from exc
        except MaxRetryError as exc:
            raise StoreError(f"{self.describe()}: {operation} {key!r} failed: {exc.reason}") from exc
        except (MinioException, Urllib3HTTPError, OSError) as exc:
            cause = f"{type(exc).__name__}: {exc}"
            raise StoreError(f"{self.describe()}: {operation} {key!r} failed: {cause}") from exc

    def _ensure_bucket(self) -> None:
        """Create the bucket once, on first use; tolerate another process creating it meanwhile."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            if not self._client.bucket_exists(self._bucket):
                try:
                    self._client.make_bucket(self._bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
                    if not self._client.bucket_exists(self._bucket):
                        raise  # the name is taken by someone else's bucket
            self._bucket_ready = True

    def put(self, key: str, data: bytes) -> None:
        """Create or overwrite ``key`` with ``PutObject`` (multipart above 5 MiB, atomic either way)."""
        validate_key(key)
        with self._s3_errors("put", key):
            self._ensure_bucket()
            self._client.put_object(
                self._bucket, key, io.BytesIO(data), length=len(data), content_type="application/octet-stream"
            )

    def put_if_absent(self, key: str, data: bytes) -> None:
        """Create ``key`` unless it exists, with ``PUT`` and ``If-None-Match: *``.

        Raises
        ------
        AlreadyExists
            The server answered 412 PreconditionFailed (the key exists) or 409
            ConditionalRequestConflict (AWS: another write of the key is in flight).
        """
        validate_key(key)
        with self._s3_errors("put_if_absent", key):
            self._ensure_bucket()
            headers: dict[str, str | list[str] | tuple[str]] = {
                "If-None-Match": "*",
                "Content-Type": "application/octet-stream",
            }
            try:
                self._conditional_client._execute(
                    "PUT", self._bucket, key, body=data, headers=headers, no_body_trace=True
                )
            except S3Error as exc:
                if exc.code in _ALREADY_EXISTS_CODES or exc.response.status == 412:
                    raise AlreadyExists(f"{key!r} already exists in {self.describe()}") from None
                raise

    def get(self, key: str) -> bytes:
        """The bytes of ``key``; :class:`~shared.errors.KeyNotFound` if it does not exist."""
        validate_key(key)
        with self._s3_errors("get", key):
            self._ensure_bucket()
            try:
                response = self._client.get_object(self._bucket, key)
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    raise KeyNotFound(f"{key!r} not found in {self.describe()}") from None
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists (``HeadObject``)."""
        validate_key(key)
        with self._s3_errors("exists", key):
            self._ensure_bucket()
            try:
                self._client.stat_object(self._bucket, key)
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    return False
                raise
            return True

    def delete(self, key: str) -> None:
        """Remove ``key``; S3's ``DeleteObject`` already succeeds for a missing key."""
        validate_key(key)
        with self._s3_errors("delete", key):
            self._ensure_bucket()
            self._client.remove_object(self._bucket, key)

    def list(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix``, sorted (``ListObjectsV2``, recursive).

        Objects whose names are not valid keys (written by other tools, e.g. ``folder/`` markers)
        are left out: nothing could address them through this interface.
        """
        validate_prefix(prefix)
        with self._s3_errors("list", prefix):
            self._ensure_bucket()
            names = [
                item.object_name
                for item in self._client.list_objects(self._bucket, prefix=prefix or None, recursive=True)
            ]
        return sorted(name for name in names if name is not None and _key_problem(name) is None)
