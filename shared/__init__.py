"""driftloop's common package: events, topics, bus, object stores, settings and errors.

Every service imports from here and from nowhere else in the project.
"""

from __future__ import annotations

__version__ = "0.1.0"
