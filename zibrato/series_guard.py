"""Each series mapped under its own guard: one that raises is dropped alone, counted, logged once.

Why: a destination maps an interval's summaries one series at a time, and
some keep state across intervals (OTLP cumulative totals, Prometheus'
running series). The decoder refuses forged summaries
(:mod:`zibrato.summary_check`); this is the second line of defence, for an
error nobody foresaw: it must cost that one series, never the interval, the
other series' state or the process.
"""

from __future__ import annotations

import logging
from typing import Any

from .runtime import printable, printable_repr

__all__ = ["SeriesGuard"]

_MAX_LOGGED = 1000  # series names remembered as already logged (then each failure is counted only)


class SeriesGuard:
    """Counts series dropped because their mapping raised (:attr:`failed`); logs each name once."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        #: series dropped from an interval because mapping them raised
        self.failed = 0
        self._logged: set[str] = set()

    def dropped(self, summary: dict[str, Any], error: BaseException) -> None:
        """Note that ``summary``'s series was left out of its interval because of ``error``."""
        self.failed += 1
        name = str(summary.get("name"))
        if name in self._logged or len(self._logged) >= _MAX_LOGGED:
            return
        self._logged.add(name)
        self.log.error(
            "dropped series %s from the interval: mapping it raised %s (%d series dropped so far)",
            printable_repr(name, 100),
            printable(f"{error.__class__.__name__}: {error}"),
            self.failed,
        )
