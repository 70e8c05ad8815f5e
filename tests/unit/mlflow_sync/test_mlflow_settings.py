"""The MLflow settings: an optional http(s) URI on every process, required by the mirror, errors that say what to do."""

from __future__ import annotations

import pytest

from services.mlflow_sync.app import MlflowSyncService, MlflowSyncSettings
from shared.config import DriftloopSettings, load_settings
from shared.errors import ConfigError


def test_mlflow_is_off_unless_a_server_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLOOP_MLFLOW_TRACKING_URI", raising=False)
    assert load_settings(DriftloopSettings).mlflow_tracking_uri is None
    monkeypatch.setenv("DRIFTLOOP_MLFLOW_TRACKING_URI", "  ")
    assert load_settings(DriftloopSettings).mlflow_tracking_uri is None
    monkeypatch.setenv("DRIFTLOOP_MLFLOW_TRACKING_URI", "http://mlflow.internal:5000/")
    assert load_settings(DriftloopSettings).mlflow_tracking_uri == "http://mlflow.internal:5000"


@pytest.mark.parametrize("uri", ["./mlruns", "file:///tmp/mlruns", "databricks", "http://"])
def test_a_uri_that_is_not_a_server_names_the_variable_and_the_fix(uri: str) -> None:
    with pytest.raises(ConfigError, match=r"DRIFTLOOP_MLFLOW_TRACKING_URI: .*http\(s\)://host:port"):
        load_settings(DriftloopSettings, mlflow_tracking_uri=uri)


def test_the_mirror_refuses_to_start_without_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLOOP_MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings(MlflowSyncSettings, kafka_bootstrap="127.0.0.1:1")
    assert settings.port == 8004 and settings.group_id == "driftloop-mlflow-sync"
    with pytest.raises(ConfigError, match="set DRIFTLOOP_MLFLOW_TRACKING_URI"):
        MlflowSyncService(settings)


def test_credentials_are_secrets_never_printed() -> None:
    settings = load_settings(
        MlflowSyncSettings, mlflow_tracking_uri="https://m.example", mlflow_token="s3cret", mlflow_password="pw"
    )
    assert "s3cret" not in repr(settings) and "pw'" not in repr(settings)
    assert settings.mlflow_token is not None and settings.mlflow_token.get_secret_value() == "s3cret"
