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

**Parts.** A destination that sends an interval as several requests (batches
of measurements, requests of at most N points, chunks of a stream) declares
them instead: :meth:`Destination.parts` splits the interval once, and
:meth:`Destination.send` sends one part. The delivery queue then remembers
which parts were accepted and retries only the others, so a failure in the
third of five requests never sends the first two again; it counts the parts
delivered, refused and cut off by a stop, the same way for every destination.
A destination without parts is one part, sent by ``post``: nothing changes
for it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .retry import Rejected
from .summary import Summary

#: why :meth:`Destination.lost` is told about parts never sent
CUT_OFF = "cut off at stop"
REFUSED = "refused with the whole interval"


@dataclass(frozen=True)
class Interval:
    """One flush interval's summaries; ``start`` and ``end`` are Unix seconds."""

    start: float
    end: float
    summaries: list[Summary]

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Part:
    """One piece of an interval a destination sends alone, accepted or refused as a whole.

    ``payload`` is the destination's own (a request body, a batch, the
    interval itself); ``points`` is how many data points it carries (the
    destination's unit: measurements, lines, samples; the series of an
    interval sent whole), counted when the part is delivered, refused or lost.
    """

    payload: Any
    points: int = 1


class Destination:
    """Where one worker's intervals go. Subclasses set :attr:`name` and implement :meth:`post`,
    or :meth:`parts` and :meth:`send` (see the module docstring)."""

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

    def parts(self, interval: Interval) -> Sequence[Part]:
        """The interval's parts, in sending order; called once per interval, in the delivery thread.

        The default is one part, the interval itself, sent by :meth:`post`.
        """
        return [Part(interval, len(interval.summaries))]

    def send(self, part: Part) -> Sequence[Part] | None:
        """Send one part: return (accepted), or raise Retryable / Rejected for this part alone.

        Returning parts says "this one is done; send these in its place,
        next": a batch split in halves to isolate a refused measurement, a
        request encoded again in a form the service takes. The default posts
        the interval of the one-part default.
        """
        self.post(part.payload)
        return None

    def post(self, interval: Interval) -> None:
        """Deliver one interval, or raise Retryable / Rejected (see the module docstring).

        A destination with parts need not implement it: this sends each part
        once, in order, without retrying (the delivery queue does the
        retrying, and never calls ``post`` for such a destination); a refused
        part does not stop the others, and is reported at the end.
        """
        if type(self).send is Destination.send:
            raise NotImplementedError(f"{type(self).__name__} implements neither post nor parts and send")
        pending: deque[Part] = deque(self.parts(interval))
        refused: list[str] = []
        while pending:
            part = pending.popleft()
            try:
                instead = self.send(part)
            except Rejected as rejection:
                refused.append(rejection.reason)
                if rejection.whole_interval and pending:
                    self.lost(list(pending), REFUSED)
                    pending.clear()
                continue
            if instead:
                pending.extendleft(reversed(instead))
        if refused:
            raise Rejected(refused[0] if len(refused) == 1 else f"{len(refused)} parts refused: {refused[0]}")

    def lost(self, parts: Sequence[Part], reason: str) -> None:
        """These parts will never be sent: :data:`CUT_OFF` by the stop deadline, or :data:`REFUSED`
        with a part whose rejection covered the whole interval.

        The delivery queue counts them already (``cut_off_parts``,
        ``cut_off_points``); a destination overrides this to keep figures of
        its own in step (statsd's ``lines_lost``). Called in the delivery
        thread, or by the worker when a stop window ends with a send running.
        """

    def close(self) -> None:
        """Release what :meth:`connect` opened (delivery thread, at exit)."""

    def figures(self) -> dict[str, Any]:
        """This destination's own figures for `zibrato status`.

        A ``"problems"`` list in them (reasons, as sentences) makes the worker unhealthy.
        """
        return {}


__all__ = ["CUT_OFF", "REFUSED", "Destination", "Interval", "Part"]
