"""Librato's mapping: summaries in, measurements and JSON bodies out (pure: no sockets).

See :mod:`zibrato.backends.librato` (the destination) and docs/LIBRATO.md: a
counter becomes a gauge of its per-flush sum; a gauge, its last value; a
timer or a histogram, one summary gauge plus one gauge per percentile; a set,
a gauge of its unique members. Names, sources, tag names and tag values are
fitted to Librato's rules by :class:`~zibrato.names.NameFitter` (each change
logged once and counted in ``names_changed``); Librato keeps one value per
series and time, so a second measurement of a series in one interval is
dropped and counted.
"""

from __future__ import annotations

import logging
import math
import re
import socket

from ..names import NameFitter
from ..runtime import printable
from ..series_guard import SeriesGuard
from ..summary import Summary

APIS = ("legacy", "tagged")
MAX_NAME_LENGTH = 255
MAX_TAG_NAME_LENGTH = 64
MAX_TAG_VALUE_LENGTH = 255
MAX_TAGS = 50  # tag names per measurement (Librato's default limit)
_INVALID_NAME = re.compile(r"[^A-Za-z0-9.:_\-]")
_INVALID_TAG_NAME = re.compile(r"[^A-Za-z0-9.:_\-]")
_INVALID_TAG_VALUE = re.compile(r"[^A-Za-z0-9.:_\- ]")
_PERCENTILE_KEY = re.compile(r"p\d+(?:_\d+)?\Z")
_TIMER_FIELDS = ("count", "sum", "min", "max", "sum_squares")
_TAGGED_TIMER_FIELDS = ("count", "sum", "min", "max", "stddev")
_MAX_REMEMBERED_NAMES = 100_000
NAME_RULE = "at most 255 characters of A-Z a-z 0-9 . : - _"
TAG_NAME_RULE = "tag names: 1-64 characters of a-z 0-9 . : - _, lower-cased"
TAG_VALUE_RULE = "tag values: 1-255 characters of a-z 0-9 . : - _ and space, lower-cased"


def _fit_tag_name(text: str, limit: int | None) -> str:
    return _INVALID_TAG_NAME.sub("_", text)[:MAX_TAG_NAME_LENGTH].lower()


def _fit_tag_value(text: str, limit: int | None) -> str:
    return _INVALID_TAG_VALUE.sub("_", text)[:MAX_TAG_VALUE_LENGTH].lower()


def _fit_source(text: str, limit: int | None) -> str:
    fixed = _INVALID_NAME.sub("_", text)[:MAX_NAME_LENGTH]
    return fixed + "_" if fixed.lower() == "all" else fixed  # 'all' is reserved


