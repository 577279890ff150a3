"""STUB of the daemon engineer's zibrato/destination.py (issue 12), per COMMON.md's contract.

Only the two names the OTLP and Prometheus destinations build on. When the
daemon branch (issue-11-12-daemon) is merged, its version of this file wins.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """One flush interval: [start, end) in Unix seconds and its summaries."""

    start: float
    end: float
    summaries: list


class Destination:
    """Where a worker delivers; constructing one opens nothing."""

    name: str = "destination"
    needs_values: bool = False

    def connect(self) -> None:
        """Open what delivery needs (called once, in the delivery thread)."""

    def post(self, interval: Interval) -> None:
        """Deliver one interval, or raise delivery.Retryable / delivery.Rejected."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what connect() opened."""

    def figures(self) -> dict:
        """This destination's own figures for `zibrato status`."""
        return {}
