"""Wire protocol v1: how a batch of measurements travels from client to worker.

One ZeroMQ message is one frame::

    <level as UTF-8> 0x00 <msgpack payload>

The level and its NUL terminator lead the frame so that a SUB socket
subscribed to ``b"info\\x00"`` matches the level ``info`` *exactly*: ZeroMQ
subscriptions are byte-prefix matches, and without the terminator ``info``
would also receive ``information``.

The payload is a msgpack array ``[version, time, records]``:

* ``version`` -- integer, :data:`VERSION` (1). Receivers reject others.
* ``time`` -- float, Unix seconds when the client sent the batch; it is the
  timestamp of every measurement in the batch.
* ``records`` -- array of ``[type, name, values, source, tags]``: ``type`` is
  ``"c"`` (counter), ``"g"`` (gauge) or ``"t"`` (timer, seconds); ``values``
  a non-empty array of the series' measurements in the order taken;
  ``source`` a string or nil; ``tags`` an array of ``"key:value"`` strings.

Grouping a series' values into one record is what makes the client cheap:
a hot loop of a million timer calls costs one record per batch, not a
million. See docs/PROTOCOL.md for the full description.
"""
from __future__ import annotations

import math
import re
from typing import Any, NamedTuple, Sequence

import msgpack

VERSION = 1
COUNTER, GAUGE, TIMER = "c", "g", "t"
#: protocol 1.1 kinds (docs/PROTOCOL.md): a distribution of any quantity, and unique members
HISTOGRAM, SET = "h", "s"
TYPES = frozenset((COUNTER, GAUGE, TIMER))
TYPE_NAMES = {COUNTER: "counter", GAUGE: "gauge", TIMER: "timer", HISTOGRAM: "histogram", SET: "set"}
MAX_NAME_LENGTH = 255
MAX_TAG_LENGTH = 255
MAX_TAGS = 64
#: the broker's default limit on a message (ZMQ_MAXMSGSIZE); clients split bigger ones
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
LEVEL_TERMINATOR = b"\x00"
LEVEL_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")


def is_valid_level(level: object) -> bool:
    """1-64 characters of A-Z a-z 0-9 _ . - (no NUL, no comma: levels are listed as a,b,c)."""
    return isinstance(level, str) and LEVEL_PATTERN.match(level) is not None


# --- the one definition of what a name, a source and a tag may be ----------
# The client raises with these messages; the decoder rejects with them.

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name_problem(name: object, what: str = "name") -> str | None:
    """Why ``name`` (a metric name or a source) is not valid, or None when it is.

    1-255 characters, no control characters (a newline in a name would forge
    log lines and break line protocols downstream), encodable as UTF-8.
    """
    if not isinstance(name, str) or not name:
        return f"{what} must be a non-empty string, got {_short(name)}"
    if len(name) > MAX_NAME_LENGTH:
        return f"{what} is longer than {MAX_NAME_LENGTH} characters: {_short(name)}"
    if _CONTROL.search(name):
        return f"{what} contains control characters: {_short(name)}"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} cannot be encoded as UTF-8: {_short(name)}"
    return None


def tag_problem(tag: object) -> str | None:
    """Why ``tag`` is not a valid ``key:value`` tag string, or None when it is."""
    if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_LENGTH or _CONTROL.search(tag):
        return f"bad tag {_short(tag)}: a non-empty string of at most {MAX_TAG_LENGTH} characters " \
               "without control characters"
    return None


def tags_problem(tags: Sequence[object]) -> str | None:
    """Why a sequence of tags is not valid (too many, or one bad tag), or None."""
    if len(tags) > MAX_TAGS:
        return f"{len(tags)} tags: at most {MAX_TAGS} per measurement"
    for tag in tags:
        problem = tag_problem(tag)
        if problem:
            return problem
    return None


def _short(value: object, limit: int = 60) -> str:
    """A repr safe to put in an error or a log line: escaped and truncated."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} characters)"


class ProtocolError(ValueError):
    """A message that is not valid protocol v1 (the reason is the text)."""


class Record(NamedTuple):
    """One series' measurements within a batch."""

    type: str
    name: str
    values: Sequence[float]
    source: str | None
    tags: tuple[str, ...]


