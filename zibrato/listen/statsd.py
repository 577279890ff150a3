"""The statsd / DogStatsD line parser: bytes in, series and values out, no sockets.

Grammar (docs/INGRESS.md has every choice where the peers disagree)::

    name:value[:value...]|type[|@rate][|#tag,k:v][|T<unix seconds>][|anything else]

Several lines per datagram or TCP chunk, separated by ``\\n`` (``\\r\\n``
tolerated). A bad line is counted by reason and skipped; the other lines of
the datagram are kept. Nothing here raises on any input.

Speed: a listener's whole cost is this loop, so the part of a line after the
value (type, rate, tags) is parsed once per distinct ``(name, suffix)`` and
cached; a repeated line costs a dict lookup, a float() and a list append.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable

from .. import protocol
from ..summary import STATSD_TYPES
from .series import Pending, Rejects, Series

DEFAULT_LEVEL = "statsd"
DEFAULT_MAX_LINE = 8192
DEFAULT_TIMESTAMP_WINDOW = 3600.0
#: seconds a gauge's value is remembered (for deltas) after its last line: forgotten after 1-2 times this
DEFAULT_GAUGE_EXPIRE = 3600.0
#: gauges remembered at most (per generation: see :meth:`StatsdParser.expire_gauges`)
DEFAULT_MAX_GAUGES = 100_000
GAUGE_SIGNS = ("delta", "absolute")

# Kinds of value handling (what the cache stores besides the series).
_COUNTER, _GAUGE, _TIMER, _DISTRIBUTION, _SET = range(5)
_HANDLING = {
    protocol.COUNTER: _COUNTER,
    protocol.GAUGE: _GAUGE,
    protocol.TIMER: _TIMER,
    protocol.HISTOGRAM: _DISTRIBUTION,
    protocol.SET: _SET,
}
#: statsd type suffix -> (handling, wire code); the suffixes are declared in zibrato.summary
_TYPES = {suffix: (_HANDLING[code], code) for suffix, code in STATSD_TYPES.items()}
_CACHE_LIMIT = 100_000

#: every reason a line can be rejected for (the keys of ``rejected`` in status)
REASONS = (
    "invalid utf-8",
    "line too long",
    "malformed line",
    "empty name",
    "bad name",
    "unknown type",
    "bad value",
    "non-finite value",
    "non-finite after rate",
    "non-finite gauge",
    "negative timer",
    "bad rate",
    "bad tag",
    "bad level",
    "bad timestamp",
    "timestamp out of window",
)


class _Reject(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


class StatsdParser:
    """Parses statsd/DogStatsD datagrams and stream lines into a ``pending`` mapping.

    Keeps one piece of state besides its cache: each gauge's current value,
    which a delta gauge (``+5``, ``-5`` with ``gauge_sign="delta"``) needs.
    """

    def __init__(
        self,
        level: str = DEFAULT_LEVEL,
        gauge_sign: str = "delta",
        max_line: int = DEFAULT_MAX_LINE,
        timestamp_window: float = DEFAULT_TIMESTAMP_WINDOW,
        rejects: Rejects | None = None,
        clock: Callable[[], float] = _time.time,
    ) -> None:
        if not protocol.is_valid_level(level):
            raise ValueError(f"invalid level {level!r}: 1-64 characters of A-Z a-z 0-9 _ . -")
        if gauge_sign not in GAUGE_SIGNS:
            raise ValueError(f"gauge sign must be one of {', '.join(GAUGE_SIGNS)}")
        self.level, self.delta_gauges = level.lower(), gauge_sign == "delta"  # levels are case-insensitive
        self.max_line, self.timestamp_window, self.clock = max_line, timestamp_window, clock
        self.rejects = rejects if rejects is not None else Rejects()
        #: lines accepted so far (each may carry several packed values)
        self.lines = 0
        #: the current value of every gauge with a line since the last expiry, for deltas; and of
        #: those idle since (forgotten at the next expiry unless they come back): memory is bounded
        self.gauges: dict[Series, float] = {}
        self.idle_gauges: dict[Series, float] = {}
        #: gauges forgotten by expiry (a later delta then starts from 0)
        self.gauges_expired = 0
        self._cache: dict[tuple[str, str], tuple[int, Series, float]] = {}

    # --- input -----------------------------------------------------------

    def feed(self, data: bytes, pending: Pending) -> int:
        """Parse one datagram (or a run of complete stream lines); return the lines accepted."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._feed_checking_each_line(data, pending)
        except AttributeError:  # a str: already text
            text = data  # type: ignore[assignment]
        return self.feed_text(text, pending)

    def _feed_checking_each_line(self, data: bytes, pending: Pending) -> int:
        accepted = 0
        for raw in data.split(b"\n"):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.rejects("invalid utf-8", raw)
                continue
            accepted += self.feed_text(line, pending)
        return accepted

    def feed_text(self, text: str, pending: Pending) -> int:
        """The hot loop: every line of ``text`` into ``pending``."""
        accepted = 0
        cache, max_line, reject = self._cache, self.max_line, self.rejects
        for line in text.split("\n"):
            if not line:
                continue
            if line[-1] == "\r":
                line = line[:-1]
                if not line:
                    continue
            if len(line) > max_line and len(line.encode("utf-8")) > max_line:
                reject("line too long", line)
                continue
            name, _, rest = line.partition(":")
            value_text, bar, suffix = rest.partition("|")
            entry = cache.get((name, suffix))
            if entry is None:
                try:
                    entry = self._entry(name, bar, suffix)
                except _Reject as error:
                    reject(error.reason, line)
                    continue
            kind, series, scale = entry
            if series.time is not None and abs(series.time - self.clock()) > self.timestamp_window:
                reject("timestamp out of window", line)
                continue
            if kind == _SET or ":" in value_text:
                reason = self._add_packed(kind, series, scale, value_text, pending)
                if reason:
                    reject(reason, line)
                    continue
            else:
                try:
                    value = float(value_text)
                except ValueError:
                    reject("bad value", line)
                    continue
                if value - value != 0:
                    reject("non-finite value", line)
                    continue
                if "_" in value_text or " " in value_text:  # float() takes "1_000" and " 5"
                    reject("bad value", line)
                    continue
                if kind == _COUNTER:
                    value *= scale
                    if value - value != 0:  # 1e300|c|@1e-10: finite in, infinite once scaled
                        reject("non-finite after rate", line)
                        continue
                elif kind == _TIMER:
                    if value < 0:
                        reject("negative timer", line)
                        continue
                    value *= 0.001
                elif kind == _GAUGE:
                    gauge = self._gauge(series, value_text, value)
                    if gauge is None:
                        reject("non-finite gauge", line)
                        continue
                    value = gauge
                values = pending.get(series)
                if values is None:
                    pending[series] = [value]
                else:
                    values.append(value)
            accepted += 1
        self.lines += accepted
        return accepted

    # --- what a line means ------------------------------------------------

    def _entry(self, name: str, bar: str, suffix: str) -> tuple[int, Series, float]:
        """Parse everything after the value once, and cache it."""
        if not bar:
            raise _Reject("malformed line" if name else "empty name")
        if not name:
            raise _Reject("empty name")
        if protocol.name_problem(name):
            raise _Reject("bad name")
        fields = suffix.split("|")
        try:
            kind, type_ = _TYPES[fields[0]]
        except KeyError:
            raise _Reject("unknown type") from None
        rate = 1.0
        timestamp: float | None = None
        given: list[str] = []
        for field in fields[1:]:
            if not field:
                continue
            first = field[0]
            if first == "@":
                rate = _rate(field[1:])
            elif first == "#":
                given.extend(tag for tag in field[1:].split(",") if tag)
            elif first == "T":
                timestamp = _timestamp(field[1:])
            # anything else (DogStatsD's |c:<container>, future fields) is ignored
        level, source, tags = self._routing(given)
        weight = None if rate == 1.0 or kind not in (_TIMER, _DISTRIBUTION) else 1.0 / rate
        scale = 1.0 / rate if kind == _COUNTER else 1.0
        series = Series(level, type_, name, source, tags, weight, None, timestamp)
        entry = (kind, series, scale)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[(name, suffix)] = entry
        return entry

    def _routing(self, tags: list[str]) -> tuple[str, str | None, tuple[str, ...]]:
        """``host:`` becomes the source, ``level:`` the level; the rest stay tags, sorted."""
        level, source, kept = self.level, None, set()
        for tag in tags:
            if tag.startswith("host:"):
                source = tag[5:] or None
                if source is not None and protocol.name_problem(source, "source"):
                    raise _Reject("bad tag")
            elif tag.startswith("level:"):
                level = tag[6:].lower()  # levels are case-insensitive: 'level:INFO' is info
                if not protocol.is_valid_level(level):
                    raise _Reject("bad level")
            else:
                kept.add(tag)
        tags_ = tuple(sorted(kept))
        if protocol.tags_problem(tags_):
            raise _Reject("bad tag")
        return level, source, tags_

    def _gauge(self, series: Series, text: str, value: float) -> float | None:
        """The gauge's new value: ``+n``/``-n`` add to the current one in delta mode.

        An unknown gauge starts at 0, so ``-5`` then means -5: the same result
        as Etsy statsd, which sets a missing (or zero) gauge to a signed value.
        None when the sum overflows (``+1e308`` twice): the line is refused and
        the gauge keeps its value.
        """
        key = series if series.time is None else series._replace(time=None)
        idle = self.idle_gauges
        previous = idle.pop(key, None) if idle else None
        if self.delta_gauges and text[0] in "+-":
            current = self.gauges.get(key, previous)
            value += 0.0 if current is None else current
            if value - value != 0:
                if previous is not None:
                    self.gauges[key] = previous
                return None
        self.gauges[key] = value
        return value

    def expire_gauges(self) -> int:
        """Forget the gauges idle since the last call (a generation); return how many.

        The listener calls it every ``--gauge-expire`` seconds, and sooner when
        more than ``--max-gauges`` are held: a gauge is forgotten after one to
        two periods without a line, and at most twice ``--max-gauges`` are
        held. Cheap on the hot path: no clock per line, one dict per generation.
        """
        expired = len(self.idle_gauges)
        self.gauges_expired += expired
        self.idle_gauges, self.gauges = self.gauges, {}
        return expired

    @property
    def gauges_held(self) -> int:
        return len(self.gauges) + len(self.idle_gauges)

    def _add_packed(self, kind: int, series: Series, scale: float, text: str, pending: Pending) -> str | None:
        """Sets, and DogStatsD 1.1 packed values ``a:1:2:3|ms``: all the line's values or none."""
        parts = text.split(":")
        if kind == _SET:
            for member in parts:
                if protocol.name_problem(member):
                    return "bad value"
            values: list = parts
        else:
            values = []
            for part in parts:
                try:
                    value = float(part)
                except ValueError:
                    return "bad value"
                if value - value != 0:
                    return "non-finite value"
                if "_" in part or " " in part:
                    return "bad value"
                if kind == _COUNTER:
                    value *= scale
                    if value - value != 0:
                        return "non-finite after rate"
                elif kind == _TIMER:
                    if value < 0:
                        return "negative timer"
                    value *= 0.001
                elif kind == _GAUGE:
                    gauge = self._gauge(series, part, value)
                    if gauge is None:
                        return "non-finite gauge"
                    value = gauge
                values.append(value)
        existing = pending.get(series)
        if existing is None:
            pending[series] = values
        else:
            existing.extend(values)
        return None


def _rate(text: str) -> float:
    # @1e-320: 1/rate is infinite
    return _number(text, float, lambda rate: 0 < rate <= 1 and 1.0 / rate < float("inf"), "bad rate")


def _timestamp(text: str) -> float:
    return float(_number(text, int, lambda seconds: seconds > 0, "bad timestamp"))


def _number(text: str, parse: Callable[[str], float], valid: Callable[[float], bool], problem: str) -> float:
    """A line's number field (``@rate``, ``T<seconds>``): parsed and checked, else the line is refused."""
    try:
        value = parse(text)
    except ValueError:
        raise _Reject(problem) from None
    if not valid(value):
        raise _Reject(problem)
    return value
