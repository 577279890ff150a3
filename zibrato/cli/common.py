"""What the tool commands (demo, status, keys) share; daemons are built from specs (zibrato.components)."""

from __future__ import annotations

from ..components.builder import CONTEXT_SETTINGS
from ..components.fields import MAX_FLUSH, MIN_FLUSH, POSITIVE_SECONDS, Seconds

__all__ = ["CONTEXT_SETTINGS", "MAX_FLUSH", "MIN_FLUSH", "POSITIVE_SECONDS", "Seconds"]
