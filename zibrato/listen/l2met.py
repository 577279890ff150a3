"""The l2met log-line parser: drain bodies and log lines in, series and values out, no sockets.

Conventions (docs/INGRESS.md)::

    measure#db.latency=4ms   a timer in seconds (units ns us ms s), else a histogram with that unit
    measure.db.latency=4ms   the legacy spelling of the same
    count#db.vacuum=1        a counter (a bare ``count#db.vacuum`` counts 1)
    sample#db.size=100GB     a gauge (last value wins)
    source=prod              the source of the line's measurements (the first one wins)

Heroku router lines (app ``heroku``, process ``router``) also give
``router.connect`` and ``router.service`` (timers) and ``router.bytes`` (a
histogram of bytes). Values may be negative (l2met's own parser could not).
A tuple that does not parse is counted and skipped; the rest of the line is
kept. Nothing here raises on any input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .. import protocol
from .series import Pending, Rejects, Series, add

TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
_VALUE = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)(.*)\Z", re.S)
_UNIT = protocol.UNIT_PATTERN  # a histogram's unit, as every producer checks it
_ROUTER = {"connect": ("router.connect", "ms"), "service": ("router.service", "ms"), "bytes": ("router.bytes", "bytes")}
_MAX_LENGTH_DIGITS = 9

REASONS = ("bad frame", "invalid utf-8", "bad name", "bad value", "non-finite value", "bad unit")


class L2metParser:
    """Parses l2met conventions from log lines and logplex drain bodies into ``pending``."""

    def __init__(self, level: str = "statsd", rejects: Rejects | None = None) -> None:
        if not protocol.is_valid_level(level):
            raise ValueError(f"invalid level {level!r}: 1-64 characters of A-Z a-z 0-9 _ . -")
        self.level = level.lower()  # levels are case-insensitive
        self.rejects = rejects if rejects is not None else Rejects()
        #: measurements accepted so far
        self.measurements = 0
        #: log lines (or drain frames) read so far
        self.lines = 0

    # --- drain bodies ---------------------------------------------------------

    def feed_drain(
        self, body: bytes, pending: Pending, prefix: str | None = None, source_prefix: str | None = None
    ) -> int:
        """Every frame of a logplex/log-shuttle body; return the measurements accepted."""
        accepted = 0
        for frame in self.frames(body):
            try:
                text = frame.decode("utf-8")
            except UnicodeDecodeError:
                self.rejects("invalid utf-8", frame)
                continue
            header = syslog_header(text)
            if header is None:
                self.rejects("bad frame", frame)
                continue
            app, procid, message = header
            router = app == "heroku" and procid == "router"
            accepted += self.feed_line(message, pending, prefix, source_prefix, router=router)
        return accepted

    def frames(self, body: bytes) -> Iterator[bytes]:
        """Octet-counted frames: ``<length> <length bytes>``, repeated.

        A length that does not parse, or runs past the body, ends the body
        (nothing after it can be framed again) and is counted as a bad frame.
        """
        position, end = 0, len(body)
        while position < end:
            while position < end and body[position] in b" \r\n\t":
                position += 1
            if position >= end:
                return
            space = body.find(b" ", position, position + _MAX_LENGTH_DIGITS + 1)
            digits = body[position:space] if space > 0 else b""
            if not digits.isdigit():
                self.rejects("bad frame", body[position : position + 40])
                return
            start = space + 1
            stop = start + int(digits)
            if stop > end:
                self.rejects("bad frame", body[position : position + 40])
                return
            yield body[start:stop]
            position = stop

    # --- log lines --------------------------------------------------------------

    def feed_line(
        self,
        line: str,
        pending: Pending,
        prefix: str | None = None,
        source_prefix: str | None = None,
        router: bool = False,
    ) -> int:
        """One log line's measurements into ``pending``; return how many were accepted."""
        self.lines += 1
        if "=" not in line and "count#" not in line:
            return 0  # the common case: a log line with no measurement in it
        found: list[tuple[str, str | None, str, str]] = []  # (kind, name, value, token)
        source = None
        for token in line.split():
            key, equals, value = token.partition("=")
            if key == "source":
                if source is None and value:
                    source = value
                continue
            kind, name = _measurement_key(key)
            if kind is None:
                if router and key in _ROUTER:
                    router_name, unit = _ROUTER[key]
                    found.append(("measure", router_name, value + unit if _bare_number(value) else value, token))
                continue
            if not equals:
                if kind != "count":
                    continue  # a bare measure#/sample# key says nothing
                value = "1"
            found.append((kind, name, value, token))
        if not found:
            return 0
        source = _prefixed(source_prefix, source)
        accepted = 0
        for found_kind, found_name, text, token in found:
            named = found_name and _prefixed(prefix, found_name)
            accepted += self._add(found_kind, named, text, source, token, pending)
        self.measurements += accepted
        return accepted

    def _add(self, kind: str, name: str | None, text: str, source: str | None, token: str, pending: Pending) -> int:
        if (
            name is None
            or protocol.name_problem(name)
            or (source is not None and protocol.name_problem(source, "source"))
        ):
            self.rejects("bad name", token)
            return 0
        match = _VALUE.match(text)
        if match is None:
            self.rejects("bad value", token)
            return 0
        value, unit = float(match.group(1)), match.group(2) or None
        if value - value != 0:
            self.rejects("non-finite value", token)
            return 0
        if unit is not None and not _UNIT.match(unit):
            self.rejects("bad unit", token)
            return 0
        if kind == "count":
            series = Series(self.level, protocol.COUNTER, name, source, ())
        elif kind == "sample":
            series = Series(self.level, protocol.GAUGE, name, source, ())
        elif unit in TIME_UNITS:
            series = Series(self.level, protocol.TIMER, name, source, ())
            value *= TIME_UNITS[unit]
        else:
            series = Series(self.level, protocol.HISTOGRAM, name, source, (), None, unit)
        add(pending, series, value)
        return 1


def syslog_header(text: str) -> tuple[str, str, str] | None:
    """(app, procid, message) of an RFC5424 frame as logplex and log-shuttle send them.

    ``<pri>1 timestamp host app procid msgid [structured-data] message``;
    logplex omits the structured data, others send ``-`` for none.
    """
    parts = text.split(" ", 6)
    if len(parts) < 6 or not parts[0].startswith("<") or ">" not in parts[0]:
        return None
    app, procid = parts[3], parts[4]
    message = parts[6] if len(parts) == 7 else ""
    if message.startswith("- "):
        message = message[2:]
    elif message == "-":
        message = ""
    elif message.startswith("["):
        end = message.find("] ")
        message = message[end + 2 :] if end >= 0 else ""
    return app, procid, message.rstrip("\r\n")


def _measurement_key(key: str) -> tuple[str | None, str | None]:
    """('measure' | 'count' | 'sample', name) for a measurement key, (None, None) otherwise."""
    if key.startswith("measure#") or key.startswith("measure."):
        return "measure", key[8:] or None
    if key.startswith("count#"):
        return "count", key[6:] or None
    if key.startswith("sample#"):
        return "sample", key[7:] or None
    return None, None


def _prefixed(prefix: str | None, name: str | None) -> str | None:
    if not prefix:
        return name
    return f"{prefix}.{name}" if name else prefix


def _bare_number(text: str) -> bool:
    match = _VALUE.match(text)
    return match is not None and not match.group(2)
