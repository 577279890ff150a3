"""Process and runtime metrics, under the OpenTelemetry semantic-convention names.

``Zibrato(process_metrics=True)`` records, every 10 s, from the client's
sender thread (never on the application's threads):

========================================  =======  ==========================================
name                                      kind     what
========================================  =======  ==========================================
``process.cpu.time``                      counter  CPU seconds in the interval, tag ``cpu.mode:user|system``
``process.memory.usage``                  gauge    resident memory, bytes
``process.memory.virtual``                gauge    virtual memory, bytes
``process.open_file_descriptor.count``    gauge    open file descriptors
``process.thread.count``                  gauge    threads of the process
``cpython.gc.collections``                counter  collections in the interval, tag ``cpython.gc.generation:N``
``cpython.gc.collected_objects``          counter  objects collected in the interval, same tag
========================================  =======  ==========================================

Counters are per-interval deltas (a Zibrato counter sums what each interval
received), so every process's figures add up at the worker. The process id
is a tag (``process.pid``) only when asked: one series per process is a
cardinality a fleet of short-lived workers pays for.
"""

from __future__ import annotations

import gc
import os
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

EVERY_SECONDS = 10.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ProcessMetrics:
    """Samples the process every ``every`` seconds when :meth:`tick` is called (by the sender thread)."""

    def __init__(
        self,
        client: Any,
        level: str = "info",
        pid_tag: bool = False,
        every: float = EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.level, self.every, self.clock = client, level, every, clock
        self.pid_tag = pid_tag
        self._next = clock()  # the first sample at the first tick
        self._last: dict[str, float] = {}
        self._pid = os.getpid()

    def tick(self) -> None:
        """Record a sample when one is due; never raises (a sampler must not stop the sender)."""
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.every
        try:
            self.record()
        except Exception:  # pragma: no cover - /proc vanished, a platform without one of the figures
            pass

    def record(self) -> None:
        if os.getpid() != self._pid:  # a forked child starts its own deltas
            self._pid, self._last = os.getpid(), {}
        tags = {"process.pid": str(self._pid)} if self.pid_tag else {}
        z, level = self.client, self.level
        usage = resource.getrusage(resource.RUSAGE_SELF)
        for mode, seconds in (("user", usage.ru_utime), ("system", usage.ru_stime)):
            delta = self._delta(f"cpu.{mode}", seconds)
            if delta:
                z.count(level, "process.cpu.time", delta, tags={**tags, "cpu.mode": mode})
        resident, virtual = _memory()
        z.gauge(level, "process.memory.usage", resident, tags=tags or None)
        if virtual is not None:
            z.gauge(level, "process.memory.virtual", virtual, tags=tags or None)
        descriptors = _open_descriptors()
        if descriptors is not None:
            z.gauge(level, "process.open_file_descriptor.count", descriptors, tags=tags or None)
        z.gauge(level, "process.thread.count", _threads(), tags=tags or None)
        for generation, stats in enumerate(gc.get_stats()):
            generation_tags = {**tags, "cpython.gc.generation": str(generation)}
            for key, name in (("collections", "cpython.gc.collections"), ("collected", "cpython.gc.collected_objects")):
                delta = self._delta(f"gc.{generation}.{key}", stats[key])
                if delta:
                    z.count(level, name, delta, tags=generation_tags)

    def _delta(self, key: str, total: float) -> float:
        """The growth of a cumulative figure since the last sample (all of it at the first)."""
        previous = self._last.get(key, 0.0)
        self._last[key] = total
        return max(0.0, total - previous)


def _memory() -> tuple[float, float | None]:
    """(resident, virtual) bytes: /proc/self/statm where there is one, else the peak resident size."""
    try:
        with open("/proc/self/statm") as statm:
            virtual_pages, resident_pages = statm.read().split()[:2]
        return float(resident_pages) * _PAGE, float(virtual_pages) * _PAGE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(peak) * 1024, None  # Linux and BSD report kilobytes


def _open_descriptors() -> int | None:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder)) - 1  # listdir's own descriptor
        except OSError:
            continue
    return None


def _threads() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return threading.active_count()
