"""zibrato-graphite: each interval as Graphite plaintext lines, sent to carbon over TCP.

Mapping (:class:`GraphiteMapping`, pure: summaries in, lines out), Etsy
statsd's Graphite layout, one line ``<path> <value> <timestamp>\\n`` per statistic:

* counter:   ``<prefix>.counters.<name>.count`` (the interval's sum) and ``.rate`` (per second);
* gauge:     ``<prefix>.gauges.<name>`` (the last value);
* timer:     ``<prefix>.timers.<name>.<stat>`` for count, sum, sum_squares, min,
  max, mean, median, stddev and each percentile (``p99_9``), in seconds;
  an interval without values sends ``count`` 0 alone;
* histogram: the same statistics under ``<prefix>.histograms.<name>[.<unit>]``;
* set:       ``<prefix>.sets.<name>.count`` (the number of unique members).

Without tags (``tags="drop"``, the default) the source is a path part before
the name (``stats.timers.web-1.db.query.p99``) and tags are left out. With
``tags="graphite"`` (Graphite 1.1, carbon's ``ENABLE_TAGS``) the source, the
level, the unit and the tags travel as ``;k=v`` tags instead.

Names are made safe for a path: whitespace runs become ``_``, ``/`` becomes
``-``, any other character outside ``A-Za-z0-9_-.`` becomes ``_``, empty path
parts disappear. Tag keys lose ``;!^=`` and whitespace, values ``;`` and
whitespace and a leading ``~`` (Graphite 1.1's rules); a tag ``name`` (carbon's
own) becomes ``name_``. A bare tag ``x`` (no ``:``) is ``x=true``.

The timestamp is the interval's end in whole seconds, rounded up: a partial
interval at stop (ending 100.4) is stamped 101, never on top of the full
interval stamped 100. Graphite keeps one point per retention step, so the
flush interval should be a multiple of the finest retention.

Transport (:class:`GraphiteDestination`): one TCP connection per interval.
After writing, it half-closes and waits for carbon to close its side, which
carbon does only once it has read everything sent: so a delivered interval is
one carbon has received, and a failure anywhere (refused, reset, timeout) is
:class:`~zibrato.delivery.Retryable`. A retried interval rewrites the same
points with the same values, so a retry never double-counts.
"""

from __future__ import annotations

import logging
import math
import re
import socket
from collections.abc import Iterable, Iterator
from typing import Any

from ..delivery import NameFitter, Retryable, describe, request_timeout
from ..destination import Destination, Interval
from ..series_guard import SeriesGuard
from ..summary import SeriesMemo, Summary

TAG_MODES = ("drop", "graphite")
DEFAULT_PREFIX = "stats"
DEFAULT_PORT = 2003
NAMESPACES = {"counter": "counters", "gauge": "gauges", "timer": "timers", "histogram": "histograms", "set": "sets"}
DISTRIBUTION_STATS = ("count", "sum", "sum_squares", "min", "max", "mean", "median", "stddev")
_PERCENTILE_KEY = re.compile(r"p\d+(_\d+)?\Z")

_WHITESPACE = re.compile(r"\s+")
_NOT_IN_PATH = re.compile(r"[^A-Za-z0-9_\-.]")
_DOT_RUNS = re.compile(r"\.{2,}")
_NOT_IN_TAG_KEY = re.compile(r"[;!^=\s]")
_NOT_IN_TAG_VALUE = re.compile(r"[;\s]")
_MAX_CACHED = 100_000
PATH_RULE = "Graphite paths are made of A-Z a-z 0-9 _ - separated by single dots"


def sanitise_path(text: str) -> str:
    """A Graphite path made of safe parts: 'db query/all' -> 'db_query-all'; never empty."""
    text = _NOT_IN_PATH.sub("_", _WHITESPACE.sub("_", text).replace("/", "-"))
    return _DOT_RUNS.sub(".", text).strip(".") or "_"


def split_tag(tag: str) -> tuple[str, str]:
    """'k:v' -> ('k', 'v'); a bare tag 'x' -> ('x', 'true')."""
    key, sep, value = tag.partition(":")
    return (key, value) if sep else (tag, "true")


def graphite_tag(key: str, value: str) -> str | None:
    """``;k=v`` made valid for Graphite 1.1, or None when the key or value is empty."""
    key = _NOT_IN_TAG_KEY.sub("_", key)
    value = _NOT_IN_TAG_VALUE.sub("_", value)
    if value.startswith("~"):
        value = "_" + value[1:]
    if key == "name":
        key = "name_"
    if not key or not value:
        return None
    return f";{key}={value}"


def number(value: float) -> str:
    """A value as carbon parses it: integers without '.0', floats by repr (shortest exact)."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def timestamp(end: float) -> int:
    """The interval's end in whole seconds, rounded up (a partial interval never overwrites)."""
    return math.ceil(round(end, 6))


def distribution_stats(summary: Summary) -> Iterator[tuple[str, float]]:
    """A timer's or histogram's statistics in a stable order: fixed ones, then percentiles."""
    if not summary.get("count"):
        yield "count", summary.get("count", 0)
        return
    for key in DISTRIBUTION_STATS:
        if key in summary:
            yield key, summary[key]
    for key in sorted((k for k in summary if _PERCENTILE_KEY.match(k)), key=_percentile_order):
        yield key, summary[key]


