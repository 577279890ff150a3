"""The synchronous instruments: Counter, UpDownCounter, Histogram, Gauge.

Each is a thin object that validated its series when it was made; a
measurement is one comparison with the last attribute set it saw (or, when
the set changed, one lookup of its tags in a dict keyed by the tuple of the
attributes' items) and one call into the client's public recording method
(``z.count``, ``z.timing``, ``z.histogram``, ``z.gauge``), whose own series
cache then hits. Anything unusual (a new attribute set, a
bad value, an unhashable attribute) falls to :meth:`_Recording._record_slowly`,
which validates, counts what it refuses and never raises.

``_emit`` (the client's method) is an attribute so that the provider can put a
one-shot wrapper in its place after ``fork()``: the child's first measurement
restarts the observable instruments' collector, as the client's first
measurement in a child starts its sender.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics

# The API's synchronous Gauge (1.23+), exported as ``_Gauge`` while the API calls it experimental.
from opentelemetry.metrics import _Gauge as _ApiGauge

from ..protocol import COUNTER, GAUGE, HISTOGRAM, TIMER
from .scope import InstrumentScope
from .series import SeriesTable

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.util.types import Attributes

#: time units a Histogram may declare, and the factor to seconds (a Zibrato timer is in seconds)
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_LOOKUP_MISSES = (KeyError, TypeError, AttributeError, ValueError)


class _Negative(Exception):
    """A negative value where the API allows none: its own count, apart from bad values."""


class _Recording:
    """What the synchronous instruments share: the series table and the refusing slow path."""

    kind = COUNTER
    negative_allowed = True

    def __init__(
        self, meter: InstrumentScope, name: str, unit: str, description: str, type_: str, emit: Callable[..., None]
    ):
        provider = meter.provider
        self.name, self.unit, self.description = name, unit or "", description or ""
        self._level, self._name, self._figures = provider.level, name, provider.figures_
        self._zibrato_unit = zibrato_unit(unit) if type_ == HISTOGRAM else None
        self._table = SeriesTable(
            provider.client,
            provider.level,
            type_,
            name,
            meter.base_tags,
            provider.figures_,
            provider.cardinality_limit,
            self._zibrato_unit,
        )
        self._tags = self._table.cache
        self._plain = meter.base_tags
        #: the last attribute set recorded, as its cache entry: (a copy of the attributes, tags)
        self._last = self._table.plain
        self._emit = emit

    def _value(self, amount: Any) -> float:
        """The number the client records, or raise (the slow path's check)."""
        if isinstance(amount, bool) or not hasattr(type(amount), "__float__"):  # numpy's, Decimal: no str
            raise TypeError(f"not a number: {amount!r}")
        number: float = amount if isinstance(amount, (int, float)) else float(amount)
        try:
            finite = math.isfinite(number)
        except OverflowError:  # an integer beyond a float's range
            finite = False
        if not finite:
            raise ValueError(f"not finite: {amount!r}")
        if number < 0 and not self.negative_allowed:
            raise _Negative(number)
        return number

    def _send(self, tags: tuple[str, ...], value: float) -> None:
        self._emit(self._level, self._name, value, None, tags)

    def _record_slowly(self, amount: Any, attributes: Any) -> None:
        tags = self._table.tags(attributes)
        if tags is None:
            return
        try:
            self._send(tags, self._value(amount))
        except _Negative:
            self._figures.add("refused.negative", "%s: negative value %r refused", self._name, amount)
        except (TypeError, ValueError) as error:
            self._figures.add("refused.value", "%s: value refused: %s", self._name, error)

    def __repr__(self) -> str:
        return f"<zibrato.otel.{type(self).__name__} {self._name!r}>"

    def _record_as_given(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        """The hot path of the kinds that record a value as given, either sign (UpDownCounter.add,
        Gauge.set: the same function, not a call into it, so a measurement pays no extra call)."""
        try:
            last = self._last
            if attributes == last[0]:  # the same set as the last call: no key to build
                tags = last[1]
            elif attributes:
                self._last = last = self._tags[tuple(attributes.items())]
                tags = last[1]
            else:
                tags = self._plain
            self._emit(self._level, self._name, amount, None, tags)
            return
        except _LOOKUP_MISSES:
            pass
        self._record_slowly(amount, attributes)


class Counter(_Recording, metrics.Counter):
    """A Zibrato counter of the increments; a negative increment is refused and counted."""

    negative_allowed = False

    def __init__(self, meter: InstrumentScope, name: str, unit: str = "", description: str = "") -> None:
        super().__init__(meter, name, unit, description, COUNTER, meter.provider.client.count)

    def add(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        try:
            last = self._last
            if attributes == last[0]:  # the same set as the last call: no key to build
                tags = last[1]
            elif attributes:
                self._last = last = self._tags[tuple(attributes.items())]
                tags = last[1]
            else:
                tags = self._plain
            if amount >= 0:
                self._emit(self._level, self._name, amount, None, tags)
                return
        except _LOOKUP_MISSES:
            pass
        self._record_slowly(amount, attributes)


class UpDownCounter(_Recording, metrics.UpDownCounter):
    """A Zibrato counter of the changes, either sign."""

    def __init__(self, meter: InstrumentScope, name: str, unit: str = "", description: str = "") -> None:
        super().__init__(meter, name, unit, description, COUNTER, meter.provider.client.count)

    add = _Recording._record_as_given


class Histogram(_Recording, metrics.Histogram):
    """A Zibrato timer (seconds) when the unit is a time, else a Zibrato histogram with its unit.

    This class records seconds (unit ``s``); :func:`histogram_kind` picks it or
    one of its two subclasses by unit, so that a measurement takes no branch on it.
    ``explicit_bucket_boundaries_advisory`` is kept on the instrument (and listed
    by ``MeterProvider.bucket_advisories()``) for a destination that wants classic
    buckets; the sketch the worker keeps carries the whole distribution anyway.
    """

    def __init__(
        self,
        meter: InstrumentScope,
        name: str,
        unit: str = "",
        description: str = "",
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> None:
        client = meter.provider.client
        self._scale = TIME_UNITS.get(unit or "")
        self.negative_allowed = self._scale is None  # a duration cannot be negative
        if self._scale is not None:
            super().__init__(meter, name, unit, description, TIMER, client.timing)
        else:
            super().__init__(meter, name, unit, description, HISTOGRAM, client.histogram)
        advisory = explicit_bucket_boundaries_advisory
        self.explicit_bucket_boundaries_advisory = None if advisory is None else tuple(advisory)

    def record(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        """Seconds, as they come (the unit ``s``: the HTTP conventions' request durations)."""
        try:
            last = self._last
            if attributes == last[0]:  # the same set as the last call: no key to build
                tags = last[1]
            elif attributes:
                self._last = last = self._tags[tuple(attributes.items())]
                tags = last[1]
            else:
                tags = self._plain
            if amount >= 0:
                self._emit(self._level, self._name, amount, None, tags)
                return
        except _LOOKUP_MISSES:
            pass
        self._record_slowly(amount, attributes)

    def _send(self, tags: tuple[str, ...], value: float) -> None:
        if self._scale is None:
            self._emit(self._level, self._name, value, self._zibrato_unit, None, tags)
        else:
            self._emit(self._level, self._name, value * self._scale, None, tags)


class ScaledTimeHistogram(Histogram):
    """A Histogram of ``ms``, ``us`` or ``ns``: converted to seconds."""

    def record(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        try:
            last = self._last
            if attributes == last[0]:
                tags = last[1]
            elif attributes:
                self._last = last = self._tags[tuple(attributes.items())]
                tags = last[1]
            else:
                tags = self._plain
            if amount >= 0:
                self._emit(self._level, self._name, amount * self._scale, None, tags)  # type: ignore[operator]
                return
        except _LOOKUP_MISSES:
            pass
        self._record_slowly(amount, attributes)


class ValueHistogram(Histogram):
    """A Histogram of anything but time: a Zibrato histogram with the unit kept, values of either sign."""

    def record(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        try:
            last = self._last
            if attributes == last[0]:
                tags = last[1]
            elif attributes:
                self._last = last = self._tags[tuple(attributes.items())]
                tags = last[1]
            else:
                tags = self._plain
            self._emit(self._level, self._name, amount, self._zibrato_unit, None, tags)
            return
        except _LOOKUP_MISSES:
            pass
        self._record_slowly(amount, attributes)


def histogram_kind(unit: str | None) -> type[Histogram]:
    """The Histogram class for a unit: each records with no branch on the unit."""
    scale = TIME_UNITS.get(unit or "")
    if scale is None:
        return ValueHistogram
    return Histogram if scale == 1.0 else ScaledTimeHistogram


class Gauge(_Recording, _ApiGauge):
    """A Zibrato gauge: the last value of a flush interval wins."""

    def __init__(self, meter: InstrumentScope, name: str, unit: str = "", description: str = "") -> None:
        super().__init__(meter, name, unit, description, GAUGE, meter.provider.client.gauge)

    set = _Recording._record_as_given


def zibrato_unit(unit: str | None) -> str | None:
    """An OpenTelemetry (UCUM) unit as a Zibrato unit: ``{request}`` -> ``request``, ``By`` stays.

    A Zibrato unit is 1-64 characters of ``A-Za-z0-9_./%-``; other characters become ``_``.
    """
    if not unit:
        return None
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_./%-") else "_" for c in unit.strip("{}"))
    return cleaned[:64] or None
