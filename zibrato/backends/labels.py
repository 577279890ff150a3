"""A summary's identifying pairs (source, level, tags), shared by the OTLP and Prometheus mappings."""

from __future__ import annotations

from ..summary import Summary

RESERVED = ("source", "level")


def tag_pairs(summary: Summary) -> list[tuple[str, str]]:
    """``source`` and ``level`` (when present), then the tags as (key, value), keys unique.

    ``k:v`` -> (k, v); a bare tag ``canary`` -> ("canary", "true"); a tag named
    ``source`` or ``level`` becomes ``tag.source``; a repeated key joins its
    values with ``,`` (attribute keys and label names must be unique).
    """
    pairs: dict[str, str] = {}
    for key in RESERVED:
        if summary.get(key) is not None:
            pairs[key] = str(summary[key])
    for tag in summary.get("tags") or ():
        key, sep, value = tag.partition(":")
        if not sep:
            value = "true"
        if key in RESERVED:
            key = "tag." + key
        pairs[key] = pairs[key] + "," + value if key in pairs else value
    return list(pairs.items())