class LibratoMapping:
    """Summaries to Librato measurements and JSON bodies (pure: no sockets)."""

    def __init__(self, api: str = "legacy", source: str | None = None, log: logging.Logger | None = None) -> None:
        if api not in APIS:
            raise ValueError(f"unknown API {api!r} (legacy or tagged)")
        self.api = api
        self.log = log or logging.getLogger("zibrato.librato")
        self.guard = SeriesGuard(self.log)  # a series whose measurements raise is dropped alone
        self.names = NameFitter(self.log, NAME_RULE, _INVALID_NAME, destination="Librato")
        self.sources = NameFitter(self.log, NAME_RULE + "; 'all' is reserved", fit=_fit_source, destination="Librato")
        self.default_source = self.sources(source, kind="source") if source else None
        # Librato lower-cases tags itself: fitting does it first, so two tags that
        # Librato would merge are merged (and logged) here, never sent as one series twice
        self.tag_names = NameFitter(self.log, TAG_NAME_RULE, fit=_fit_tag_name, destination="Librato")
        self.tag_values = NameFitter(self.log, TAG_VALUE_RULE, fit=_fit_tag_value, destination="Librato")
        self.tags_dropped = 0  # past MAX_TAGS per measurement
        self.duplicates = 0
        self.not_finite = 0
        self._duplicates_logged: set[str] = set()

    @property
    def names_changed(self) -> int:
        return self.names.changed + self.sources.changed + self.tag_names.changed + self.tag_values.changed

    def measurements(self, summaries: list[Summary]) -> list[dict]:
        """Librato measurements for one interval's summaries (see the module docstring)."""
        out: list[dict | None] = []
        tagged = self.api == "tagged"
        for s in summaries:
            try:
                out.extend(self._series_measurements(s, tagged))
            except Exception as error:  # this series alone, never the interval
                self.guard.dropped(s, error)
        finite = [m for m in out if m is not None]
        if len(finite) < len(out):  # pragma: no cover - aggregation never produces NaN
            self.not_finite += len(out) - len(finite)
            self.log.error("dropped %d measurements that are not finite numbers", len(out) - len(finite))
        return self._without_duplicates(finite)

    def _series_measurements(self, s: Summary, tagged: bool) -> list[dict | None]:
        kind = s["type"]
        if kind not in ("counter", "gauge", "timer", "histogram", "set"):  # set: a gauge of its count
            return []
        extra = self._tags(s) if tagged else self._source(s)
        if kind in ("timer", "histogram"):
            if not s.get("count"):
                return []
            suffixes = [k for k in s if _PERCENTILE_KEY.match(k)]
            room = max((len(k) + 1 for k in suffixes), default=0)
            name = self.names(s["name"], MAX_NAME_LENGTH - room)
            fields = _TAGGED_TIMER_FIELDS if tagged else _TIMER_FIELDS
            out = [_finite({"name": name, **{f: s[f] for f in fields}, **extra})]
            out.extend(_finite({"name": f"{name}.{k}", "value": s[k], **extra}) for k in suffixes)
            return out
        return [_finite({"name": self.names(s["name"], MAX_NAME_LENGTH), "value": s["value"], **extra})]

    def _drop_tag(self, summary: Summary, tag: str) -> None:
        """A tag past Librato's 50 per measurement: dropped, counted, the first one logged."""
        self.tags_dropped += 1
        if self.tags_dropped == 1:
            self.log.warning(
                "series %s has more than %d tags, Librato's limit: tag %s and any past it are dropped "
                "(tags_dropped counts them; this is logged once)",
                printable(summary["name"]),
                MAX_TAGS,
                printable(tag),
            )

    def _without_duplicates(self, measurements: list[dict]) -> list[dict]:
        """Keep the first measurement of each series; Librato would keep only one of two anyway.

        Two Zibrato series can meet in one Librato series: a timer ``x``'s
        ``x.p95`` and a gauge named ``x.p95``, or names that sanitise alike
        (``a b`` and ``a_b``). Sending both would let Librato pick one silently.
        """
        seen: set[tuple] = set()
        kept = []
        for measurement in measurements:
            key = _series_key(measurement)
            if key in seen:
                self.duplicates += 1
                self._warn_duplicate(measurement)
                continue
            seen.add(key)
            kept.append(measurement)
        return kept

    def _warn_duplicate(self, measurement: dict) -> None:
        name = measurement["name"]
        if name in self._duplicates_logged:
            return
        if len(self._duplicates_logged) >= _MAX_REMEMBERED_NAMES:
            self._duplicates_logged.clear()
        self._duplicates_logged.add(name)
        where = measurement.get("source") or measurement.get("tags")
        self.log.warning(
            "two series become the Librato measurement %s%s in one interval (a timer's "
            "percentile gauge and a series of that name, or names that differ only in "
            "characters sent as _): only the first is sent (measurements_duplicate; "
            "logged once per name)",
            name,
            f" ({printable(where)})" if where else "",
        )

    def payload(self, time: float, batch: list[dict]) -> dict:
        """The JSON body for one batch, stamped with the flush boundary (see :func:`measure_time`)."""
        if self.api == "tagged":
            return {"time": measure_time(time), "measurements": batch}
        return {"measure_time": measure_time(time), "gauges": batch}

    def _source(self, summary: Summary) -> dict:
        """Legacy API: the series' source (or the default), with its tags folded in.

        The source-based API has no tags; dropping them would send series that
        differ only by tags as duplicates of one name and source, and Librato
        keeps one of those. So ``source`` becomes ``source.k1:v1.k2:v2``.
        """
        parts = [summary.get("source") or self.default_source or ""]
        parts += sorted(summary.get("tags") or ())
        source = ".".join(p for p in parts if p)
        return {"source": self.sources(source, kind="source")} if source else {}

    def _tags(self, summary: Summary) -> dict:
        """Tagged API: Zibrato's ``k:v`` tags, plus the source as the tag ``source``."""
        tags: dict[str, str] = {}
        source = summary.get("source") or self.default_source or _hostname()
        tags["source"] = self.tag_values(source, kind="source tag")
        for tag in summary.get("tags") or ():
            key, _, value = tag.partition(":")
            key = self.tag_names(key, kind="tag name")
            if key:
                if key not in tags and len(tags) >= MAX_TAGS:
                    self._drop_tag(summary, tag)
                    continue
                tags[key] = self.tag_values(value, kind="tag value") if value else "true"
        return {"tags": tags}


def measure_time(time: float) -> int:
    """Librato takes whole seconds: the boundary, rounded up.

    Boundaries of a flush interval of whole seconds are whole already; the
    final, partial interval flushed at stop ends between two seconds, and
    rounding it up keeps it apart from the boundary before it (rounding down
    could give both the same time, and Librato would keep only one).
    """
    return math.ceil(time - 1e-6)


def _finite(measurement: dict) -> dict | None:
    """Librato cannot take NaN or infinity (aggregation should never produce them).

    A value that is not a number at all raises: the series is dropped by its
    guard, rather than failing the JSON encoding of its whole batch.
    """
    for key, value in measurement.items():
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if key not in _TEXT_KEYS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"measurement {key} {value!r} is not a number")
    return measurement


_TEXT_KEYS = frozenset(("name", "source", "tags"))


def _series_key(measurement: dict) -> tuple:
    """What Librato keeps one value of per time: the name and the source (or the tags)."""
    tags = measurement.get("tags")
    return (measurement["name"], measurement.get("source"), tuple(sorted(tags.items())) if tags else None)


def _hostname() -> str:
    return socket.gethostname().split(".")[0] or "zibrato"
