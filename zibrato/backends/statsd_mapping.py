"""statsd's mapping: summaries in, statsd lines out (pure: no sockets). See docs/STATSD.md.

One interval at a time:

* counter: one ``name:sum|c`` line, the interval's sum;
* gauge: ``name:value|g``, the last value; a negative value is preceded by
  ``name:0|g`` in the same unit (datagram), because statsd reads a leading
  ``-`` as a delta when the gauge exists and is not zero;
* timer: every value as ``name:ms|ms`` in milliseconds, so that statsd's
  count, mean, upper, lower and percentiles are computed from the real values.
  Past ``--max-exact`` values per series and interval, or for sampled
  (weighted) values, ``--max-exact`` values spread evenly over the series'
  sketch are sent instead (each within the sketch's relative error of a real
  value), each line marked ``|@rate`` with rate = lines sent / observations,
  so that statsd scales the count back;
* histogram: the same values as a timer's, unscaled (in the histogram's own
  unit), as ``|ms`` lines (``--histograms timer``, the default: Etsy statsd
  then computes their percentiles; negative values are dropped and counted)
  or as DogStatsD ``|h`` lines (``--histograms dogstatsd``);
* set: a gauge of its number of unique members (``--sets count``, the
  default), or each member as ``name:member|s`` (``--sets members``, while
  the set is exact; an estimated set, past the worker's exact bound, is sent
  as the gauge of its count, logged once).

The source becomes a name prefix (``source.name``) or a DogStatsD tag; tags
are DogStatsD ``|#k:v`` tags or dropped. Names are fitted to Etsy statsd's
rules (:func:`fit_name`), each change logged once; prefix, source and name
are joined with single dots, never leaving an empty part (``..x``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from ..names import NameFitter
from ..runtime import RateLimitedLog, printable, printable_repr
from ..series_guard import SeriesGuard
from ..summary import Summary

SOURCE_MODES = ("prefix", "tag")
TAG_MODES = ("drop", "dogstatsd")
HISTOGRAM_MODES = ("timer", "dogstatsd")
SET_MODES = ("count", "members")

# Etsy statsd 0.9.0 (stats.js, sanitizeKeyName): whitespace runs -> "_", "/" -> "-",
# then anything outside [a-zA-Z_\-0-9.;=] is dropped.
_WHITESPACE = re.compile(r"\s+")
_NOT_IN_NAME = re.compile(r"[^a-zA-Z_\-0-9.;=]")
_DOT_RUNS = re.compile(r"\.{2,}")
# DogStatsD tags: "k:v" stays; the line's separators ("|", ",", "#", "@") and control characters go.
_NOT_IN_TAG = re.compile(r"[|,#@\x00-\x1f\x7f]")
# A set member in a line: no separator of the line (":" splits values in Etsy) and no whitespace.
_NOT_IN_MEMBER = re.compile(r"[:|,#@\s\x00-\x1f\x7f]")
NAME_RULE = "statsd names are made of A-Z a-z 0-9 _ - . ; =, with no empty part between dots"
TAG_RULE = "DogStatsD tags cannot hold | , # @"


def fit_name(text: str, limit: int | None = None) -> str:
    """Etsy's sanitising, then no empty part between dots (Graphite's ``a..b``)."""
    return _tidy_dots(_NOT_IN_NAME.sub("", _WHITESPACE.sub("_", text).replace("/", "-")))


def fit_tag(text: str, limit: int | None = None) -> str:
    return _NOT_IN_TAG.sub("", _WHITESPACE.sub("_", text))


class StatsdMapping:
    """Summaries to statsd lines (pure: no sockets); names fitted to Etsy's rules, each change logged once.

    Names: whitespace runs become ``_``, ``/`` becomes ``-``, and anything outside
    ``a-z A-Z 0-9 _ - . ; =`` is dropped (what Etsy statsd would do, so that
    ``:``, ``|``, ``@``, ``#``, newlines and spaces never reach the wire).
    Runs of dots become one and leading or trailing dots go, so that joining
    prefix, source and name never leaves an empty part. Tags keep ``k:v`` but
    lose ``|``, ``,``, ``#``, ``@`` and control characters.
    """

    def __init__(
        self,
        prefix: str = "",
        source_as: str = "prefix",
        tags: str = "drop",
        log: logging.Logger | None = None,
        histograms: str = "timer",
        sets: str = "count",
    ) -> None:
        if histograms not in HISTOGRAM_MODES:
            raise ValueError(f"unknown --histograms {histograms!r} (timer or dogstatsd)")
        if sets not in SET_MODES:
            raise ValueError(f"unknown --sets {sets!r} (count or members)")
        self.histogram_mode, self.set_mode = histograms, sets
        if source_as not in SOURCE_MODES:
            raise ValueError(f"unknown --source-as {source_as!r} (prefix or tag)")
        if tags not in TAG_MODES:
            raise ValueError(f"unknown --tags {tags!r} (drop or dogstatsd)")
        self.log = log or logging.getLogger("zibrato.statsd")
        self.guard = SeriesGuard(self.log)  # a series whose lines raise is dropped alone
        self.source_as, self.tag_mode = source_as, tags
        self.names = NameFitter(self.log, NAME_RULE, fit=fit_name, destination="statsd")
        self.tags = NameFitter(self.log, TAG_RULE, fit=fit_tag, destination="DogStatsD")
        # "app." is the documented form of the prefix "app": not a change worth a warning
        self.prefix = self.names(prefix.removesuffix("."), kind="prefix") if prefix else ""
        self.timer_values_dropped = 0
        self._warned: set[str] = set()
        self._value_log = RateLimitedLog(self.log)

    @property
    def names_changed(self) -> int:
        return self.names.changed + self.tags.changed

    def lines(self, summaries: Iterable[Summary]) -> list[bytes]:
        """The statsd lines for one interval, grouped in units that must share a datagram.

        A unit is one line, or the two lines of a negative gauge (``0|g`` then
        the value), joined by a newline.
        """
        units: list[bytes] = []
        for s in summaries:
            kind = s["type"]
            if kind not in ("counter", "gauge", "timer", "histogram", "set"):
                self._warn_once(kind, "%s series are not sent to statsd (%s)", kind, s["name"])
                continue
            try:
                units.extend(self._series_units(s, kind))
            except Exception as error:  # this series alone, never the interval
                self.guard.dropped(s, error)
        return units

    def _series_units(self, s: Summary, kind: str) -> list[bytes]:
        name, suffix = self._name_and_suffix(s)
        if kind == "counter":
            return [f"{name}:{number(s['value'])}|c{suffix}".encode()]
        if kind == "gauge":
            return [self._gauge_unit(name, s["value"], suffix)]
        if kind == "set":
            return list(self._set_lines(s, name, suffix))
        return list(self._timer_lines(s, name, suffix))

    @staticmethod
    def _gauge_unit(name: str, value: float, suffix: str) -> bytes:
        line = f"{name}:{number(value)}|g{suffix}"
        return (f"{name}:0|g{suffix}\n{line}" if value < 0 else line).encode()

    def _set_lines(self, s: Summary, name: str, suffix: str) -> Iterator[bytes]:
        """A gauge of the unique count, or (``--sets members``) each member of an exact set."""
        sketch: Mapping[str, Any] = s.get("sketch") or {}
        members = sketch.get("members")
        if self.set_mode == "count" or members is None:
            if self.set_mode == "members" and s["value"]:
                self._warn_once(
                    "estimated-set",
                    "set %s is past the worker's exact bound: its estimated count is sent as a gauge",
                    printable_repr(s["name"]),
                )
            yield self._gauge_unit(name, s["value"], suffix)
            return
        for member in members:
            text = _NOT_IN_MEMBER.sub("_", str(member))
            yield f"{name}:{text}|s{suffix}".encode()

    def _timer_lines(self, s: Summary, name: str, suffix: str) -> Iterator[bytes]:
        values = s.get("values")
        if values is None:  # an idle series (count 0, --expire) has none: nothing to send
            if s.get("count"):  # pragma: no cover - the runtime keeps values for needs_values
                self._warn_once("no-values", "%s %s has no raw values: not sent", s["type"], printable_repr(s["name"]))
            return
        rate = ""
        if s.get("sampled") and len(values) < s["count"]:
            rate = "|@" + sample_rate(len(values) / s["count"])
        histogram = s["type"] == "histogram"
        head = f"{name}:"
        if histogram and self.histogram_mode == "dogstatsd":  # any sign, the unit's own numbers
            tail = f"|h{rate}{suffix}"
            for value in values:
                yield (head + number(value) + tail).encode()
            return
        tail = f"|ms{rate}{suffix}"
        scaled = number if histogram else milliseconds
        negative = 0
        for value in values:
            if value < 0:  # statsd rejects negative timings as bad lines
                negative += 1
                continue
            yield (head + scaled(value) + tail).encode()
        if negative:
            self.timer_values_dropped += negative
            self._value_log.warning(
                "%s %s: dropped %d negative values (statsd takes timings >= 0)",
                s["type"],
                printable_repr(s["name"]),
                negative,
            )

    def _name_and_suffix(self, s: Summary) -> tuple[str, str]:
        """``prefix[source.]name`` and the ``|#tags`` suffix (possibly empty) of a series."""
        name = self.names(s["name"]) or "_"  # a line needs a name
        source = s.get("source")
        source_part = ""
        tags: list[str] = []
        if source:
            if self.source_as == "prefix":
                source_part = self.names(source, kind="source")
            else:
                tags.append(self.tags("source:" + source, kind="tag"))
        if s.get("tags"):
            if self.tag_mode == "dogstatsd":
                tags.extend(self.tags(t, kind="tag") for t in s["tags"])
            elif not s["name"].startswith("zibrato."):  # never a warning about Zibrato's own figures
                self._warn_once(
                    "tags",
                    "series %s has tags %s: tags are dropped (use --tags dogstatsd to send them as |#k:v)",
                    printable_repr(s["name"]),
                    printable(",".join(s["tags"])),
                )
        name = ".".join(part for part in (self.prefix, source_part, name) if part)
        tags = [t for t in tags if t]
        return name, ("|#" + ",".join(tags)) if tags else ""

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.log.warning(message, *args)


def number(value: float) -> str:
    """A counter's or gauge's value as statsd reads it: no exponent, no ``-0``, ``.0`` dropped."""
    if value == 0:
        return "0"  # also -0.0, which statsd would take for a delta
    if isinstance(value, int):
        return str(int(value))  # int() turns a bool into 0/1
    return _plain(repr(float(value)))


def milliseconds(seconds: float) -> str:
    """Seconds as statsd's milliseconds, to 15 significant digits.

    15 digits drop the binary noise of the multiplication (0.007 * 1000 is
    7.000000000000001) and keep every digit a double carries for sure.
    """
    if seconds == 0:
        return "0"  # also -0.0, which would be written "-0"
    return _plain(format(seconds * 1000, ".15g"))


def sample_rate(rate: float) -> str:
    """The ``@`` rate in plain decimals: Etsy reads ``@1e-05`` as 1 (it matches ``[\\d.]+``)."""
    return format(Decimal(repr(float(rate))), "f")


def _plain(text: str) -> str:
    """``1e+16`` -> ``10000000000000000``, ``5e-05`` -> ``0.00005``, ``3.0`` -> ``3``.

    Always positional, however long (309 digits for the largest double, about
    330 characters for the smallest): Etsy's ``Number()`` reads it exactly, and
    no statsd parser has to know exponents (Etsy's own sample-rate pattern
    reads ``1e-05`` as 1).
    """
    if "e" in text:
        text = format(Decimal(text), "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text


def _tidy_dots(text: str) -> str:
    """``.a..b.`` -> ``a.b``: no empty part between dots, none at either end."""
    return _DOT_RUNS.sub(".", text).strip(".")
