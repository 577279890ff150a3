"""``MeterProvider(z, process_metrics=True)``: the process's own figures, as observable instruments.

Named as OpenTelemetry's process and CPython conventions name them, read with
the standard library (and Linux's /proc where a figure has no portable source;
elsewhere that instrument reports nothing). They are observed by the
provider's collector like any observable instrument:

* ``process.cpu.time`` (s, ``cpu.mode`` user/system), ``cpython.gc.collections`` and
  ``cpython.gc.collected_objects`` (``cpython.gc.generation``): cumulative, sent as
  counter deltas;
* ``process.memory.usage`` and ``process.memory.virtual`` (By), ``process.thread.count``,
  ``process.open_file_descriptor.count``: sent as gauges (the conventions make them
  up-down counters; a gauge keeps their level, which deltas would not).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

SCOPE = "zibrato.otel.process"
Callback = Callable[[CallbackOptions], Iterable[Observation]]
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def register(meter: metrics.Meter) -> None:
    """Create the process instruments on ``meter``."""
    meter.create_observable_counter("process.cpu.time", [_cpu_time], unit="s")
    meter.create_observable_counter("cpython.gc.collections", [_gc("collections")], unit="{collection}")
    meter.create_observable_counter("cpython.gc.collected_objects", [_gc("collected")], unit="{object}")
    meter.create_observable_gauge("process.memory.usage", [_memory(1)], unit="By")
    meter.create_observable_gauge("process.memory.virtual", [_memory(0)], unit="By")
    meter.create_observable_gauge("process.thread.count", [_threads], unit="{thread}")
    meter.create_observable_gauge("process.open_file_descriptor.count", [_descriptors], unit="{file_descriptor}")


def _cpu_time(options: CallbackOptions) -> Iterable[Observation]:
    times = os.times()
    return [Observation(times.user, {"cpu.mode": "user"}), Observation(times.system, {"cpu.mode": "system"})]


def _gc(field: str) -> Callback:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(stats[field], {"cpython.gc.generation": generation})
            for generation, stats in enumerate(gc.get_stats())
        ]

    return observe


def _memory(column: int) -> Callback:
    """/proc/self/statm: column 0 the virtual size, 1 the resident set, in pages."""

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        try:
            with open("/proc/self/statm") as statm:
                pages = int(statm.read().split()[column])
        except OSError:
            return []
        return [Observation(pages * _PAGE)]

    return observe


def _threads(options: CallbackOptions) -> Iterable[Observation]:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Threads:"):
                    return [Observation(int(line.split()[1]))]
    except OSError:
        pass
    return []


def _descriptors(options: CallbackOptions) -> Iterable[Observation]:
    try:
        return [Observation(len(os.listdir("/proc/self/fd")))]
    except OSError:
        return []
