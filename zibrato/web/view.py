"""What the web page shows, as plain data: the last interval's table and each series' recent points.

The mapping from a summary to the page's JSON is a set of pure functions
(:func:`series_id`, :func:`row`, :func:`point`), so that any runtime can feed
:class:`History`: today's ``Backend.post(time, summaries)`` or a destination's
``post(interval)``. History holds the last N intervals in memory, compactly
(one small tuple per series and interval, not the summaries), and answers the
JSON endpoints of docs/WEB.md. It never raises on odd summaries: a missing
statistic is ``null`` on the page.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..summary import Summary

#: the statistics a table row shows, per type (those the summary has)
STAT_KEYS = {
    "counter": ("value", "rate", "count"),
    "gauge": ("value", "min", "max", "count"),
    "timer": ("count", "mean", "p50", "p90", "p99", "max"),
    "histogram": ("count", "mean", "p50", "p90", "p99", "max"),
    "set": ("value",),
}
#: the summary keys a chart plots, per type (a set's unique count is its "value")
CHART_FIELDS = {
    "counter": ("rate",),
    "gauge": ("value",),
    "timer": ("p50", "p90", "p99", "max"),
    "histogram": ("p50", "p90", "p99", "max"),
    "set": ("value",),
}
#: the percentiles the charts need; the web worker always computes them
CHART_PERCENTILES = (50.0, 90.0, 99.0)
OUTCOME_PREFIX = "outcome:"
ERROR_PREFIX = "error:"
MAX_PAGE = 1000


def series_id(summary: Summary) -> str:
    """A short id, stable across intervals and restarts, for (type, name, source, tags)."""
    key = json.dumps(
        [summary.get("type"), summary.get("name"), summary.get("source"), list(summary.get("tags") or ())],
        separators=(",", ":"),
    )
    return hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest()


def outcome_of(tags: Sequence[str]) -> str | None:
    """'ok' for a series tagged outcome:ok, 'error' for outcome:error, else None."""
    for tag in tags:
        if tag.startswith(OUTCOME_PREFIX):
            return tag[len(OUTCOME_PREFIX) :]
    return None


def group_key(summary: Summary) -> tuple:
    """Series that differ only by their outcome (and error class) tags form one group.

    ``@time_me(..., outcome=True)`` makes ``outcome:ok`` and
    ``error:KeyError,outcome:error`` series of one call: the page shows them side by side.
    """
    tags = tuple(
        t for t in summary.get("tags") or () if not t.startswith(OUTCOME_PREFIX) and not t.startswith(ERROR_PREFIX)
    )
    return (summary.get("type"), summary.get("name"), summary.get("source"), tags)


def row(summary: Summary, sid: str | None = None) -> dict:
    """One table row: identity plus the main statistics of the type (``sid``: its id, if known)."""
    type_ = summary.get("type")
    tags = list(summary.get("tags") or ())
    stats = {key: _number(summary[key]) for key in STAT_KEYS.get(type_ or "", ()) if key in summary}
    return {
        "id": sid or series_id(summary),
        "type": type_,
        "name": summary.get("name"),
        "source": summary.get("source"),
        "tags": tags,
        "outcome": outcome_of(tags),
        "unit": _unit(summary),
        "stats": stats,
    }


def point(summary: Summary) -> tuple:
    """The charted statistics of one summary, in :data:`CHART_FIELDS` order (None when absent)."""
    return tuple(_number(summary.get(key)) for key in CHART_FIELDS.get(summary.get("type", ""), ()))


def _unit(summary: Summary) -> str | None:
    if summary.get("type") == "timer":
        return "s"
    unit = summary.get("unit")
    return unit if isinstance(unit, str) else None


def _number(value: object) -> float | None:
    """A finite number as is; anything else (absent, NaN, a string, a bool) as None: JSON null."""
    if type(value) is float:  # exactly: a bool is an int subclass, and not a number here
        return value if math.isfinite(value) else None
    return value if type(value) is int else None


def _sort_key(r: dict) -> tuple:
    outcome_rank = {"ok": 0, "error": 1}.get(r["outcome"] or "", 2)
    base = [t for t in r["tags"] if not t.startswith((OUTCOME_PREFIX, ERROR_PREFIX))]
    return (r["type"] or "", r["name"] or "", r["source"] or "", base, outcome_rank, r["tags"])


@dataclass(frozen=True)
class _Latest:
    """The last interval, ready to filter: replaced whole at each post, read without a lock."""

    time: float | None = None
    interval: float | None = None
    rows: tuple = ()
    texts: tuple = ()  # lower-cased "type name source tags" per row, for the search


@dataclass
class _Meta:
    """What a chart needs to know of a series seen in the held intervals."""

    row: dict
    group: tuple
    last_seen: float
    key: tuple  # (type, name, source, tags): the key of History's identity cache


@dataclass
class _Held:
    time: float
    interval: float
    points: dict = field(default_factory=dict)  # series id -> point tuple


class History:
    """The last ``size`` intervals; thread-safe (one writer, many HTTP readers).

    ``version`` grows by one at each interval, so that pages can tell a new flush
    (server-sent events announce it; pollers compare it).
    """

    def __init__(self, size: int = 60) -> None:
        if size < 1:
            raise ValueError("the history must hold at least one interval")
        self.size = size
        self.version = 0
        self._latest = _Latest()
        self._held: collections.deque[_Held] = collections.deque(maxlen=size)
        self._meta: dict[str, _Meta] = {}
        self._groups: dict[tuple, dict[str, None]] = {}  # insertion-ordered sets of ids
        # (type, name, source, tags) -> (id, group key): hashing once per series, not per interval
        self._identities: dict[tuple, tuple[str, tuple]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._latest.rows)

    # --- writing ---------------------------------------------------------

    def add(self, time: float, interval: float, summaries: Iterable[Summary]) -> None:
        """Hold one interval (an empty one too: the charts' time axis moves on)."""
        rows, held = [], _Held(time, interval)
        metas = []
        identities = self._identities
        for summary in summaries:
            key = (summary.get("type"), summary.get("name"), summary.get("source"), tuple(summary.get("tags") or ()))
            identity = identities.get(key)
            if identity is None:  # a new series (read-only here: only this thread writes)
                identity = (series_id(summary), group_key(summary))
            r = row(summary, identity[0])
            rows.append(r)
            held.points[r["id"]] = point(summary)
            metas.append((r, identity[1], key, identity))
        rows.sort(key=_sort_key)
        latest = _Latest(time, interval, tuple(rows), tuple(_search_text(r) for r in rows))
        with self._lock:
            self._held.append(held)
            for r, group, key, identity in metas:
                self._remember(r, group, key, time)
                identities[key] = identity
            self._forget_older_than(self._held[0].time)
            self._latest = latest
            self.version += 1
            self._changed.notify_all()

    def _remember(self, r: dict, group: tuple, key: tuple, time: float) -> None:
        meta = self._meta.get(r["id"])
        if meta is None:
            self._meta[r["id"]] = _Meta(r, group, time, key)
            self._groups.setdefault(group, {})[r["id"]] = None
        else:
            meta.row, meta.last_seen = r, time

    def _forget_older_than(self, oldest: float) -> None:
        """Series seen in no held interval leave the charts' index."""
        gone = [sid for sid, meta in self._meta.items() if meta.last_seen < oldest]
        for sid in gone:
            meta = self._meta.pop(sid)
            self._identities.pop(meta.key, None)
            members = self._groups.get(meta.group)
            if members is not None:
                members.pop(sid, None)
                if not members:
                    del self._groups[meta.group]

    # --- reading (the JSON endpoints) ---------------------------------------

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Block until ``version`` passes ``seen`` or ``timeout`` ends; the version then."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != seen, timeout)
            return self.version

    def wake_all(self) -> None:
        """Wake every waiter (at shutdown, so that event streams end)."""
        with self._changed:
            self._changed.notify_all()

    def summary(self) -> dict:
        """GET /api/summary."""
        latest = self._latest
        return {
            "version": self.version,
            "time": latest.time,
            "interval": latest.interval,
            "series": len(latest.rows),
            "intervals": len(self._held),
            "history": self.size,
        }

    def table(self, query: str = "", type: str = "", offset: int = 0, limit: int = 100) -> dict:
        """GET /api/series: the last interval's rows matching every word of ``query``, one page."""
        latest = self._latest
        offset, limit = max(0, offset), min(max(1, limit), MAX_PAGE)
        words = query.lower().split()
        matched: Sequence[dict]
        if words or type:
            matched = [
                r
                for r, text in zip(latest.rows, latest.texts)
                if (not type or r["type"] == type) and all(w in text for w in words)
            ]
        else:
            matched = latest.rows
        return {
            "version": self.version,
            "time": latest.time,
            "interval": latest.interval,
            "query": query,
            "type": type,
            "total": len(latest.rows),
            "matched": len(matched),
            "offset": offset,
            "limit": limit,
            "rows": list(matched[offset : offset + limit]),
        }

    def chart(self, sid: str) -> dict | None:
        """GET /api/chart: the series and its outcome siblings over the held intervals; None if unknown."""
        with self._lock:
            meta = self._meta.get(sid)
            if meta is None:
                return None
            members = sorted(self._groups.get(meta.group, {sid: None}), key=lambda m: _outcome_rank(self._meta[m].row))
            held = list(self._held)
            rows = [self._meta[m].row for m in members]
        fields = CHART_FIELDS.get(meta.row["type"], ())
        return {
            "id": sid,
            "version": self.version,
            "type": meta.row["type"],
            "name": meta.row["name"],
            "source": meta.row["source"],
            "unit": meta.row["unit"],
            "fields": list(fields),
            "times": [h.time for h in held],
            "series": [_chart_series(r, held, fields) for r in rows],
        }


def _chart_series(r: dict, held: list[_Held], fields: Sequence[str]) -> dict:
    points = []
    for h in held:
        values = h.points.get(r["id"])
        if values is not None:
            points.append({"time": h.time, "interval": h.interval, **dict(zip(fields, values))})
    return {"id": r["id"], "tags": r["tags"], "outcome": r["outcome"], "points": points}


def _outcome_rank(r: dict) -> tuple:
    return ({"ok": 0, "error": 1}.get(r["outcome"] or "", 2), r["tags"])


def _search_text(r: dict) -> str:
    return " ".join([r["type"] or "", r["name"] or "", r["source"] or "", *r["tags"]]).lower()
