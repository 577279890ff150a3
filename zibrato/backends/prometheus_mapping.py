"""Zibrato summaries -> Prometheus metric families: pure code (no sockets), for zibrato-prometheus.

:class:`PrometheusState` takes each interval's summaries and keeps what a
scrape shows; :meth:`PrometheusState.families` turns it into
``prometheus_client`` metric families, which ``prometheus_client``'s own
exposition code renders (text format 0.0.4 or OpenMetrics).

* counter -> ``<name>_total``, the running sum since the worker started;
* gauge -> the last value; set -> a gauge of the last interval's unique count;
* timer (seconds) and histogram -> a histogram: cumulative ``_bucket{le=...}``
  counts, ``_count`` and ``_sum`` since the start. Counts come from the
  summary's ``"sketch"`` (exponential buckets, see COMMON.md's contract):
  each sketch bucket's count goes to the first ``le`` at or above the
  bucket's middle. The bounds follow the unit (:mod:`.classic_buckets`):
  seconds get powers of two (2**-10 s ~ 1 ms to 32 s), bytes powers of 4,
  both sketch bucket boundaries at every scale >= 0, so they are exact: a
  value lands in the ``le`` bucket it belongs to. Without a sketch, the raw
  ``"values"`` are counted (a sampled interval's weighted by count / kept).
  Each timer and histogram also keeps its cumulative native histogram
  (:mod:`.native_histogram`), which the protobuf exposition
  (:mod:`.prometheus_protobuf`) and remote write (:mod:`.remote_write_mapping`)
  read through :meth:`PrometheusState.render`.

Names: characters outside ``[a-zA-Z0-9_]`` become ``_`` (``db.query`` ->
``db_query``; ``:`` is left to recording rules) and a leading digit gets a
``_``; a timer's family ends in ``_seconds``, a histogram's in its unit
(``resp_size_bytes``), by Prometheus' naming conventions. Labels:
``source``, ``level`` and the tags, their keys fitted the same way; ``__``
prefixes and the names ``le`` / ``quantile`` get a ``tag`` prefix.
Collisions are resolved and counted: a second Zibrato name (or type, or unit)
that lands on a family name, or on one of its sample names (``x_total``,
``x_bucket``...), gets ``_2``, ``_3``...; a label key that repeats gets ``_2``;
two series that would expose the same family and labels move the later one to
a suffixed family.

Idle series expire: one that had no data for ``expire`` seconds is dropped
(statsd_exporter's most asked-for feature). For the l2met read API
(:meth:`PrometheusState.lookup`) every series keeps its last summary, and a
series once asked for keeps its last ``history`` ones from then on: about
400 bytes a summary, so 100,000 series do not hold ``history`` times that.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from ..series_guard import SeriesGuard
from ..summary import Summary
from ..summary import series_of as series_key
from .classic_buckets import (  # noqa: F401 - DEFAULT_BUCKETS, parse_buckets, parse_bucket_rule: re-exported
    DEFAULT_BUCKETS,
    BucketRule,
    bounds_for,
    bucket_increments,
    decade_bounds,
    parse_bucket_rule,
    parse_buckets,
)
from .labels import tag_pairs
from .native_histogram import DEFAULT_MAX_NATIVE_BUCKETS, NativeHistogram

T = TypeVar("T")
DEFAULT_EXPIRE = 300.0
DEFAULT_HISTORY = 10
_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_RESERVED_LABELS = ("le", "quantile")
_KIND = {"counter": "counter", "gauge": "gauge", "set": "gauge", "timer": "histogram", "histogram": "histogram"}
_HELP = {
    "counter": "Zibrato counter {name!r}: sum since the worker started.",
    "gauge": "Zibrato gauge {name!r}: last value.",
    "set": "Zibrato set {name!r}: unique members in the last interval.",
    "timer": "Zibrato timer {name!r}, in seconds.",
    "histogram": "Zibrato histogram {name!r}{unit}.",
}


def family_base_name(type: str, name: str, unit: str | None) -> str:
    """The family name by Prometheus' conventions: a timer is ``<name>_seconds``, a histogram
    with a unit gets it as a suffix (``resp.size`` in bytes -> ``resp_size_bytes``), a counter
    loses a ``_total`` it already has (the exposition adds it)."""
    base = metric_name(name)
    if type == "counter" and base.endswith("_total") and len(base) > len("_total"):
        return base[: -len("_total")]
    suffix = ""
    if type == "timer":
        suffix = "seconds"
    elif type == "histogram" and unit:
        suffix = _INVALID.sub("_", unit).strip("_")
    if suffix and base != suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    return base


def metric_name(name: str) -> str:
    """A valid Prometheus metric name for a Zibrato name: ``db.query`` -> ``db_query``."""
    fitted = _INVALID.sub("_", name)
    return "_" + fitted if fitted[:1].isdigit() else fitted


def label_name(key: str) -> str:
    """A valid label name for a tag key; reserved ones (``__x``, ``le``, ``quantile``) get a ``tag`` prefix."""
    fitted = _INVALID.sub("_", key) or "_"
    if fitted[:1].isdigit():
        fitted = "_" + fitted
    if fitted.startswith("__") or fitted in _RESERVED_LABELS:
        fitted = "tag_" + fitted.lstrip("_") if fitted.startswith("__") else "tag_" + fitted
    return fitted


class Series:
    """What a scrape shows of one Zibrato series, and its recent summaries."""

    __slots__ = (
        "kind",
        "family",
        "labels",
        "value",
        "bounds",
        "le_values",
        "buckets",
        "native",
        "count",
        "sum",
        "last_data",
        "history",
        "key",
        "watched",
    )

    def __init__(self, key: tuple, kind: str, family: str, labels: dict, now: float) -> None:
        self.key, self.kind, self.family, self.labels = key, kind, family, labels
        self.value = 0.0
        self.bounds: tuple[float, ...] = ()  # classic le bounds (+Inf apart), set once (classic_buckets)
        self.le_values: list[str] = []
        self.buckets: list[float] = []  # per bound, then +Inf; not cumulative
        self.native: NativeHistogram | None = None  # timers and histograms: the cumulative native histogram
        self.count, self.sum = 0.0, 0.0
        self.last_data = now
        self.history: list[dict] = []  # the last summaries, oldest first (a list: a deque is 600 B)
        self.watched = False  # asked for by /series: from then on it keeps `history` summaries


class _Family:
    __slots__ = ("owner", "kind", "help", "series", "exposed")

    def __init__(self, owner: tuple, kind: str, help: str, exposed: tuple[str, ...]) -> None:
        self.owner, self.kind, self.help, self.exposed = owner, kind, help, exposed
        self.series: dict[tuple, Series] = {}  # label items -> series


class PrometheusState:
    """Running totals per series, fed one interval at a time, read by scrapes (thread-safe)."""

    def __init__(
        self,
        buckets: Sequence[float] | None = None,
        expire: float | Mapping[str, float] = DEFAULT_EXPIRE,
        history: int = DEFAULT_HISTORY,
        clock: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
        *,
        bucket_rules: Sequence[BucketRule] = (),
        max_native_buckets: int = DEFAULT_MAX_NATIVE_BUCKETS,
    ) -> None:
        """``buckets``: bounds for every timer and histogram (the former ``--buckets``); else chosen
        per series by ``bucket_rules`` and the unit (:func:`~.classic_buckets.bounds_for`)."""
        if history < 1:
            raise ValueError("history must be at least 1")
        if max_native_buckets < 1:
            raise ValueError("max_native_buckets must be at least 1")
        rules = list(bucket_rules)
        if buckets is not None:
            rules.append(("*", tuple(sorted(buckets))))
        self.bucket_rules = tuple(rules)
        self.max_native_buckets = max_native_buckets
        self.expire = expiry_per_kind(expire)
        self.history, self.clock = history, clock
        self.log = log or logging.getLogger("zibrato.prometheus")
        self._lock = threading.Lock()
        self._series: dict[tuple, Series] = {}
        self._families: dict[str, _Family] = {}
        self._exposed: dict[str, str] = {}  # sample name -> family exposing it
        #: bumped whenever what a scrape would show changes (cached renderings compare it)
        self.version = 0
        self.figures = {
            "series": 0,
            "families": 0,
            "name_collisions": 0,
            "label_collisions": 0,
            "series_expired": 0,
            "native_schema_lowered": 0,
            "series_failed_mapping": 0,
        }
        #: series dropped from an interval because mapping them raised (see zibrato.series_guard)
        self.guard = SeriesGuard(self.log)

    # --- feeding --------------------------------------------------------------

    def update(self, summaries: Iterable[Summary]) -> None:
        """Add one interval's summaries; then drop the series idle for longer than ``expire``."""
        now = self.clock()
        with self._lock:
            for summary in summaries:
                try:  # each series under its own guard: one that raises is dropped alone
                    key = series_key(summary)
                    series = self._series.get(key)
                    if series is None:
                        series = self._series[key] = self._new_series(key, summary, now)
                    self._apply(series, summary, now)
                except Exception as error:
                    self.guard.dropped(summary, error)
            self._expire(now)
            self.version += 1
            self.figures.update(
                series=len(self._series), families=len(self._families), series_failed_mapping=self.guard.failed
            )

    def _apply(self, series: Series, s: Summary, now: float) -> None:
        """One interval of a series; anything that can raise does before the series changes."""
        kind = s["type"]
        has_data = bool(s.get("count", s.get("value")))
        if kind == "counter":
            series.value += s.get("value", 0.0)
        elif kind in ("gauge", "set"):
            series.value = s.get("value", series.value)
        else:
            if has_data and not series.le_values:
                self._choose_bounds(series, decade_bounds(s.get("min", 0.0), s.get("max", 0.0)))
            for i, n in enumerate(bucket_increments(s, series.bounds)):
                series.buckets[i] += n
            series.count += s.get("count", 0)
            series.sum += s.get("sum", 0.0)
            if has_data:
                self._add_native(series, s)
        if has_data:
            series.last_data = now
        history = series.history
        history.append({k: v for k, v in s.items() if k not in ("values", "sketch")})
        if len(history) > (self.history if series.watched else 1):
            del history[0]

    @staticmethod
    def _choose_bounds(series: Series, bounds: tuple[float, ...]) -> None:
        series.bounds = bounds
        series.le_values = [floatToGoString(b) for b in bounds]
        series.buckets = [0.0] * (len(bounds) + 1)

    def _add_native(self, series: Series, s: Summary) -> None:
        """Add the interval's sketch to the series' native histogram (a sketch of the values if none came)."""
        sketch = s.get("sketch")
        if not sketch:
            values = s.get("values")
            if not values:
                return
            from ..sketch import Sketch

            made = Sketch(max_exact=0)
            made.add_many(list(values), s.get("count", len(values)) / len(values))
            sketch = made.to_dict()
        if series.native is None:
            series.native = NativeHistogram(self.max_native_buckets)
        before = series.native.lowered
        try:
            series.native.add(sketch)
        except ValueError as error:
            self.figures["native_errors"] = self.figures.get("native_errors", 0) + 1
            self.log.warning("%s %r: no native histogram: %s", s["type"], s["name"], error)
            return
        if series.native.lowered != before:
            self.figures["native_schema_lowered"] += series.native.lowered - before

    def _expire(self, now: float) -> None:
        expire = self.expire
        idle = [key for key, series in self._series.items() if now - series.last_data > expire[series.kind]]
        for key in idle:
            series = self._series.pop(key)
            family = self._families[series.family]
            del family.series[tuple(series.labels.items())]
            if not family.series:
                del self._families[series.family]
                for name in family.exposed:
                    self._exposed.pop(name, None)
        if idle:
            self.figures["series_expired"] += len(idle)
            self.figures.update(series=len(self._series), families=len(self._families))
            self.version += 1

    def expire_now(self) -> int:
        """Drop the series idle too long (a scrape calls it); return :attr:`version`."""
        with self._lock:
            self._expire(self.clock())
            return self.version

    # --- naming ------------------------------------------------------------------

    def _new_series(self, key: tuple, s: Summary, now: float) -> Series:
        labels = self._labels(s)
        family = self._claim(s, tuple(labels.items()))
        series = Series(key, s["type"], family, labels, now)
        if s["type"] in ("timer", "histogram"):
            bounds = bounds_for(s["type"], s["name"], s.get("unit"), self.bucket_rules)
            if bounds is not None:
                self._choose_bounds(series, bounds)
            else:
                series.buckets = [0.0]  # only +Inf until its first data chooses the bounds
        self._families[family].series[tuple(labels.items())] = series
        return series

    def _labels(self, s: Summary) -> dict[str, str]:
        labels: dict[str, str] = {}
        for key, value in tag_pairs(s):
            fitted = label_name(key)
            if fitted in labels:
                base, n = fitted, 2
                while f"{base}_{n}" in labels:
                    n += 1
                fitted = f"{base}_{n}"
                self.figures["label_collisions"] += 1
            labels[fitted] = value
        return labels

    def _claim(self, s: Summary, label_items: tuple) -> str:
        """The family for this series: its fitted name, or the first free ``_N`` variant."""
        kind = _KIND[s["type"]]
        owner = (s["type"], s["name"], s.get("unit"))
        base = family_base_name(s["type"], s["name"], s.get("unit"))
        n = 1
        while True:
            name = base if n == 1 else f"{base}_{n}"
            family = self._families.get(name)
            if family is None:
                exposed = _exposed_names(name, kind)
                if not any(e in self._exposed for e in exposed):
                    unit = f" ({s['unit']})" if s.get("unit") else ""
                    self._families[name] = _Family(
                        owner, kind, _HELP[s["type"]].format(name=s["name"], unit=unit), exposed
                    )
                    for e in exposed:
                        self._exposed[e] = name
                    break
            elif family.owner == owner and label_items not in family.series:
                break
            n += 1
        if n > 1:
            self.figures["name_collisions"] += 1
            self.log.warning(
                "%s %r meets another series at the Prometheus name %s: exposed as %s", s["type"], s["name"], base, name
            )
        return name

    # --- reading --------------------------------------------------------------------

    def families(self) -> list[Metric]:
        """The families a scrape renders (after expiring idle series)."""
        return self.render(self._family_metric)

    def render(self, render_family: Callable[[str, _Family], T]) -> list[T]:
        """``render_family(name, family)`` for every family, under the lock (after expiring idle series).

        What the text exposition and the protobuf one (:mod:`.prometheus_protobuf`) both read:
        a family's ``kind`` and ``help``, and per series its ``labels``, ``value``, ``count``,
        ``sum``, ``le_values`` / ``buckets`` (classic, not cumulative) and ``native``.
        """
        with self._lock:
            self._expire(self.clock())
            return [render_family(name, family) for name, family in self._families.items()]

    def _family_metric(self, name: str, family: _Family) -> Metric:
        metric = Metric(name, family.help, family.kind)
        add = metric.samples.append
        for series in family.series.values():
            labels = series.labels
            if family.kind == "counter":
                add(_sample(name + "_total", labels, series.value))
            elif family.kind == "gauge":
                add(_sample(name, labels, series.value))
            else:
                bucket_name = name + "_bucket"
                running = 0.0
                for le, count in zip(series.le_values, series.buckets):
                    running += count
                    add(Sample(bucket_name, {**labels, "le": le}, running, None, None))
                add(Sample(bucket_name, {**labels, "le": "+Inf"}, series.count, None, None))
                add(_sample(name + "_count", labels, series.count))
                add(_sample(name + "_sum", labels, series.sum))
        return metric

    def lookup(
        self,
        name: str,
        source: str | None = None,
        tags: Sequence[str] | None = None,
        type: str | None = None,
        any_source: bool = False,
    ) -> list[Series]:
        """The series named ``name`` (Zibrato's name) matching the filters given."""
        with self._lock:
            found = [
                series
                for key, series in self._series.items()
                if key[1] == name
                and (any_source or key[2] == source)
                and (tags is None or sorted(key[3]) == sorted(tags))
                and (type is None or key[0] == type)
            ]
            for series in found:
                series.watched = True
            return found

    def __len__(self) -> int:
        return len(self._series)


def expiry_per_kind(expire: float | Mapping[str, float]) -> dict[str, float]:
    """Seconds per summary type; 0 or a missing type means the default (a scrape target
    cannot drop a counter the moment it is idle: Prometheus would see a reset)."""
    given = expire if isinstance(expire, Mapping) else dict.fromkeys(_KIND, expire)
    out = {}
    for kind in _KIND:
        seconds = float(given.get(kind) or 0)
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"expiry must be positive seconds, got {seconds!r}")
        out[kind] = seconds or DEFAULT_EXPIRE
    return out


def _exposed_names(name: str, kind: str) -> tuple[str, ...]:
    if kind == "counter":
        return (name, name + "_total", name + "_created")
    if kind == "histogram":
        return (name, name + "_bucket", name + "_count", name + "_sum", name + "_created")
    return (name,)


def _sample(name: str, labels: dict, value: float) -> Sample:
    return Sample(name, labels, value, None, None)
