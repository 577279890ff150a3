"""The name rules: what a level, a metric name, a source, a tag and a unit may be.

One definition, shared by everything that makes or reads a series: the
client raises with these messages, the decoder (:mod:`zibrato.protocol`)
rejects with them, the listener counts them, ``zibrato.otel`` cleans tags by
them, and a forwarded summary (:mod:`zibrato.summary_check`) is checked by
them. The rules for a whole series built on these (tags as given, rate,
value, set member) are :mod:`zibrato.series_rules`.

This module imports nothing of Zibrato's, so that every layer may import it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_NAME_LENGTH = 255
MAX_TAG_LENGTH = 255
MAX_TAGS = 64
MAX_MEMBER_LENGTH = 255
#: a histogram's unit (protocol 1.1): 1-64 characters of A-Za-z0-9_./%-
UNIT_PATTERN = re.compile(r"[A-Za-z0-9_./%\-]{1,64}\Z")
LEVEL_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")


def is_valid_level(level: object) -> bool:
    """1-64 characters of A-Z a-z 0-9 _ . - (no NUL, no comma: levels are listed as a,b,c)."""
    return isinstance(level, str) and LEVEL_PATTERN.match(level) is not None


#: characters no name, source or tag may hold (a newline would forge log lines downstream)
CONTROL_CHARACTERS = _CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    """Why ``tag`` is not a valid tag string, or None when it is.

    A tag is ``key:value``, or a bare ``key`` (DogStatsD's convention, which
    every destination reads as ``key:true``); the key, the text before the
    first ``:``, must not be empty: OTLP attributes and Prometheus labels
    need a name, and one nameless tag would make a receiver refuse a whole
    request.
    """
    if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_LENGTH or _CONTROL.search(tag):
        return (
            f"bad tag {_short(tag)}: a non-empty string of at most {MAX_TAG_LENGTH} characters "
            "without control characters"
        )
    if tag[0] == ":":
        return f"bad tag {_short(tag)}: a tag is key:value or a bare key, and its key must not be empty"
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
