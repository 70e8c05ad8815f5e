"""Plumbing shared by the ``driftloop`` sub-commands: settings from ``--data-dir``, JSON output."""

from __future__ import annotations

import argparse
import json
import sys

from shared.config import DriftloopSettings, load_settings


def settings_from(args: argparse.Namespace) -> DriftloopSettings:
    """Settings from the environment, pointed at the local stack in ``--data-dir``."""
    return load_settings(DriftloopSettings, data_dir=args.data_dir)


def emit_json(data: object) -> None:
    """Print machine-readable output (``--json``) on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
