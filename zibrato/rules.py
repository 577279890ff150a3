"""Series rules: which series a worker keeps, and which tags it drops, before aggregation.

Applied in the runtime for every destination, as gostatsd's filters are:

* ``--keep PATTERN`` (repeatable): when given, only series matching one of them are kept;
* ``--drop PATTERN`` (repeatable): series matching one of them are dropped (after ``--keep``);
* ``--drop-tags KEY`` (repeatable): tags whose key matches are removed (series that
  then differ by nothing else merge).

A pattern is a shell-style glob (``*``, ``?``, ``[...]``) on the series name
(``db.*``), or, starting with ``#``, on its ``key:value`` tags (``#env:dev``,
``#debug:*``): a series matches when one of its tags does. Decisions are cached
per (name, tags), so the cost per record is one dict lookup.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence

_MAX_CACHED = 100_000


def _compile(patterns: Iterable[str]) -> tuple[re.Pattern | None, re.Pattern | None]:
    """One regex for the name globs and one for the tag globs (None: no such pattern)."""
    names = [fnmatch.translate(p) for p in patterns if not p.startswith("#")]
    tags = [fnmatch.translate(p[1:]) for p in patterns if p.startswith("#")]
    return (re.compile("|".join(names)) if names else None, re.compile("|".join(tags)) if tags else None)


def check_pattern(pattern: str) -> str:
    """A usage error's message for an empty pattern, else the pattern."""
    if not pattern.strip() or pattern.strip() == "#":
        raise ValueError("an empty pattern matches nothing useful; give a name glob or #tag-glob")
    return pattern.strip()


class SeriesRules:
    """Filter records ``(type, name, values, source, tags)``; count what is dropped."""

    def __init__(self, keep: Sequence[str] = (), drop: Sequence[str] = (), drop_tags: Sequence[str] = ()) -> None:
        self.keep, self.drop, self.drop_tags = tuple(keep), tuple(drop), tuple(drop_tags)
        self._keep = _compile(self.keep) if self.keep else None
        self._drop = _compile(self.drop)
        self._drop_tag_keys = (
            re.compile("|".join(fnmatch.translate(k) for k in self.drop_tags)) if self.drop_tags else None
        )
        self._decisions: dict[tuple, tuple | None] = {}
        #: measurements (values) of series dropped by --keep/--drop, and tags removed by --drop-tags
        self.measurements_dropped = 0
        self.tags_dropped = 0

    def __bool__(self) -> bool:
        return bool(self.keep or self.drop or self.drop_tags)

    def describe(self) -> dict:
        return {"keep": list(self.keep), "drop": list(self.drop), "drop_tags": list(self.drop_tags)}

    def apply(self, records: Iterable[Sequence]) -> list:
        """The records to aggregate: kept ones, with their dropped tags removed."""
        out = []
        decisions = self._decisions
        for record in records:
            type_, name, values, source, tags = record[:5]  # protocol 1.1: weight, unit may follow
            key = (name, tags)
            if key in decisions:
                decision = decisions[key]
            else:
                if len(decisions) >= _MAX_CACHED:
                    decisions.clear()
                decision = decisions[key] = self._decide(name, tags)
            if decision is None:
                self.measurements_dropped += len(values)
                continue
            if decision is not tags:
                self.tags_dropped += len(tags) - len(decision)
                record = (type_, name, values, source, decision, *record[5:])
            out.append(record)
        return out

    def _decide(self, name: str, tags: tuple) -> tuple | None:
        """None to drop the series, else its tags (the same object when none is removed)."""
        if self._keep is not None and not _matches(self._keep, name, tags):
            return None
        if _matches(self._drop, name, tags):
            return None
        pattern = self._drop_tag_keys
        if pattern is None or not tags:
            return tags
        kept = tuple(t for t in tags if not pattern.fullmatch(t.partition(":")[0]))
        return tags if len(kept) == len(tags) else kept


def _matches(compiled: tuple[re.Pattern | None, re.Pattern | None], name: str, tags: tuple) -> bool:
    names, tag_pattern = compiled
    if names is not None and names.match(name):
        return True
    return tag_pattern is not None and any(tag_pattern.match(t) for t in tags)


__all__ = ["SeriesRules", "check_pattern"]
