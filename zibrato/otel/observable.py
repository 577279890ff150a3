"""The asynchronous instruments and the collector thread that calls their callbacks.

The API's observable instruments are callbacks that report a value when
asked: ``callback(CallbackOptions) -> Iterable[Observation]``, or a generator
that is sent the options. The provider asks once per ``collect_interval``,
in a small collector thread of its own, never on the application's threads.

* ``ObservableCounter`` and ``ObservableUpDownCounter`` report cumulative
  totals; Zibrato counters carry deltas, so each attribute set's previous
  total is kept: its first observation is the baseline (nothing sent), later
  ones send the difference, and a counter whose total went down was reset
  (its new total is sent, and the reset counted).
* ``ObservableGauge`` sends each observation as a Zibrato gauge.

A callback runs in a runner thread while the collector waits at most
``callback_timeout`` for it. One that raises is counted and logged (once a
minute); one that hangs is counted, left to its runner (which is retired: a
fresh one runs the other callbacks), and not called again until it returns.
So neither stops the others, and the collector's own loop cannot hang.
"""

from __future__ import annotations

import math
import queue
import threading
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from ..protocol import COUNTER, GAUGE
from .scope import InstrumentScope
from .series import Figures, SeriesTable, attribute_key


class _Callback:
    """One registered callback: a function of the options, or a primed generator."""

    def __init__(self, callback: Any) -> None:
        self.label = getattr(callback, "__qualname__", None) or repr(callback)
        if isinstance(callback, types.GeneratorType):
            next(callback)  # to its first ``options = yield``, as the SDK does
            self.call: Callable[[CallbackOptions], Iterable[Observation]] = callback.send
        else:
            self.call = callback
        self.running = False  # set by the runner thread while it is inside the callback


class _Observable:
    """What the three observable kinds share: callbacks, a series table, observation checks."""

    type_ = COUNTER
    cumulative = True
    monotonic = True

    def __init__(
        self,
        meter: InstrumentScope,
        name: str,
        callbacks: Sequence[Any] | None = None,
        unit: str = "",
        description: str = "",
    ):
        provider = meter.provider
        self.name, self.unit, self.description = name, unit or "", description or ""
        self._level, self._figures, self._client = provider.level, provider.figures_, provider.client
        self._table = SeriesTable(
            provider.client,
            provider.level,
            self.type_,
            name,
            meter.base_tags,
            provider.figures_,
            provider.cardinality_limit,
        )
        self.callbacks = [_Callback(callback) for callback in callbacks or ()]
        self._totals: dict[Any, float] = {}  # attribute set -> last cumulative total

    def observe(self, observations: Iterable[Observation]) -> None:
        """Record what one callback reported (in the collector thread)."""
        for observation in observations:
            value = getattr(observation, "value", None)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                self._figures.add("refused.value", "%s: observation %r refused", self.name, observation)
                continue
            tags = self._table.tags(getattr(observation, "attributes", None))
            if tags is None:
                continue
            if not self.cumulative:
                self._client.gauge(self._level, self.name, value, None, tags)
                continue
            key = tags if tags is not self._table.overflow_tags else (tags, attribute_key_or_none(observation))
            last = self._totals.get(key)
            if last is None and len(self._totals) >= 4 * self._table.limit:
                self._figures.add("overflowed", "%s: too many attribute sets to turn into deltas", self.name)
                continue
            self._totals[key] = value
            if last is None:
                continue  # the baseline: what was counted before we looked is not ours to send
            delta = value - last
            if delta < 0 and self.monotonic:
                self._figures.add("observations.resets")
                delta = value  # counted again from zero since the reset
            self._client.count(self._level, self.name, delta, None, tags)

    def forget_totals(self) -> None:
        """After fork: the child's first observation is its own baseline."""
        self._totals = {}
        for callback in self.callbacks:
            callback.running = False
        self._table.reset_after_fork()

    def __repr__(self) -> str:
        return f"<zibrato.otel.{type(self).__name__} {self.name!r}>"


def attribute_key_or_none(observation: object) -> object:
    try:
        return attribute_key(getattr(observation, "attributes", None))
    except TypeError:
        return None


class ObservableCounter(_Observable, metrics.ObservableCounter):
    """Cumulative, monotonic totals: sent as Zibrato counter deltas."""


