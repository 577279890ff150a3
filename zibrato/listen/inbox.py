"""What every input of the listener adds to: the parsers, the pending values, the figures, one lock.

The listener's loop (UDP, TCP, unix datagrams), the l2met drain's thread and
the ``--stdin`` reader all feed one :class:`Inbox`; the loop takes its
pending values at each flush (:meth:`Inbox.take`). The TCP connections and
the drain depend on this, not on the listener, so that no module of
:mod:`zibrato.listen` imports the servers that use it.
"""

from __future__ import annotations

import logging
import threading

from ..runtime import RateLimitedLog
from . import statsd as statsd_lines
from .config import ListenConfig
from .l2met import L2metParser
from .series import Pending, RejectHook, Rejects

log = logging.getLogger("zibrato.listen")


class Inbox:
    """The parsers and what they parsed since the last flush; figures counted by every input."""

    def __init__(self, config: ListenConfig) -> None:
        self.config = config
        self._reject_log = RateLimitedLog(log)
        self.statsd_rejects = Rejects(self._rejected("statsd"))
        self.l2met_rejects = Rejects(self._rejected("l2met"))
        self.statsd = statsd_lines.StatsdParser(
            config.level, config.gauge_sign, config.max_line_length, config.timestamp_window, self.statsd_rejects
        )
        self.l2met = L2metParser(config.level, self.l2met_rejects)
        self.pending: Pending = {}
        self.lock = threading.Lock()
        #: counts of the inputs (the loop's own are added without the lock: it is their only writer)
        self.figures: dict[str, int] = {
            "datagrams": 0,
            "tcp_connections": 0,
            "tcp_refused": 0,
            "tcp_evicted": 0,
            "tcp_idle_closed": 0,
            "drain_requests": 0,
            "drain_refused": 0,
            "drain_invalid": 0,
            "kernel_drops": 0,
            "flushes": 0,
        }

    def feed_statsd(self, data: bytes) -> None:
        """statsd lines (several, newline-separated) from any socket."""
        with self.lock:
            self.statsd.feed(data, self.pending)

    def feed_drain(self, body: bytes, prefix: str | None, source_prefix: str | None) -> int:
        """One l2met drain request's body; the measurements taken."""
        with self.lock:
            self.figures["drain_requests"] += 1
            return self.l2met.feed_drain(body, self.pending, prefix, source_prefix)

    def feed_line(self, line: str) -> None:
        """One l2met log line (``--stdin``)."""
        with self.lock:
            self.l2met.feed_line(line, self.pending)

    def count(self, key: str) -> None:
        """Add one to a figure from another thread (the drain's)."""
        with self.lock:
            self.figures[key] += 1

    def take(self) -> Pending:
        """What was parsed since the last take (the flush publishes it)."""
        with self.lock:
            pending, self.pending = self.pending, {}
        return pending

    def _rejected(self, kind: str) -> RejectHook:
        def hook(reason: str, what: object) -> None:
            shown = what if isinstance(what, (bytes, str)) else str(what)
            self._reject_log.warning("rejected %s input (%s): %.200r", kind, reason, shown)

        return hook


__all__ = ["Inbox"]
