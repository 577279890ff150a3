"""What a worker delivers to: the small interface every destination implements.

The runtime (:mod:`zibrato.worker`) subscribes, validates, aggregates and
keeps the schedule; the delivery queue (:mod:`zibrato.delivery`) retries,
backs off, honours the stop deadline and counts. A destination only maps an
interval to its service's format and sends it::

    class Graphite(Destination):
        name = "graphite"

        def post(self, interval: Interval) -> None:
            try:
                self.sock.sendall(lines(interval))
            except OSError as error:
                raise Retryable(str(error)) from None   # the queue retries with backoff

Constructing a destination opens nothing (no socket, no ZeroMQ context), so a
test can build one and call its mapping directly. ``connect`` runs once in the
delivery thread; ``post`` is called for each interval, in order, and either
returns (delivered) or raises :class:`zibrato.delivery.Retryable` (transient:
retried with backoff) or :class:`zibrato.delivery.Rejected` (permanent:
logged, counted, dropped). Any other exception counts as retryable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .summary import Summary


@dataclass(frozen=True)
class Interval:
    """One flush interval's summaries; ``start`` and ``end`` are Unix seconds."""

    start: float
    end: float
    summaries: list[Summary]

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Destination:
    """Where one worker's intervals go. Subclasses set :attr:`name` and implement :meth:`post`."""

    name: str = "destination"
    #: True: timer summaries also carry their raw ``values`` (statsd forwards every value)
    needs_values: bool = False
    #: True: series of different levels are kept apart and every summary carries ``"level"``
    #: (OTLP makes it an attribute, Prometheus a label); False: a series merges across levels
    needs_level: bool = False
    #: keys of :meth:`figures` also published as self-metrics (``zibrato.<name>.<key>`` gauges)
    self_figures: tuple[str, ...] = ()

    def connect(self) -> None:
        """Open the connection (once, in the delivery thread). A failure here is retried at post."""

    def post(self, interval: Interval) -> None:
        """Deliver one interval, or raise Retryable / Rejected (see the module docstring)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what :meth:`connect` opened (delivery thread, at exit)."""

    def figures(self) -> dict[str, Any]:
        """This destination's own figures for `zibrato status`.

        A ``"problems"`` list in them (reasons, as sentences) makes the worker unhealthy.
        """
        return {}


__all__ = ["Destination", "Interval"]
