"""The base of every piece of monitor state that is checkpointed.

Each stateful piece of the monitor (a PSI window, the alarm policy, a canary trial, a model's
whole watch) exposes its state as a pydantic model deriving from :class:`State`, so a
checkpoint is ``model_dump_json()`` and a restore ``model_validate_json()``; the one model
written to the object store, :class:`services.monitor.watch.WatchState`, carries the
``schema_version`` and older checkpoints are migrated in one named function there.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class State(BaseModel):
    """Checkpointed state: unknown fields refused, infinities written as JSON's ``Infinity``."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants", validate_assignment=False)