class Batch(NamedTuple):
    """A decoded message."""

    level: str
    time: float
    records: Sequence[Record]  # a list from decode(), the decoded tuple from decode_plain()


def topic(level: str) -> bytes:
    """The leading bytes that a subscriber to ``level`` (and only it) matches."""
    return level.encode("utf-8") + LEVEL_TERMINATOR


def encode(level: str, time: float, records: Sequence[Sequence[Any]]) -> bytes:
    """One message for ``records`` (sequences shaped like :class:`Record`)."""
    payload: bytes = msgpack.packb([VERSION, time, records], use_bin_type=True)
    return topic(level) + payload


def decode(frame: bytes) -> Batch:
    """Parse and validate a message; raise :class:`ProtocolError` if it is not v1."""
    level, time, records = _validated_batch(frame)
    return Batch(level, time, [_new_record(Record, record) for record in records])


def decode_plain(frame: bytes) -> Batch:
    """:func:`decode`, with each record a plain tuple in :class:`Record`'s order.

    The same validation, a third cheaper for one-value records (the worker's
    worst case), because no named tuple is built per record: what the
    worker's ingest loop, which only unpacks records, uses.
    """
    return Batch(*_validated_batch(frame))


def _validated_batch(frame: bytes) -> tuple[str, float, Sequence[Any]]:
    level_bytes, sep, payload = bytes(frame).partition(LEVEL_TERMINATOR)
    if not sep:
        raise ProtocolError("no level terminator")
    try:
        level = level_bytes.decode("utf-8")
        body = msgpack.unpackb(payload, use_list=False, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as error:
        raise ProtocolError(f"undecodable payload: {error}") from None
    if not isinstance(body, tuple) or len(body) != 3:
        raise ProtocolError("payload is not [version, time, records]")
    version, time, records = body
    if type(version) is not int or version != VERSION:
        raise ProtocolError(f"unknown protocol version {version!r}")
    if not _is_number(time) or not isinstance(records, tuple):
        raise ProtocolError("bad batch time or records")
    return level, float(time), _validated_records(records)


_new_record = tuple.__new__
_STR, _TUPLE, _sum, _join = str, tuple, sum, "".join


def _validated_records(records: tuple[Any, ...]) -> tuple[Any, ...]:
    """Validate every record and return them as they are.

    The worker's hot path: one loop rather than a call per record (a Python
    call costs as much as these checks), with checks ordered and spelled for
    speed: exact class tests, one C-level sum for the values, one C-level
    join for the tags.
    """
    for raw in records:
        if raw.__class__ is not _TUPLE or len(raw) != 5:
            raise ProtocolError("record is not [type, name, values, source, tags]")
        type_, name, values, source, tags = raw
        if type_.__class__ is not _STR or type_ not in TYPES:
            raise ProtocolError(f"unknown measurement type {type_!r}")
        if name.__class__ is not _STR or not name:
            raise ProtocolError("record without a name")
        if values.__class__ is not _TUPLE or not values:
            raise ProtocolError(f"{name}: values must be a non-empty array of finite numbers")
        try:
            finite = _isfinite(_sum(values))
        except TypeError:
            raise ProtocolError(f"{name}: values must be finite numbers") from None
        if not finite and not _all_finite_numbers(values):
            raise ProtocolError(f"{name}: values must be finite numbers")
        if source is not None and source.__class__ is not _STR:
            raise ProtocolError(f"{name}: source must be a string or nil")
        if tags.__class__ is not _TUPLE:
            raise ProtocolError(f"{name}: tags must be an array of strings")
        if tags:
            try:
                _join(tags)  # raises TypeError unless every tag is a string
            except TypeError:
                raise ProtocolError(f"{name}: tags must be an array of strings") from None
    return records


_isfinite = math.isfinite


def _all_finite_numbers(values: tuple[Any, ...]) -> bool:
    """True when every value is a finite number; one C-level sum, not a Python loop.

    (A msgpack boolean passes as 0 or 1, which is harmless.)
    """
    try:
        if _isfinite(sum(values)):
            return True
    except TypeError:
        return False
    # The sum of finite values can overflow (1e308 + 1e308): only then look at each one.
    return all(math.isfinite(value) for value in values)


def _is_number(value: object) -> bool:
    return (type(value) is int or type(value) is float) and math.isfinite(value)
