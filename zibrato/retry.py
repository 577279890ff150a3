"""What a failed delivery attempt means, how long to wait before the next one, and how long one may take.

A destination raises :class:`Retryable` (transient: retried after a
:class:`Backoff`, at least as long as the service's ``Retry-After``, read by
:func:`parse_retry_after`) or :class:`Rejected` (permanent: logged, counted,
dropped). The delivery queue (:mod:`zibrato.delivery`, which re-exports every
name here) applies them; they live apart so that a destination, the HTTP
client and the queue share one vocabulary without importing the queue.
:func:`request_timeout` is the timeout of one request: never past the stop
deadline of the delivery thread it runs in.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Protocol

from .runtime import printable

MIN_RETRY_AFTER_CAP = 300.0  # seconds of Retry-After honoured even when the backoff cap is less
MIN_ATTEMPT_SECONDS = 0.1  # below this much time left before the stop deadline, no attempt is made


class Retryable(Exception):
    """A transient failure: the queue retries the interval (or the part of it) after a backoff.

    ``retry_after`` (seconds) is the service's own ``Retry-After``; ``alarm``
    marks failures an operator must fix (credentials, a wrong URL): logged as
    errors rather than warnings.
    """

    def __init__(
        self, reason: str, retry_after: float | None = None, *, alarm: bool = False, status: int | str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason, self.retry_after, self.alarm, self.status = reason, retry_after, alarm, status


class Rejected(Exception):
    """A permanent failure: the interval (or the part of it) is logged, counted and dropped.

    ``whole_interval``: the refusal is of every request alike (a missing
    database, a wrong path), so the interval's parts not yet sent are dropped
    with this one rather than each sent to be refused in turn.
    """

    def __init__(self, reason: str, *, whole_interval: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.whole_interval = reason, whole_interval


class Backoff:
    """Exponential backoff with jitter: between half and all of min(cap, base x 2^(n-1)).

    A ``Retry-After`` is honoured up to ``retry_after_cap`` (by default the
    larger of the cap and 300 s): the service knows better when to come back.
    """

    def __init__(
        self,
        base: float = 1.0,
        cap: float = 60.0,
        retry_after_cap: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff must be positive, its cap at least its base")
        self.base, self.cap = base, cap
        self.retry_after_cap = max(cap, MIN_RETRY_AFTER_CAP) if retry_after_cap is None else retry_after_cap
        self.rng = rng or random.Random()

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        delay = min(self.cap, self.base * 2 ** min(failures - 1, 60))
        delay = self.rng.uniform(delay / 2, delay)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_cap))
        return delay


def parse_retry_after(header: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110)."""
    if not header:
        return None
    header = header.strip()
    try:
        seconds = float(header)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as every HTTP-date is
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Deadline(Protocol):
    """What bounds a delivery thread's requests: the delivery queue, while it runs."""

    def time_left(self) -> float | None:
        """Seconds before the stop deadline; None while not stopping."""


_current = threading.local()


def bind_deadline(deadline: Deadline | None) -> None:
    """The delivery thread says whose stop deadline bounds its requests (None: no one's)."""
    _current.deadline = deadline


def request_timeout(limit: float) -> float:
    """The timeout for one request of the send in progress: ``limit``, or less when stopping.

    Raises :class:`Retryable` when the stop deadline leaves no time for a
    request (the queue then gives up and counts what is cut off). Outside a
    delivery thread it is ``limit``.
    """
    deadline: Deadline | None = getattr(_current, "deadline", None)
    left = None if deadline is None else deadline.time_left()
    if left is None:
        return limit
    if left < MIN_ATTEMPT_SECONDS:
        raise Retryable("stop deadline reached", status="stopping")
    return min(limit, left)


def describe(error: BaseException) -> str:
    """An exception as one log-safe phrase."""
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return printable(str(error) or error.__class__.__name__)


__all__ = [
    "MIN_ATTEMPT_SECONDS",
    "MIN_RETRY_AFTER_CAP",
    "Backoff",
    "Deadline",
    "Rejected",
    "Retryable",
    "bind_deadline",
    "describe",
    "parse_retry_after",
    "request_timeout",
]
