"""Testing support: assert what an application measured, with no broker and no sockets.

Two ways in::

    from zibrato.testing import MemoryZibrato, capture

    z = MemoryZibrato()                 # a client that only remembers
    ...
    with capture(app.metrics) as seen:  # or divert an existing client for a while
        app.signup()
    seen.assert_counted("signup", total=1)

Both are the real client with :class:`MemoryTransport` in place of the
ZeroMQ socket: measurements go through the same validation, sampling and
encoding as in production, and are decoded back as they would reach a
worker. Installed as a pytest plugin, it also gives the fixture ``zibrato_memory``.
"""

from __future__ import annotations

import contextlib
import random as _random_module
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple, cast

import msgpack

from .buffer import Buffer
from .client import Tags, Zibrato
from .protocol import LEVEL_TERMINATOR, TYPE_NAMES
from .sender import Sender
from .transport import Transport

__all__ = [
    "ClientParts",
    "Measurement",
    "Recorded",
    "MemoryTransport",
    "MemoryZibrato",
    "capture",
    "client_parts",
    "zibrato_memory",
]


class ClientParts(NamedTuple):
    """A client's moving parts, as :func:`client_parts` finds them at that moment."""

    buffer: Buffer
    #: the sender thread (None before the first measurement and after close)
    sender: Sender | None
    transport: Transport


def client_parts(client: Zibrato) -> ClientParts:
    """The buffer, sender thread and transport of ``client``: the one seam for tests of the client itself.

    An application never needs these (its figures are :attr:`Zibrato.sent`,
    :attr:`~Zibrato.dropped` and :attr:`~Zibrato.queued`); tests of the
    buffer's bound, the sender's cadence or the transport's byte bound do,
    and read them here rather than reaching into the client's attributes.
    """
    return ClientParts(client._buffer, client._sender, client._transport)


class Measurement(NamedTuple):
    level: str
    type: str  # "counter", "gauge", "timer", "histogram" or "set"
    name: str
    value: float | str  # a set's member may be a string
    source: str | None
    tags: tuple[str, ...]
    weight: float = 1  # observations this value stands for (1 / rate when sampled)
    unit: str | None = None  # histograms


class Recorded(list):
    """The measurements seen, in order, with assertion helpers."""

    def find(
        self,
        name: str | None = None,
        type: str | None = None,
        level: str | None = None,
        tags: tuple[str, ...] | None = None,
    ) -> list[Measurement]:
        """Measurements matching every criterion given (tags: all of them present)."""
        return [
            m
            for m in self
            if (name is None or m.name == name)
            and (type is None or m.type == type)
            and (level is None or m.level == level)
            and (tags is None or set(tags) <= set(m.tags))
        ]

    def assert_timed(self, name: str, count: int | None = None, **criteria) -> list[Measurement]:
        return self._assert(name, "timer", count, **criteria)

    def assert_counted(
        self, name: str, total: float | None = None, count: int | None = None, **criteria
    ) -> list[Measurement]:
        """``total`` is what a worker would count: each value times its weight."""
        found = self._assert(name, "counter", count, **criteria)
        counted = sum(cast(float, m.value) * m.weight for m in found)  # a counter's value is a number
        if total is not None and counted != total:
            raise AssertionError(f"counter {name!r} totals {counted}, expected {total}")
        return found

    def assert_gauged(self, name: str, value: float | None = None, **criteria) -> list[Measurement]:
        found = self._assert(name, "gauge", None, **criteria)
        if value is not None and found[-1].value != value:
            raise AssertionError(f"gauge {name!r} last set to {found[-1].value}, expected {value}")
        return found

    def assert_histogram(
        self, name: str, count: int | None = None, unit: str | None = None, **criteria
    ) -> list[Measurement]:
        found = self._assert(name, "histogram", count, **criteria)
        if unit is not None and {m.unit for m in found} != {unit}:
            raise AssertionError(
                f"histogram {name!r} has units {sorted({str(m.unit) for m in found})}, expected {unit!r}"
            )
        return found

    def assert_set(self, name: str, members: set | None = None, **criteria) -> list[Measurement]:
        found = self._assert(name, "set", None, **criteria)
        seen = {m.value for m in found}
        if members is not None and seen != set(members):
            raise AssertionError(
                f"set {name!r} has members {sorted(map(str, seen))}, expected {sorted(map(str, members))}"
            )
        return found

    def _assert(self, name: str, type: str, count: int | None, **criteria) -> list[Measurement]:
        found = self.find(name=name, type=type, **criteria)
        if not found:
            seen = sorted({(m.type, m.name) for m in self})
            raise AssertionError(f"no {type} {name!r} recorded{_criteria(criteria)}; seen: {seen}")
        if count is not None and len(found) != count:
            raise AssertionError(f"{type} {name!r} recorded {len(found)} times, expected {count}")
        return found


class MemoryTransport(Transport):
    """A transport that decodes each message into :attr:`measurements` instead of sending it.

    Synchronous: a client with this transport publishes in the recording
    thread, so a measurement is visible as soon as the call returns.
    """

    synchronous = True

    def __init__(self, measurements: Recorded | None = None) -> None:
        self.measurements = Recorded() if measurements is None else measurements

    def send(self, frame: bytes, last: bool = True) -> bool:
        level, _, payload = frame.partition(LEVEL_TERMINATOR)
        _version, _time, records = msgpack.unpackb(payload, raw=False)
        for type_, name, values, source, tags, *extra in records:
            weight = extra[0] if extra and extra[0] is not None else 1
            unit = extra[1] if len(extra) > 1 else None
            for value in values:
                self.measurements.append(
                    Measurement(level.decode(), TYPE_NAMES[type_], name, value, source, tuple(tags), weight, unit)
                )
        return True


class MemoryZibrato(Zibrato):
    """A client that keeps its measurements in :attr:`measurements` instead of sending them.

    ``clock`` and ``random`` are the client's (``Zibrato(clock=..., random=...)``):
    ``random=lambda: 0.0`` keeps every sampled call, for instance.
    """

    def __init__(
        self,
        source: str | None = None,
        tags: Tags = None,
        *,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random_module.random,
    ) -> None:
        super().__init__(source=source, tags=tags, transport=MemoryTransport(), clock=clock, random=random)

    @property
    def measurements(self) -> Recorded:
        return self._transport.measurements  # type: ignore[attr-defined]


@contextlib.contextmanager
def capture(client: Zibrato) -> Iterator[Recorded]:
    """Divert ``client``'s measurements into memory for the ``with`` block.

    Works on a module-level client already used by decorators, because every
    instrument looks up the client's recording path at call time.
    """
    transport = MemoryTransport()
    undo = client._divert(transport)
    try:
        yield transport.measurements
    finally:
        undo()


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
