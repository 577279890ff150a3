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
from collections.abc import Mapping, Sequence
from typing import Any

from .runtime import RateLimitedLog, printable, printable_repr

__all__ = ["SeriesGuard", "count_refused"]

_MAX_LOGGED = 1000  # series names remembered as already logged (then each failure is counted only)


class SeriesGuard:
    """Counts series dropped because their mapping raised (:attr:`failed`); logs each name once."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        #: series dropped from an interval because mapping them raised
        self.failed = 0
        self._logged: set[str] = set()

    def dropped(self, summary: Mapping[str, Any], error: BaseException | str, why: str = "mapping it raised") -> None:
        """Note that ``summary``'s series was left out of its interval because of ``error``."""
        self.failed += 1
        name = str(summary.get("name"))
        if name in self._logged or len(self._logged) >= _MAX_LOGGED:
            return
        self._logged.add(name)
        text = error if isinstance(error, str) else f"{error.__class__.__name__}: {error}"
        self.log.error(
            "dropped series %s from its interval: %s (%s; %d series dropped so far)",
            printable_repr(name, 100),
            why,
            printable(text),
            self.failed,
        )


def count_refused(figures: dict[str, Any], refused: Sequence[tuple[str, Any]], log: RateLimitedLog) -> None:
    """Summary records the decoder refused alone: counted by reason in a worker's figures
    (``malformed_records``, ``malformed_by_reason``) and logged, rate-limited, the name escaped."""
    by_reason = figures["malformed_by_reason"]
    for _, problem in refused:
        by_reason[problem.reason] = by_reason.get(problem.reason, 0) + 1
    figures["malformed_records"] += len(refused)
    name, problem = refused[0]
    log.warning(
        "dropped malformed summary record %s (%s): %s (%d malformed records so far)",
        printable_repr(name, 100),
        problem.reason,
        printable(problem.message),
        figures["malformed_records"],
    )
