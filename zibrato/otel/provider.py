"""``MeterProvider`` and ``Meter``: the OpenTelemetry metrics API recording through a Zibrato client.

``metrics.set_meter_provider(MeterProvider(z))`` is all an application (or
its ``opentelemetry-instrumentation-*`` packages) needs: every meter and
instrument made through the API from then on records through ``z``, whose
hot path, bounds and fork safety they inherit. Only ``opentelemetry-api`` is
imported, never the SDK.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import metrics
from opentelemetry.util.types import Attributes

from ..client import Zibrato
from ..protocol import is_valid_level
from . import process
from .observable import Collector, ObservableCounter, ObservableGauge, ObservableUpDownCounter, _Observable
from .series import Figures, attribute_tags
from .synchronous import Counter, Gauge, Histogram, UpDownCounter, _Recording, histogram_kind

__all__ = ["MeterProvider", "Meter"]

DEFAULT_CARDINALITY_LIMIT = 2_000  # attribute sets per instrument, as the SDK's default


class MeterProvider(metrics.MeterProvider):
    """An ``opentelemetry.metrics.MeterProvider`` whose instruments record through a Zibrato client.

    ``client`` is the :class:`~zibrato.Zibrato` to record through; without one,
    the provider builds its own from ``zibrato_kwargs`` (``host``, ``port``,
    ``source``, ``tags``...; the environment's ``$ZIBRATO_HOST`` / ``$ZIBRATO_PORT``
    otherwise) and closes it on :meth:`shutdown`. Every measurement goes to
    ``level``.

    ``scope_tag``: the instrumentation scope (the name given to ``get_meter``,
    e.g. ``opentelemetry.instrumentation.flask``) is dropped by default, as
    Zibrato's series are named by the instrument alone and a scope tag would
    only add series; ``scope_tag="otel.scope.name"`` (any tag key) tags every
    series of a meter with its name, plus the meter's attributes as tags.

    ``cardinality_limit`` bounds the attribute sets of each instrument; past
    it, measurements go to the ``otel.metric.overflow:true`` series, counted.
    Observable instruments' callbacks run every ``collect_interval`` seconds
    (default: the client's flush cadence rounded to a whole second, at least
    1 s) in a collector thread, each given at most ``callback_timeout``
    seconds (default: ``collect_interval``, at most 10 s).

    ``process_metrics=True`` adds the process's own CPU time, memory, threads,
    file descriptors and garbage collections as observable instruments
    (:mod:`zibrato.otel.process`).

    What the provider refused or diverted is counted: :meth:`figures`.
    """

    def __init__(
        self,
        client: Zibrato | None = None,
        *,
        level: str = "info",
        scope_tag: str | None = None,
        cardinality_limit: int = DEFAULT_CARDINALITY_LIMIT,
        collect_interval: float | None = None,
        callback_timeout: float | None = None,
        process_metrics: bool = False,
        **zibrato_kwargs: Any,
    ) -> None:
        if client is not None and zibrato_kwargs:
            raise TypeError(f"give a client or the arguments to build one, not both: {sorted(zibrato_kwargs)}")
        if not is_valid_level(level):
            raise ValueError(f"level must be 1-64 characters of A-Z a-z 0-9 _ . -, got {level!r}")
        if isinstance(cardinality_limit, bool) or not isinstance(cardinality_limit, int) or cardinality_limit < 1:
            raise ValueError(f"cardinality_limit must be a positive integer, got {cardinality_limit!r}")
        if scope_tag is not None and (not isinstance(scope_tag, str) or not scope_tag or ":" in scope_tag):
            raise ValueError(f"scope_tag must be a tag key (no ':'), got {scope_tag!r}")
        self._owns_client = client is None
        self.client = Zibrato(**zibrato_kwargs) if client is None else client
        self.level, self.scope_tag, self.cardinality_limit = level, scope_tag, cardinality_limit
        if collect_interval is None:
            collect_interval = max(1.0, float(round(self.client.interval)))
        if callback_timeout is None:
            callback_timeout = min(collect_interval, 10.0)
        if not collect_interval > 0 or not callback_timeout > 0:
            raise ValueError("collect_interval and callback_timeout must be positive")
        self.collect_interval, self.callback_timeout = float(collect_interval), float(callback_timeout)
        #: refusals and diversions, counted (read them with figures())
        self.figures_ = Figures()
        self._collector = Collector(self.figures_, self.collect_interval, self.callback_timeout)
        self._meters: dict[tuple[Any, ...], Meter] = {}
        self._recording: list[_Recording] = []
        self._lock = threading.Lock()
        _live_providers.add(self)
        if process_metrics:
            process.register(self.get_meter(process.SCOPE))

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> Meter:
        """The meter of an instrumentation scope (one per name, version, schema URL and attributes)."""
        try:
            key: tuple[Any, ...] = (name, version, schema_url, tuple(sorted((attributes or {}).items())))
            hash(key)
        except TypeError:
            key = (name, version, schema_url, repr(attributes))
        with self._lock:
            meter = self._meters.get(key)
            if meter is None:
                meter = self._meters[key] = Meter(self, name, version, schema_url, attributes)
        return meter

    def figures(self) -> dict[str, int]:
        """What this provider refused or diverted in this process, by reason (counts).

        ``refused.negative`` (a Counter given a negative value, which the API
        forbids; or a negative duration), ``refused.value`` (not a finite
        number), ``refused.attributes`` (the client's tag rules refused the set),
        ``refused.instruments`` (a name the client refuses: a no-op instrument
        was returned), ``overflowed`` (measurements recorded into the
        ``otel.metric.overflow:true`` series), ``callbacks.failed``,
        ``callbacks.timed_out``, ``callbacks.skipped`` (a hung callback not
        called again until it returns) and ``observations.resets``.
        """
        return self.figures_.snapshot()

    def bucket_advisories(self) -> dict[str, tuple[float, ...]]:
        """Each Histogram's ``explicit_bucket_boundaries_advisory``, by instrument name."""
        with self._lock:
            return {
                instrument.name: instrument.explicit_bucket_boundaries_advisory
                for instrument in self._recording
                if isinstance(instrument, Histogram) and instrument.explicit_bucket_boundaries_advisory is not None
            }

    def collect(self) -> None:
        """Run every observable instrument's callbacks now, in this thread (bounded by callback_timeout)."""
        self._collector.collect()

    def force_flush(self, timeout_millis: float = 30_000) -> bool:
        """Collect the observable instruments, then hand everything to ZeroMQ (``z.flush``)."""
        self.collect()
        return self.client.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Stop the collector (after a last collection); close the client if the provider built it."""
        self._collector.stop(final_collection=True)
        if self._owns_client:
            self.client.close()

    # --- what the meters call -------------------------------------------------

    def _register(self, instrument: _Recording | _Observable) -> None:
        if isinstance(instrument, _Observable):
            self._collector.add(instrument)
        else:
            with self._lock:
                self._recording.append(instrument)

    def _after_fork_in_child(self) -> None:
        """No thread survived the fork: fresh locks and figures; the collector restarts lazily,
        at the child's first synchronous measurement or new instrument (no logging, no locks here)."""
        self._lock = threading.Lock()
        self.figures_.reset_after_fork()
        for meter in self._meters.values():
            meter._lock = threading.Lock()
        for instrument in self._recording:
            instrument._table.reset_after_fork()
        self._collector.after_fork_in_child()
        if self._collector.instruments:
            armed = [(instrument, instrument._emit) for instrument in self._recording]
            wake = _Wake(self._collector, armed)
            for instrument, emit in armed:
                instrument._emit = wake.wrap(emit)


class _Wake:
    """The child's first synchronous measurement restarts the collector, then records as usual."""

    def __init__(self, collector: Collector, armed: list[tuple[_Recording, Callable[..., None]]]) -> None:
        self.collector, self.armed = collector, armed

    def wrap(self, emit: Callable[..., None]) -> Callable[..., None]:
        def first_in_child(*args: Any) -> None:
            self.wake()
            emit(*args)

        return first_in_child

    def wake(self) -> None:
        for instrument, emit in self.armed:
            instrument._emit = emit
        self.collector.ensure_running()


class Meter(metrics.Meter):
    """Makes the instruments of one scope; asking twice for the same instrument returns the same one."""

    def __init__(
        self, provider: MeterProvider, name: str, version: str | None, schema_url: str | None, attributes: Attributes
    ) -> None:
        super().__init__(name, version=version, schema_url=schema_url)
        self.provider = provider
        tags: set[str] = set()
        if provider.scope_tag is not None:
            tags.update(attribute_tags({provider.scope_tag: name, **(attributes or {})}))
        self.base_tags = tuple(sorted(tags))
        self._instruments: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def _instrument(self, kind: type[Any], noop: Callable[..., Any], name: str, **arguments: Any) -> Any:
        """The instrument ``kind`` of that name, unit and description: made once, then the same one.

        A name the client refuses gets the API's no-op instrument, counted: never an exception.
        """
        key = (
            kind,
            name.strip().lower() if isinstance(name, str) else name,
            arguments["unit"],
            arguments["description"],
        )
        with self._lock:
            existing = self._instruments.get(key)
            if existing is not None:
                return existing
            try:
                instrument = kind(self, name, **arguments)
            except (TypeError, ValueError) as error:
                self.provider.figures_.add("refused.instruments", "instrument %r refused: %s", name, error)
                return noop(name if isinstance(name, str) else "invalid", **arguments)
            self._instruments[key] = instrument
        self.provider._register(instrument)
        return instrument

    def create_counter(self, name: str, unit: str = "", description: str = "") -> metrics.Counter:
        instrument: metrics.Counter = self._instrument(
            Counter, metrics.NoOpCounter, name, unit=unit, description=description
        )
        return instrument

    def create_up_down_counter(self, name: str, unit: str = "", description: str = "") -> metrics.UpDownCounter:
        instrument: metrics.UpDownCounter = self._instrument(
            UpDownCounter, metrics.NoOpUpDownCounter, name, unit=unit, description=description
        )
        return instrument

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> metrics.Histogram:
        instrument: metrics.Histogram = self._instrument(
            histogram_kind(unit),
            metrics.NoOpHistogram,
            name,
            unit=unit,
            description=description,
            explicit_bucket_boundaries_advisory=explicit_bucket_boundaries_advisory,
        )
        return instrument

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> metrics._Gauge:
        """The synchronous Gauge (API 1.23+)."""
        noop = metrics._NoOpGauge
        instrument: metrics._Gauge = self._instrument(Gauge, noop, name, unit=unit, description=description)
        return instrument

    # Asking again for an existing observable returns it and ignores the new callbacks, as the SDK does.

    def create_observable_counter(
        self, name: str, callbacks: Sequence[Any] | None = None, unit: str = "", description: str = ""
    ) -> metrics.ObservableCounter:
        instrument: metrics.ObservableCounter = self._instrument(
            ObservableCounter,
            metrics.NoOpObservableCounter,
            name,
            callbacks=callbacks,
            unit=unit,
            description=description,
        )
        return instrument

    def create_observable_up_down_counter(
        self, name: str, callbacks: Sequence[Any] | None = None, unit: str = "", description: str = ""
    ) -> metrics.ObservableUpDownCounter:
        instrument: metrics.ObservableUpDownCounter = self._instrument(
            ObservableUpDownCounter,
            metrics.NoOpObservableUpDownCounter,
            name,
            callbacks=callbacks,
            unit=unit,
            description=description,
        )
        return instrument

    def create_observable_gauge(
        self, name: str, callbacks: Sequence[Any] | None = None, unit: str = "", description: str = ""
    ) -> metrics.ObservableGauge:
        instrument: metrics.ObservableGauge = self._instrument(
            ObservableGauge,
            metrics.NoOpObservableGauge,
            name,
            callbacks=callbacks,
            unit=unit,
            description=description,
        )
        return instrument


# --- process lifecycle ------------------------------------------------------------

_live_providers: weakref.WeakSet[MeterProvider] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for provider in list(_live_providers):
        provider._after_fork_in_child()


def _last_collection_at_exit() -> None:
    """Send the observable instruments' last deltas before the client's own exit flush
    (registered after it, so it runs first)."""
    for provider in list(_live_providers):
        try:
            provider._collector.stop(final_collection=True)
        except Exception:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_last_collection_at_exit)
