"""OpenTelemetry attributes as Zibrato tags, bounded per instrument, and the provider's figures.

An attribute set becomes a sorted tuple of ``key:value`` tags once, on its
first use, and is remembered under a frozen key (the tuple of the mapping's
items) so that a repeated set costs one dict lookup. Each instrument admits
at most ``limit`` distinct attribute sets (the SDK's default cardinality
limit, 2,000); past it, measurements go to the one series the specification
defines for that case, tagged ``otel.metric.overflow:true``, and are counted.

Nothing here raises into the application: what the client's rules refuse is
counted in :class:`Figures` and logged at most once a minute per reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..series_rules import clean_tag

if TYPE_CHECKING:
    from ..client import Zibrato

log = logging.getLogger("zibrato.otel")

OVERFLOW_TAG = "otel.metric.overflow:true"
#: a cached attribute set: (a copy of the attributes, their tags)
Entry = tuple[Any, tuple[str, ...]]
#: what :meth:`Figures.snapshot` reports, each a count since the provider was made (per process)
FIGURES = (
    "refused.negative",  # a Counter (or a time Histogram) given a negative value
    "refused.value",  # not a finite number
    "refused.attributes",  # an attribute set the client's tag rules refuse (say, over 64 tags)
    "refused.instruments",  # an instrument name the client refuses: a no-op instrument instead
    "overflowed",  # measurements recorded into the otel.metric.overflow:true series
    "callbacks.failed",  # an observable callback raised
    "callbacks.timed_out",  # an observable callback ran past callback_timeout
    "callbacks.skipped",  # a callback still running from an earlier collection was not called again
    "observations.resets",  # an observable counter's cumulative value went down
)
_LOG_EVERY = 60.0  # seconds between two log lines of one reason


class Figures:
    """Counts of what the provider refused or diverted; rare, so a lock is affordable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(FIGURES, 0)
        self._logged: dict[str, float] = {}

    def add(self, figure: str, message: str = "", *args: object, count: int = 1, exc_info: bool = False) -> None:
        """Count ``figure``; log ``message`` unless this figure was logged in the last minute."""
        now = time.monotonic()
        with self._lock:
            self._counts[figure] += count
            last = self._logged.get(figure)
            speak = bool(message) and (last is None or now - last >= _LOG_EVERY)
            if speak:
                self._logged[figure] = now
        if speak:
            log.warning(
                "zibrato.otel: " + message + " (counted in figures()[%r]; logged once a minute)",
                *args,
                figure,
                exc_info=exc_info,
            )

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset_after_fork(self) -> None:
        """The child counts its own refusals; the inherited lock may be held by a dead thread."""
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(FIGURES, 0)
        self._logged = {}


def attribute_key(attributes: Any) -> tuple[Any, ...]:
    """A hashable key for an attribute mapping (sequences of values become tuples)."""
    if not attributes:
        return ()
    if not isinstance(attributes, Mapping):
        raise TypeError(f"attributes must be a mapping, got {type(attributes).__name__}")
    return tuple((key, tuple(value) if isinstance(value, list) else value) for key, value in attributes.items())


def attribute_tags(attributes: Mapping[Any, Any]) -> list[str]:
    """``key:value`` tags for an attribute mapping, the OpenTelemetry way of writing values.

    Booleans are ``true``/``false``, sequences are joined with commas; control
    characters become ``_`` and a tag is cut to the client's 255 characters,
    so that an attribute taken from a request (a user agent, a route) never
    refuses the measurement.
    """
    tags = []
    for key, value in attributes.items():
        tags.append(clean_tag(f"{key}:{_text(value)}"))
    return tags


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(_text(item) for item in value)
    return str(value)


class SeriesTable:
    """One instrument's attribute sets: each validated once, at most ``limit`` of them.

    :attr:`cache` (frozen key -> (a copy of the attributes, tags)) is what the
    instruments' hot paths read directly; the copy lets an instrument compare
    the next call's attributes with the last set it saw (a dict comparison in
    C, cheaper than building and hashing the key) without keeping the caller's
    dict, which the caller may change. Everything else happens under a lock,
    on a set's first use.
    """

    def __init__(
        self,
        client: Zibrato,
        level: str,
        type_: str,
        name: str,
        base_tags: tuple[str, ...],
        figures: Figures,
        limit: int,
        unit: str | None = None,
    ) -> None:
        self.client, self.level, self.type, self.name, self.unit = client, level, type_, name, unit
        self.base_tags, self.figures, self.limit = base_tags, figures, limit
        #: the entry the hot paths start from: no attributes
        self.plain: Entry = (None, base_tags)
        self.cache: dict[tuple[Any, ...], Entry] = {}
        self.overflow_tags = tuple(sorted({*base_tags, OVERFLOW_TAG}))
        self._admitted: set[tuple[str, ...]] = {base_tags}
        self._overflowed: set[tuple[Any, ...]] = set()
        self._lock = threading.Lock()
        self.check(base_tags)  # raises: the instrument is refused at creation
        self.check(self.overflow_tags)

    def check(self, tags: tuple[str, ...]) -> None:
        """Raise ValueError when the client would refuse these tags on this series."""
        self.client.series(self.level, self.type, self.name, None, tags, unit=self.unit)

    def tags(self, attributes: Any) -> tuple[str, ...] | None:
        """The tags for ``attributes`` (None: refused and counted). The slow path: first uses,
        unhashable keys (list values) and the overflow series."""
        try:
            key = attribute_key(attributes)
            cached = self.cache.get(key)
        except TypeError:
            key, cached = None, None
        if cached is not None:
            return cached[1]
        if key == ():
            return self.base_tags
        with self._lock:
            if key is not None and key in self._overflowed:
                return self._overflow()
            try:
                tags = tuple(sorted({*self.base_tags, *attribute_tags(attributes)}))
                if tags not in self._admitted:
                    self.check(tags)
            except (TypeError, ValueError, AttributeError) as error:
                self.figures.add("refused.attributes", "%s: attributes refused: %s", self.name, error)
                return None
            if tags not in self._admitted:
                if len(self._admitted) >= self.limit:
                    if key is not None and len(self._overflowed) < 4 * self.limit:
                        self._overflowed.add(key)
                    return self._overflow()
                self._admitted.add(tags)
            if key is not None:
                if len(self.cache) >= 4 * self.limit:  # many orders of the same keys: start again
                    self.cache.clear()  # in place: the instruments hold this dict
                self.cache[key] = (dict(attributes.items()), tags)
            return tags

    def _overflow(self) -> tuple[str, ...]:
        self.figures.add(
            "overflowed",
            "%s: more than %d attribute sets; further sets are recorded as otel.metric.overflow:true",
            self.name,
            self.limit,
        )
        return self.overflow_tags

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