def _percentile_order(key: str) -> float:
    return float(key[1:].replace("_", "."))


class GraphiteMapping:
    """Summaries -> plaintext lines (no I/O). Remembers sanitised names, counts changes."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, tags: str = "drop", log: logging.Logger | None = None) -> None:
        if tags not in TAG_MODES:
            raise ValueError(f"unknown tag mode {tags!r} (drop or graphite)")
        self.prefix = sanitise_path(prefix) if prefix.strip(". ") else ""
        self.tag_mode = tags
        self.log = log or logging.getLogger("zibrato.graphite")
        self.guard = SeriesGuard(self.log)  # a series whose lines raise is dropped alone
        self.names = NameFitter(
            self.log, PATH_RULE, fit=lambda text, limit: sanitise_path(text), destination="Graphite"
        )
        self._paths = SeriesMemo(self._series_path, _MAX_CACHED)  # series -> (path, tags): built once

    def lines(self, interval: Interval) -> list[str]:
        """Every line for one interval, each ending in a newline."""
        stamp = f" {timestamp(interval.end)}\n"
        out: list[str] = []
        for summary in interval.summaries:
            try:
                base, suffix = self.series_path(summary)
                lines = [
                    f"{f'{base}.{stat}' if stat else base}{suffix} {number(value)}{stamp}"
                    for stat, value in self.statistics(summary)
                ]
            except Exception as error:  # this series alone, never the interval
                self.guard.dropped(summary, error)
                continue
            out.extend(lines)
        return out

    def statistics(self, summary: Summary) -> Iterable[tuple[str, float]]:
        """(stat, value) pairs of one summary; stat '' is the series path itself (gauges)."""
        kind = summary["type"]
        if kind == "counter":
            return [("count", summary["value"]), ("rate", summary.get("rate", 0.0))]
        if kind == "gauge":
            return [("", summary["value"])]
        if kind == "set":
            return [("count", summary["value"])]
        if kind in ("timer", "histogram"):
            return list(distribution_stats(summary))
        return []  # a type from the future: nothing rather than a wrong guess

    def series_path(self, summary: Summary) -> tuple[str, str]:
        """(path without the statistic, tag suffix) of one series (cached per series)."""
        return self._paths(summary)

    def _series_path(self, summary: Summary) -> tuple[str, str]:
        parts = [self.prefix, NAMESPACES.get(summary["type"], summary["type"])]
        source, unit = summary.get("source"), summary.get("unit")
        if self.tag_mode == "graphite":
            parts.append(self._path(summary["name"]))
            return ".".join(p for p in parts if p), self._tags(summary)
        if source:
            parts.append(self._path(source))
        parts.append(self._path(summary["name"]))
        if unit:
            parts.append(self._path(unit))
        return ".".join(p for p in parts if p), ""

    def _tags(self, summary: Summary) -> str:
        pairs = dict(split_tag(t) for t in summary.get("tags") or ())
        for key in ("source", "level", "unit"):
            if summary.get(key):
                pairs[key] = str(summary[key])
        tags = (graphite_tag(k, str(v)) for k, v in sorted(pairs.items()))
        return "".join(t for t in tags if t)

    def _path(self, text: str) -> str:
        return self.names(text)

    @property
    def changed(self) -> int:
        """How many distinct names had to change to fit a Graphite path."""
        return self.names.changed


class GraphiteDestination(Destination):
    """Carbon's plaintext protocol over TCP, one confirmed connection per interval."""

    name = "graphite"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        prefix: str = DEFAULT_PREFIX,
        tags: str = "drop",
        timeout: float = 10.0,
    ) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"Graphite port {port} is outside 1-65535")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.host, self.port, self.timeout = host, port, timeout
        self.log = logging.getLogger("zibrato.graphite")
        self.mapping = GraphiteMapping(prefix, tags, self.log)
        self._figures: dict[str, Any] = {"lines_sent": 0, "bytes_sent": 0, "intervals_sent": 0, "send_errors": 0}

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self) -> None:
        self.log.info(
            "sending to Graphite (carbon plaintext) at %s, prefix %r, tags %s",
            self.endpoint,
            self.mapping.prefix,
            "as Graphite 1.1 tags" if self.mapping.tag_mode == "graphite" else "dropped",
        )

    def post(self, interval: Interval) -> None:
        lines = self.mapping.lines(interval)
        if not lines:
            return
        payload = "".join(lines).encode("utf-8")
        try:
            self._send_confirmed(payload)
        except OSError as error:
            self._figures["send_errors"] += 1
            raise Retryable(f"carbon at {self.endpoint}: {describe(error)}", status="connection") from None
        f = self._figures
        f["lines_sent"] += len(lines)
        f["bytes_sent"] += len(payload)
        f["intervals_sent"] += 1

    def _send_confirmed(self, payload: bytes) -> None:
        """Write, half-close, and wait until carbon closes too: it has then read every byte."""
        with socket.create_connection((self.host, self.port), timeout=request_timeout(self.timeout)) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass  # carbon never answers; anything it sent is ignored

    def figures(self) -> dict:
        """Own figures; failing deliveries are reported by the delivery queue."""
        return dict(
            self._figures,
            graphite=self.endpoint,
            names_changed=self.mapping.changed,
            series_failed_mapping=self.mapping.guard.failed,
        )