class ObservableUpDownCounter(_Observable, metrics.ObservableUpDownCounter):
    """Cumulative totals that may go down: sent as Zibrato counter deltas of either sign."""

    monotonic = False


class ObservableGauge(_Observable, metrics.ObservableGauge):
    """Current values: sent as Zibrato gauges."""

    type_ = GAUGE
    cumulative = False


# --- running the callbacks ----------------------------------------------------


class _Job:
    __slots__ = ("callback", "options", "done", "observations", "error")

    def __init__(self, callback: _Callback, options: CallbackOptions) -> None:
        self.callback, self.options = callback, options
        self.done = threading.Event()
        self.observations: list[Observation] | None = None
        self.error: BaseException | None = None


class _Runner:
    """A daemon thread that runs callbacks one at a time; retired when one hangs."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="zibrato-otel-callbacks", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            job.callback.running = True
            try:
                job.observations = list(job.callback.call(job.options))
            except BaseException as error:
                job.error = error
            finally:
                job.callback.running = False
                job.done.set()

    def retire(self) -> None:
        """Let the thread end once its hung callback returns (if ever)."""
        self.jobs.put(None)


class Collector:
    """Calls every observable instrument's callbacks once per interval, in its own thread."""

    def __init__(self, figures: Figures, interval: float, callback_timeout: float) -> None:
        self.figures, self.interval, self.callback_timeout = figures, interval, callback_timeout
        self.instruments: list[_Observable] = []
        self._thread: threading.Thread | None = None
        self._runner: _Runner | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # instruments and starting
        self._collect_lock = threading.Lock()  # one collection at a time (thread, collect(), exit)
        self._closed = False

    def add(self, instrument: _Observable) -> None:
        with self._lock:
            self.instruments.append(instrument)
        self.ensure_running()

    def ensure_running(self) -> None:
        """Start the thread if there is something to observe and it is not running (a child)."""
        with self._lock:
            if self._thread is not None or self._closed or not self.instruments:
                return
            self._thread = threading.Thread(target=self._loop, name="zibrato-otel-collector", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        stop = self._stop
        while not stop.wait(self.interval):
            try:
                self.collect()
            except Exception:  # a loop that cannot die: say why once a minute, keep the schedule
                self.figures.add("callbacks.failed", "the collector's loop failed; it goes on", exc_info=True)

    def collect(self) -> None:
        """Call every callback once (bounded: hung ones are skipped) and record what they report."""
        options = CallbackOptions(timeout_millis=self.callback_timeout * 1000)
        with self._collect_lock:
            with self._lock:
                instruments = list(self.instruments)
            for instrument in instruments:
                for callback in instrument.callbacks:
                    observations = self._call(callback, options, instrument.name)
                    if observations is not None:
                        instrument.observe(observations)

    def _call(self, callback: _Callback, options: CallbackOptions, name: str) -> list[Observation] | None:
        if callback.running:  # still inside the call that timed out earlier
            self.figures.add("callbacks.skipped")
            return None
        if self._runner is None:
            try:
                self._runner = _Runner()
            except RuntimeError:  # no thread can start (the interpreter is shutting down)
                return None
        job = _Job(callback, options)
        self._runner.jobs.put(job)
        if not job.done.wait(self.callback_timeout):
            self._runner.retire()
            self._runner = None
            self.figures.add(
                "callbacks.timed_out",
                "%s: callback %s still running after %.1f s; skipped until it returns",
                name,
                callback.label,
                self.callback_timeout,
            )
            return None
        if job.error is not None:
            self.figures.add("callbacks.failed", "%s: callback %s raised %r", name, callback.label, job.error)
            return None
        return job.observations

    def stop(self, final_collection: bool = True) -> None:
        """Stop the thread; by default first collect once more, so the last deltas are sent."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.callback_timeout * 2 + 1)
        if final_collection and thread is not None:
            self.collect()
        if self._runner is not None:
            self._runner.retire()
            self._runner = None

    def after_fork_in_child(self) -> None:
        """The child has no collector or runner thread: forget them (no lock may be taken here)."""
        self._thread = self._runner = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._collect_lock = threading.Lock()
        for instrument in self.instruments:
            instrument.forget_totals()
