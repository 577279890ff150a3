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
  ``"c"`` (counter), ``"g"`` (gauge) or ``"t"`` (timer, seconds), and since
  protocol 1.1 ``"h"`` (histogram) or ``"s"`` (set, whose values are
  members: strings or integers); ``values`` a non-empty array of the
  series' measurements in the order taken; ``source`` a string or nil;
  ``tags`` an array of ``"key:value"`` strings. Protocol 1.1 lets a record
  carry a 6th element, ``weight`` (``1 / sample rate``, nil = 1), and a 7th,
  ``unit`` (histograms only). A 1.0 record still decodes as before.

Grouping a series' values into one record is what makes the client cheap:
a hot loop of a million timer calls costs one record per batch, not a
million. See docs/PROTOCOL.md for the full description.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgpack

from . import name_rules

# The wire codes (1.0: c, g, t; 1.1: h, s; 1.2: m, a forwarder's summary) and their names are
# declared once, in zibrato.summary, and are protocol's names too.
from .summary import COUNTER as COUNTER
from .summary import GAUGE as GAUGE
from .summary import HISTOGRAM as HISTOGRAM
from .summary import SET as SET
from .summary import SUMMARY as SUMMARY
from .summary import TIMER as TIMER
from .summary import TYPE_NAMES as TYPE_NAMES

# The name rules (what a level, a name, a source, a tag, a unit may be) live in zibrato.name_rules,
# which imports nothing of Zibrato's; here under their historical names.
MAX_NAME_LENGTH, MAX_TAG_LENGTH = name_rules.MAX_NAME_LENGTH, name_rules.MAX_TAG_LENGTH
MAX_TAGS, MAX_MEMBER_LENGTH = name_rules.MAX_TAGS, name_rules.MAX_MEMBER_LENGTH
UNIT_PATTERN, LEVEL_PATTERN, CONTROL_CHARACTERS = (
    name_rules.UNIT_PATTERN,
    name_rules.LEVEL_PATTERN,
    name_rules.CONTROL_CHARACTERS,
)
is_valid_level, name_problem = name_rules.is_valid_level, name_rules.name_problem
tag_problem, tags_problem, _short = name_rules.tag_problem, name_rules.tags_problem, name_rules._short

VERSION = 1
TYPES = frozenset((COUNTER, GAUGE, TIMER, HISTOGRAM, SET, SUMMARY))
#: the kinds a summary record may summarise
SUMMARY_KINDS = frozenset((COUNTER, GAUGE, TIMER, HISTOGRAM, SET))
#: protocol 1.2 shards: a sharded frame is ``level 0x00 0x00 <shard byte> payload``
SHARDS = 64
SHARD_MARK = b"\x00"
#: protocol 1.0 kinds (what a receiver that predates 1.1 knows)
TYPES_1_0 = frozenset((COUNTER, GAUGE, TIMER))
#: names, sources, tag tuples and levels already validated are remembered, up to this many each
#: (then forgotten all at once): validation costs a lookup per record, not a regex
MAX_REMEMBERED = 65_536
#: the broker's default limit on a message (ZMQ_MAXMSGSIZE); clients split bigger ones
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
LEVEL_TERMINATOR = b"\x00"


class ProtocolError(ValueError):
    """A message that is not valid protocol v1 (the reason is the text)."""


class Record(NamedTuple):
    """One series' measurements within a batch (weight and unit: protocol 1.1, absent = 1 and None)."""

    type: str
    name: str
    values: Sequence[float]
    source: str | None
    tags: tuple[str, ...]
    weight: float = 1
    unit: str | None = None


class Batch(NamedTuple):
    """A decoded message.

    ``refused``: the summary records refused alone (``(name, problem)`` with a
    :class:`zibrato.summary_check.SummaryProblem`); they are not in ``records``.
    """

    level: str
    time: float
    records: Sequence[Record]  # a list from decode(), the decoded tuple from decode_plain()
    refused: tuple[tuple[str, Any], ...] = ()


