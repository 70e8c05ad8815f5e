"""The DRIFTLOOP_* variables each service really reads: the fields of its settings class."""

from __future__ import annotations

import importlib
import importlib.util

from pydantic_settings import BaseSettings

from shared.config import ENV_PREFIX, ServiceSettings


def settings_class(service: str) -> type[BaseSettings]:
    """``services.<service>.app``'s ServiceSettings subclass; ServiceSettings while it has none yet."""
    if importlib.util.find_spec(f"services.{service}.app") is None:
        return ServiceSettings
    module = importlib.import_module(f"services.{service}.app")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
        and value.__module__ == module.__name__
    ]
    assert len(found) <= 1, f"services.{service}.app defines several settings classes: {found}"
    return found[0] if found else ServiceSettings


def env_names(service: str) -> set[str]:
    """Every DRIFTLOOP_* variable the service's settings read."""
    return {ENV_PREFIX + name.upper() for name in settings_class(service).model_fields}
