"""STUB of the daemon engineer's zibrato/delivery.py (issue 12), per COMMON.md's contract.

Only the two exceptions a destination raises. When the daemon branch
(issue-11-12-daemon) is merged, its version of this file wins.
"""
from __future__ import annotations


class Retryable(Exception):
    """A transient failure: the runtime retries the interval with backoff."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class Rejected(Exception):
    """A permanent failure: the runtime logs it, counts it and drops the interval."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