def topic(level: str, shard: int | None = None) -> bytes:
    """The leading bytes that a subscriber to ``level`` (and only it) matches.

    With ``shard`` (0 to :data:`SHARDS` - 1), the bytes of that shard of the
    level only: ``level 0x00 0x00 <shard>``. A subscriber to the bare level
    still receives every shard.
    """
    if shard is None:
        return level.encode("utf-8") + LEVEL_TERMINATOR
    return level.encode("utf-8") + LEVEL_TERMINATOR + SHARD_MARK + bytes((shard,))


#: the first byte of every payload (a msgpack array of 3): what a subscriber to unsharded
#: messages of a level matches after the terminator
UNSHARDED_MARK = b"\x93"


def series_key_text(type_: str, name: str, source: str | None, tags: Sequence[str], unit: str | None = None) -> bytes:
    """The bytes a series is hashed on (its identity: type, name, source, tags, unit)."""
    return "\x1f".join((type_, name, source or "", "\x1e".join(tags), unit or "")).encode("utf-8", "replace")


def shard_of(type_: str, name: str, source: str | None, tags: Sequence[str], unit: str | None = None) -> int:
    """The stable shard (0 to :data:`SHARDS` - 1) of a series: CRC-32 of its identity.

    The same in every process and every Python (not ``hash()``, which is salted).
    """
    return zlib.crc32(series_key_text(type_, name, source, tags, unit)) % SHARDS


def record_shard(record: Sequence[Any]) -> int:
    """The shard of a wire record (a summary record is sharded as the kind it summarises)."""
    type_, name, values, source, tags = record[:5]
    unit = record[6] if len(record) > 6 else None
    if type_ == SUMMARY:
        summary = values[0]
        type_, unit = summary.get("kind"), summary.get("unit")
    return shard_of(type_, name, source, tags, unit if type_ == HISTOGRAM else None)


def encode(level: str, time: float, records: Sequence[Sequence[Any]], shard: int | None = None) -> bytes:
    """One message for ``records`` (sequences shaped like :class:`Record`), sharded if asked."""
    payload: bytes = msgpack.packb([VERSION, time, records], use_bin_type=True)
    return topic(level, shard) + payload


def frame_shard(frame: bytes) -> int | None:
    """The shard a frame carries, or None for an unsharded (protocol 1.0/1.1) frame; no decoding."""
    cut = frame.find(LEVEL_TERMINATOR)
    if cut < 0 or frame[cut + 1 : cut + 2] != SHARD_MARK or len(frame) < cut + 3:
        return None
    return frame[cut + 2]


def decode(frame: bytes, now: float | None = None, max_buckets: int | None = None) -> Batch:
    """Parse and validate a message; raise :class:`ProtocolError` if it is not v1.

    A summary record that fails :func:`zibrato.summary_check.summary_problem`
    (``now``: the receiver's clock, for the window of time a summary may
    describe; ``max_buckets``: the most buckets per sign a sketch may carry)
    is left out of ``records`` and listed in ``refused``: one forged summary
    never costs the rest of its message.
    """
    level, time, records, refused = _validated_batch(frame, now, max_buckets)
    return Batch(level, time, [_record(raw) for raw in records], refused)


def _record(raw: tuple[Any, ...]) -> Record:
    weight = raw[5] if len(raw) > 5 else None
    return Record(
        raw[0], raw[1], raw[2], raw[3], raw[4], 1 if weight is None else weight, raw[6] if len(raw) > 6 else None
    )


def decode_plain(frame: bytes, now: float | None = None, max_buckets: int | None = None) -> Batch:
    """:func:`decode`, with each record the plain tuple that was sent, in :class:`Record`'s order.

    The same validation, a third cheaper for one-value records (the worker's
    worst case), because no named tuple is built per record: what the
    worker's ingest loop, which only unpacks records, uses. A 1.0 record is
    a 5-tuple; a 1.1 record may carry a 6th (weight, possibly None) and 7th
    (unit) element.
    """
    level, time, records, refused = _validated_batch(frame, now, max_buckets)
    return Batch(level, time, records, refused)  # the records as plain tuples: Record's fields, unnamed


