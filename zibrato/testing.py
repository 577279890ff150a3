"""Testing support: assert what an application measured, with no broker and no sockets.

Two ways in::

    from zibrato.testing import MemoryZibrato, capture

    z = MemoryZibrato()                 # a client that only remembers
    ...
    with capture(app.metrics) as seen:  # or divert an existing client for a while
        app.signup()
    seen.assert_counted("signup", total=1)

Installed as a pytest plugin, it also gives the fixture ``zibrato_memory``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, NamedTuple

from .client import Zibrato
from .protocol import TYPE_NAMES

__all__ = ["Measurement", "Recorded", "MemoryZibrato", "capture", "zibrato_memory"]


class Measurement(NamedTuple):
    level: str
    type: str  # "counter", "gauge" or "timer"
    name: str
    value: float
    source: str | None
    tags: tuple[str, ...]


class Recorded(list):
    """The measurements seen, in order, with assertion helpers."""

    def record(self, item: tuple) -> None:
        (level, type_, name, source, tags), value = item
        self.append(Measurement(level, TYPE_NAMES[type_], name, value, source, tags))

    def find(self, name: str | None = None, type: str | None = None, level: str | None = None,
             tags: tuple[str, ...] | None = None) -> list[Measurement]:
        """Measurements matching every criterion given (tags: all of them present)."""
        return [m for m in self
                if (name is None or m.name == name) and (type is None or m.type == type)
                and (level is None or m.level == level)
                and (tags is None or set(tags) <= set(m.tags))]

    def assert_timed(self, name: str, count: int | None = None, **criteria) -> list[Measurement]:
        return self._assert(name, "timer", count, **criteria)

    def assert_counted(self, name: str, total: float | None = None, count: int | None = None,
                       **criteria) -> list[Measurement]:
        found = self._assert(name, "counter", count, **criteria)
        if total is not None and sum(m.value for m in found) != total:
            raise AssertionError(f"counter {name!r} totals {sum(m.value for m in found)}, expected {total}")
        return found

    def assert_gauged(self, name: str, value: float | None = None, **criteria) -> list[Measurement]:
        found = self._assert(name, "gauge", None, **criteria)
        if value is not None and found[-1].value != value:
            raise AssertionError(f"gauge {name!r} last set to {found[-1].value}, expected {value}")
        return found

    def _assert(self, name: str, type: str, count: int | None, **criteria) -> list[Measurement]:
        found = self.find(name=name, type=type, **criteria)
        if not found:
            seen = sorted({(m.type, m.name) for m in self})
            raise AssertionError(f"no {type} {name!r} recorded{_criteria(criteria)}; seen: {seen}")
        if count is not None and len(found) != count:
            raise AssertionError(f"{type} {name!r} recorded {len(found)} times, expected {count}")
        return found


class MemoryZibrato(Zibrato):
    """A client that keeps its measurements in :attr:`measurements` instead of sending them."""

    def __init__(self, source: str | None = None, tags=None) -> None:
        super().__init__(source=source, tags=tags)
        self.measurements = Recorded()
        self._record = self.measurements.record

    def flush(self, timeout: float = 1.0) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        pass

    def _after_fork_in_child(self) -> None:
        pass


@contextlib.contextmanager
def capture(client: Zibrato) -> Iterator[Recorded]:
    """Divert ``client``'s measurements into memory for the ``with`` block.

    Works on a module-level client already used by decorators, because every
    instrument looks up the client's recorder at call time.
    """
    seen = Recorded()
    previous = client._record
    client._record = seen.record
    try:
        yield seen
    finally:
        if client._record == seen.record:  # unless the block closed the client (or forked)
            client._record = client._drop if client._closed else previous


try:
    import pytest
except ImportError:  # pragma: no cover - the helpers work without pytest
    pass
else:
    @pytest.fixture
    def zibrato_memory() -> MemoryZibrato:
        """A fresh in-memory client for one test."""
        return MemoryZibrato()


def _criteria(criteria: dict) -> str:
    return "".join(f" {k}={v!r}" for k, v in criteria.items() if v is not None)
