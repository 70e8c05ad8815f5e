"""Settings, read from ``DRIFTLOOP_*`` environment variables with pydantic-settings.

:class:`DriftloopSettings` holds what every process needs (Kafka, object store, logging);
each service subclasses it with its own fields. Settings are built once in a composition
root (``app.py``, the CLI) and passed down; nothing reads the environment at import time.

Where the Kafka bootstrap or the store is not given explicitly, a process finds the local
stack that ``driftloop up`` started through ``<data_dir>/endpoints.json``; explicit
settings always win (production).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError
from shared.events import DEFAULT_MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES

if TYPE_CHECKING:
    from shared.store import ObjectStore

ENV_PREFIX = "DRIFTLOOP_"
ENDPOINTS_FILE = "endpoints.json"


class DriftloopSettings(BaseSettings):
    """Settings every driftloop process shares."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    data_dir: Path = Field(
        default=Path(".driftloop"),
        description="Directory of the local stack: endpoints.json, FileStore root, logs.",
    )
    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers, host:port[,host:port]. Unset: the local stack's broker.",
    )
    kafka_idempotence: bool = Field(
        default=True,
        description="Idempotent producer. On for Apache Kafka; the embedded Tansu broker needs it off.",
    )
    kafka_client_id: str = Field(default="driftloop", description="Client id prefix sent to the broker.")
    kafka_partitions: int = Field(
        default=4, ge=1, description="Partitions of the topics driftloop creates (replicas split them)."
    )
    kafka_replication: int = Field(default=1, ge=1, description="Replication factor of created topics.")
    kafka_max_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES,
        ge=MIN_MESSAGE_BYTES,
        description=(
            "Largest record (value, key and headers) driftloop publishes, in bytes. Producers split "
            "(prediction log) or truncate (dead letters, rejections) to stay under it, and a larger "
            "record is refused before it reaches the broker. Keep it under the broker's and topics' "
            "message.max.bytes (Kafka's default: 1048588) minus ~1 KiB of batch framing."
        ),
    )
    store_kind: Literal["file", "minio"] | None = Field(
        default=None, description="Object store: 'file' (local directory) or 'minio' (S3 API). Unset: local stack."
    )
    store_root: Path | None = Field(default=None, description="FileStore root. Default: <data_dir>/store.")
    store_endpoint: str | None = Field(default=None, description="MinIO/S3 endpoint host:port (store_kind=minio).")
    store_access_key: str | None = Field(default=None, description="MinIO/S3 access key (store_kind=minio).")
    store_secret_key: SecretStr | None = Field(
        default=None, description="MinIO/S3 secret key (store_kind=minio); required, never defaulted."
    )
    store_bucket: str = Field(default="driftloop", description="Bucket holding specs, datasets and the registry.")
    store_secure: bool = Field(default=False, description="Use HTTPS for the MinIO/S3 endpoint.")
    store_region: str | None = Field(default=None, description="S3 region, when the server needs one.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    http_host: str = Field(default="127.0.0.1", description="Address services bind their HTTP port to.")
    admin_token: SecretStr | None = Field(
        default=None, description="When set, promote and rollback from the CLI require it (--token)."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description=(
            "MLflow tracking server, http(s)://host:port, that training runs, registered versions and the "
            "production / canary aliases are mirrored to (`driftloop serve mlflow-sync`). Unset: no MLflow. "
            "The loop never waits on it: while it is down, the mirror keeps its place on Kafka and catches up."
        ),
    )

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _mlflow_is_http(cls, value: str | None) -> str | None:
        """MLflow is reached over its REST API, so only an http(s) server URI will do (not a local path)."""
        if value is None or not value.strip():
            return None
        uri = value.strip().rstrip("/")
        parsed = urlsplit(uri)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{uri!r} is not an MLflow server: use http(s)://host:port of a running `mlflow server`")
        return uri

    @model_validator(mode="after")
    def _minio_needs_credentials(self) -> DriftloopSettings:
        if self.store_kind == "minio":
            missing = [
                f"{ENV_PREFIX}{name.upper()}"
                for name in ("store_endpoint", "store_access_key", "store_secret_key")
                if getattr(self, name) in (None, "")
            ]
            if missing:
                raise ValueError(f"store_kind=minio needs {', '.join(missing)}")
        return self

    def endpoints_path(self) -> Path:
        """Where ``driftloop up`` records the local stack's endpoints."""
        return self.data_dir / ENDPOINTS_FILE

    def local_endpoints(self) -> dict[str, Any] | None:
        """The running local stack's endpoints, or None when none was started here."""
        path = self.endpoints_path()
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path} is unreadable ({err}); remove it or restart `driftloop up`") from err
        return data

    def resolved_bootstrap(self) -> str:
        """Kafka bootstrap: the explicit setting, else the local stack's broker."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        endpoints = self.local_endpoints()
        if endpoints and endpoints.get("kafka_bootstrap"):
            return str(endpoints["kafka_bootstrap"])
        raise ConfigError(
            f"no Kafka broker: set {ENV_PREFIX}KAFKA_BOOTSTRAP, or start the local stack with "
            f"`driftloop up --data-dir {self.data_dir}` (no {self.endpoints_path()} found)"
        )

    def resolved_idempotence(self) -> bool:
        """Idempotence as set, except against the local stack's Tansu broker, which lacks it."""
        if self.kafka_bootstrap:
            return self.kafka_idempotence
        endpoints = self.local_endpoints() or {}
        return bool(endpoints.get("kafka_idempotence", self.kafka_idempotence))

    def resolved_store_root(self) -> Path:
        """FileStore root: explicit, else the local stack's, else ``<data_dir>/store``."""
        if self.store_root is not None:
            return self.store_root
        endpoints = self.local_endpoints() or {}
        root = endpoints.get("store", {}).get("root")
        return Path(root) if root else self.data_dir / "store"


class ServiceSettings(DriftloopSettings):
    """Settings of a long-running service: its HTTP port for health and metrics."""

    port: int = Field(default=0, ge=0, le=65535, description="HTTP port (health, metrics, APIs). 0: any free port.")


SettingsT = TypeVar("SettingsT", bound=DriftloopSettings)


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build settings from the environment (and explicit overrides, e.g. CLI flags).

    A missing or malformed value raises :class:`ConfigError` naming the environment
    variable to fix, instead of pydantic's traceback.
    """
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        problems = []
        for item in err.errors(include_url=False):
            loc = [str(p) for p in item["loc"]]
            var = f"{ENV_PREFIX}{loc[0].upper()}" if loc else "settings"
            problems.append(f"{var}: {item['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None


def build_store(settings: DriftloopSettings) -> ObjectStore:
    """The object store the settings describe: MinIO when configured, else a FileStore.

    The FileStore root is explicit, or the running local stack's, or ``<data_dir>/store``.
    """
    from shared.store import FileStore, MinioStore

    kind = settings.store_kind or "file"
    if kind == "minio":
        assert settings.store_endpoint and settings.store_access_key and settings.store_secret_key
        return MinioStore(
            settings.store_endpoint,
            settings.store_access_key,
            settings.store_secret_key.get_secret_value(),
            settings.store_bucket,
            secure=settings.store_secure,
            region=settings.store_region,
        )
    return FileStore(settings.resolved_store_root())