def measurements_in(frame: bytes) -> int:
    """How many measurements a frame carries, as the worker's ``measurements`` counts them; no validation.

    A raw record counts its values; a summary record the observations it
    stands for (a counter's or gauge's ``count``, a timer's values or its
    sketch's ``count``; a set 0). What a stopping worker leaves unread is
    counted with it (``unread_at_stop``), so that figure says how many
    measurements were lost, not how many messages. 0 for a frame that does
    not decode (it would have been malformed).
    """
    _, sep, payload = bytes(frame).partition(LEVEL_TERMINATOR)
    if payload[:1] == SHARD_MARK:
        payload = payload[2:]
    try:
        records = msgpack.unpackb(payload, raw=False)[2]
        total = 0.0
        for record in records:
            values = record[2]
            if record[0] != SUMMARY:
                total += len(values)
                continue
            summary = values[0]
            if "values" in summary:
                total += len(summary["values"])
            elif summary.get("kind") in (COUNTER, GAUGE):
                total += summary.get("count", 0)
            elif summary.get("kind") in (TIMER, HISTOGRAM):
                total += summary.get("sketch", {}).get("count", 0)
        return max(0, round(total)) if sep else 0
    except Exception:  # anything that does not decode carries nothing a worker would count
        return 0


def _validated_batch(
    frame: bytes, now: float | None, max_buckets: int | None
) -> tuple[str, float, Any, tuple[Any, ...]]:
    level_bytes, sep, payload = bytes(frame).partition(LEVEL_TERMINATOR)
    if not sep:
        raise ProtocolError("no level terminator")
    if payload[:1] == SHARD_MARK:  # protocol 1.2: a sharded frame
        if len(payload) < 2 or payload[1] >= SHARDS:
            raise ProtocolError(f"bad shard: a byte below {SHARDS} must follow the shard mark")
        payload = payload[2:]
    try:
        level = level_bytes.decode("utf-8")
        body = msgpack.unpackb(payload, use_list=False, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as error:
        raise ProtocolError(f"undecodable payload: {error}") from None
    if level not in _known_levels:
        if not is_valid_level(level):
            raise ProtocolError(f"bad level {_short(level)}: 1-64 characters of A-Z a-z 0-9 _ . -")
        _remember(_known_levels, level)
    if not isinstance(body, tuple) or len(body) != 3:
        raise ProtocolError("payload is not [version, time, records]")
    version, time, records = body
    if type(version) is not int or version != VERSION:
        raise ProtocolError(f"unknown protocol version {version!r}")
    if not _is_number(time) or not isinstance(records, tuple):
        raise ProtocolError("bad batch time or records")
    refused: list[tuple[str, Any]] = []
    records = _validated_records(records, refused, now, max_buckets)
    return level, float(time), records, tuple(refused)


_STR, _TUPLE, _INT, _sum, _join = str, tuple, int, sum, "".join
# What passed the name, source and tag rules already (see MAX_REMEMBERED).
_known_names: set[str] = set()
_known_tags: set[tuple[str, ...]] = set()
_known_levels: set[str] = set()


def _remember(known: set[Any], item: object) -> None:
    if len(known) >= MAX_REMEMBERED:
        known.clear()
    known.add(item)


def _validated_records(
    records: tuple[Any, ...], refused: list[tuple[str, Any]], now: float | None, max_buckets: int | None
) -> tuple[Any, ...]:
    """Validate every record and return them as they are (less the summary records refused).

    The worker's hot path: one loop rather than a call per record (a Python
    call costs as much as these checks), with checks ordered and spelled for
    speed: exact class tests, one C-level sum for the values, and set
    lookups for names, sources and tags already validated by
    :func:`name_problem` and :func:`tags_problem` (the client's own rules).
    A summary record that fails its checks is appended to ``refused`` and
    left out; any other bad record refuses the whole message.
    """
    dropped: set[int] = set()
    for raw in records:
        if raw.__class__ is not _TUPLE or len(raw) != 5:
            head = _extended_head(raw)
        else:
            head = raw
        type_, name, values, source, tags = head
        if type_.__class__ is not _STR or type_ not in TYPES:
            raise ProtocolError(f"unknown measurement type {_short(type_)}")
        if name.__class__ is not _STR or name not in _known_names:
            _check_name(name, "name")
        if values.__class__ is not _TUPLE or not values:
            raise ProtocolError(f"{name}: values must be a non-empty array")
        if type_ == SET:
            _check_members(name, values)
        elif type_ == SUMMARY:
            problem = _summary_problem(values, now, max_buckets)
            if problem is not None:
                refused.append((name, problem))
                dropped.add(id(raw))
                continue
        else:
            try:
                finite = _isfinite(_sum(values))
            except TypeError:
                raise ProtocolError(f"{name}: values must be finite numbers") from None
            if not finite and not _all_finite_numbers(values):
                raise ProtocolError(f"{name}: values must be finite numbers")
        if source is not None and (source.__class__ is not _STR or source not in _known_names):
            _check_name(source, "source", name)
        if tags.__class__ is not _TUPLE:
            raise ProtocolError(f"{name}: tags must be an array of strings")
        if tags:
            try:
                known = tags in _known_tags
            except TypeError:  # an unhashable element: not a string anyway
                known = False
            if not known:
                _check_tags(name, tags)
        if head is not raw and raw[6:] and type_ != HISTOGRAM and raw[6] is not None:
            raise ProtocolError(f"{name}: only histograms carry a unit")
    if dropped:
        return tuple(raw for raw in records if id(raw) not in dropped)
    return records


def _extended_head(raw: Any) -> tuple[Any, ...]:
    """A protocol 1.1 record (6 or 7 elements): check weight and unit, return the first five."""
    if raw.__class__ is not _TUPLE or not 5 <= len(raw) <= 7:
        raise ProtocolError("record is not [type, name, values, source, tags(, weight(, unit))]")
    weight = raw[5]
    if weight is not None and (weight.__class__ not in (_INT, float) or not 0 < weight < math.inf):
        raise ProtocolError(f"weight must be a positive finite number or nil, got {_short(weight)}")
    if len(raw) == 7:
        unit = raw[6]
        if unit is not None and (unit.__class__ is not _STR or not UNIT_PATTERN.match(unit)):
            raise ProtocolError(f"unit must be nil or 1-64 characters of A-Za-z0-9_./%-, got {_short(unit)}")
    return raw[:5]


def _check_name(value: object, what: str, series: object = None) -> None:
    problem = name_problem(value, what)
    if problem:
        raise ProtocolError(problem if series is None else f"{_short(series)}: {problem}")
    _remember(_known_names, value)


def _check_tags(name: str, tags: tuple[Any, ...]) -> None:
    try:
        _join(tags)  # raises TypeError unless every tag is a string
    except TypeError:
        raise ProtocolError(f"{_short(name)}: tags must be an array of strings") from None
    problem = tags_problem(tags)
    if problem:
        raise ProtocolError(f"{_short(name)}: {problem}")
    _remember(_known_tags, tags)


def _check_members(name: str, members: tuple[Any, ...]) -> None:
    """Set members: strings of 1-255 characters or integers (not booleans)."""
    for member in members:
        cls = member.__class__
        if not (cls is _INT or (cls is _STR and 0 < len(member) <= MAX_MEMBER_LENGTH)):
            raise ProtocolError(
                f"{_short(name)}: set members must be strings of 1-{MAX_MEMBER_LENGTH} "
                f"characters or integers, got {_short(member)}"
            )


_isfinite = math.isfinite


def _summary_problem(values: Any, now: float | None, max_buckets: int | None) -> Any:
    """:func:`zibrato.summary_check.summary_problem` (imported here: the hot path never needs it)."""
    from .summary_check import summary_problem

    if max_buckets is None:
        return summary_problem(values, now)
    return summary_problem(values, now, max_buckets)


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
