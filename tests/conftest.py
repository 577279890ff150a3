"""Shared fixtures, and the two test lanes.

Every test that starts a process, a real server or a fork is marked ``daemon``
here, derived from the code it uses (:mod:`support.lanes`), never listed by
hand; ``bin/test --fast`` runs the others (``-m "not daemon"``). A test that
is not marked and starts a process anyway fails, saying how to mark it.

``broker_pull`` stands in for the broker: a real ZeroMQ PULL socket bound on a
random loopback port, whose helpers decode what arrives and wait for it by
polling with a timeout, so a lost message fails the test instead of hanging it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import NamedTuple

import pytest
import zmq

from support.daemons import free_ports
from support.lanes import SpawnGuard, SpawnReader, message
from zibrato import Zibrato, protocol

#: the process ends after the session even when a failing test leaves a thread behind
pytest_plugins = ["support.exit_guard"]

RECEIVE_TIMEOUT = 5.0
SENTINEL = "zibrato.test.sentinel"
_sentinel_values = itertools.count(1)


class Flat(NamedTuple):
    """One measurement as it reached the broker."""

    level: str
    type: str
    name: str
    value: float
    source: str | None
    tags: tuple[str, ...]


def flatten(batch: protocol.Batch) -> list[Flat]:
    """A decoded message as one tuple per measurement, in the order sent."""
    return [
        Flat(batch.level, record.type, record.name, value, record.source, tuple(record.tags))
        for record in batch.records
        for value in record.values
    ]


def flatten_raw(frame: bytes) -> list[Flat]:
    """A message flattened without the protocol decoder (for 1.1 records it may not know yet)."""
    import msgpack

    level, _, payload = frame.partition(protocol.LEVEL_TERMINATOR)
    _version, _time, records = msgpack.unpackb(payload, raw=False)
    return [
        Flat(level.decode(), record[0], record[1], value, record[3], tuple(record[4]))
        for record in records
        for value in record[2]
    ]


def select(records: list[Flat], name: str | None = None, **fields) -> list[Flat]:
    """The records with this name (and every other field given equal)."""
    return [
        r
        for r in records
        if (name is None or r.name == name) and all(getattr(r, field) == wanted for field, wanted in fields.items())
    ]


def values_of(records: list[Flat], name: str, **fields) -> list[float]:
    return [r.value for r in select(records, name, **fields)]


def wait_until(
    condition: Callable[[], bool], timeout: float = RECEIVE_TIMEOUT, interval: float = 0.005, message: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class BrokerPull:
    """A PULL socket where clients send; it can go away and come back on the same port."""

    def __init__(self, context: zmq.Context) -> None:
        self.context = context
        self.socket: zmq.Socket | None = None
        self.port: int | None = None
        #: every message received, decoded
        self.batches: list[protocol.Batch] = []
        self.frames: list[bytes] = []  # as received, for size checks
        self.accept_1_1 = False  # protocol 1.1 records the decoder may not read yet (see settle)
        #: every measurement received, flattened, in arrival order
        self.records: list[Flat] = []
        self.bind()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def bind(self, timeout: float = RECEIVE_TIMEOUT) -> None:
        """Bind a new PULL socket: a random port the first time, the same port afterwards."""
        assert self.socket is None, "close() the running socket first"
        sock = self.context.socket(zmq.PULL)
        sock.linger = 0
        if self.port is None:
            self.port = sock.bind_to_random_port("tcp://127.0.0.1")
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    sock.bind(self.endpoint)
                    break
                except zmq.ZMQError as error:
                    if error.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                        sock.close(linger=0)
                        raise
                    time.sleep(0.01)
        self.socket = sock

    def close(self) -> None:
        """The broker goes away."""
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    def receive_until(
        self, predicate: Callable[[list[Flat]], bool], timeout: float = RECEIVE_TIMEOUT, what: str = "measurements"
    ) -> list[Flat]:
        """Receive until ``predicate(all records so far)`` holds; fail after ``timeout``."""
        assert self.socket is not None, "the broker is closed"
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                summary = sorted({(r.level, r.type, r.name) for r in self.records})
                pytest.fail(
                    f"timed out after {timeout} s waiting for {what}; "
                    f"received {len(self.records)} measurements: {summary}"
                )
            if self.socket.poll(max(1, int(min(remaining, 0.1) * 1000)), zmq.POLLIN):
                self._receive_available()
        return self.records

    def receive_count(
        self, count: int, name: str | None = None, timeout: float = RECEIVE_TIMEOUT, **fields
    ) -> list[Flat]:
        """Receive until at least ``count`` measurements (with this name) have arrived."""
        self.receive_until(
            lambda records: len(select(records, name, **fields)) >= count, timeout, what=f"{count} x {name or 'any'}"
        )
        return select(self.records, name, **fields)

    def settle(self, client: Zibrato, timeout: float = RECEIVE_TIMEOUT, raw: bool = False) -> list[Flat]:
        """Everything ``client`` recorded so far, received exactly as many times as it arrived.

        Flushes, then sends a sentinel and flushes again: the messages of one
        client travel in order on one connection, so once the sentinel is in,
        everything recorded before it is in too (and any duplicate would be).
        Returns the records received so far, without sentinels. ``raw``: accept
        protocol 1.1 records that this branch's decoder does not know yet
        (read them from :attr:`raw_frames`).
        """
        self.accept_1_1 = self.accept_1_1 or raw
        assert client.flush(timeout), "flush() timed out"
        marker = next(_sentinel_values)
        client.gauge("sentinel", SENTINEL, marker)
        assert client.flush(timeout), "flush() timed out"
        self.receive_until(
            lambda records: any(r.name == SENTINEL and r.value == marker for r in records), timeout, what="the sentinel"
        )
        return self.measurements()

    def measurements(self) -> list[Flat]:
        """The records received so far, without sentinels."""
        return [r for r in self.records if r.name != SENTINEL]

    def _receive_available(self) -> None:
        while True:
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.frames.append(frame)
            try:
                batch = protocol.decode(frame)  # a message the client made must decode
            except protocol.ProtocolError:
                if not self.accept_1_1:
                    raise
                self.records.extend(flatten_raw(frame))
                continue
            self.batches.append(batch)
            self.records.extend(flatten(batch))

    @property
    def raw_frames(self) -> list[bytes]:
        return self.frames


@pytest.fixture
def zmq_context():
    """A context of the test's own; everything in it is closed with linger=0."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def broker_pull(zmq_context):
    """A real PULL socket bound on 127.0.0.1 at a random port (see :class:`BrokerPull`)."""
    broker = BrokerPull(zmq_context)
    yield broker
    broker.close()


@pytest.fixture
def make_client(broker_pull):
    """Factory of clients aimed at ``broker_pull`` (short linger); all closed after the test."""
    made: list[Zibrato] = []

    def make(**options) -> Zibrato:
        options.setdefault("port", broker_pull.port)
        options.setdefault("linger", 0.5)
        client = Zibrato(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=2)


@pytest.fixture
def unused_port():
    """A loopback TCP port where nothing listens (it was free a moment ago)."""
    return free_ports(1)


# --- the two lanes ----------------------------------------------------------------------------

_reader = SpawnReader()
_guard = SpawnGuard()


def _code_of(item: pytest.Item):
    """The test function and the function of every fixture it uses (pytest's own fixtures too:
    the reading follows only code under tests/)."""
    yield getattr(item, "obj", None)
    fixture_info = getattr(item, "_fixtureinfo", None)  # pytest keeps the resolved fixtures there
    for definitions in getattr(fixture_info, "name2fixturedefs", {}).values():
        for definition in definitions:
            yield definition.func


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("daemon") is None and _reader.spawns(_code_of(item)):
            item.add_marker(pytest.mark.daemon)


@pytest.fixture(autouse=True)
def _processes_only_in_the_daemon_lane(request: pytest.FixtureRequest):
    """Armed for every test not marked ``daemon``: starting a process fails it (set up first,
    torn down last, so the other fixtures' set-up and tear-down are watched too)."""
    if request.node.get_closest_marker("daemon") is not None:
        yield
        return
    _guard.watch(request.node.nodeid)
    try:
        yield
    finally:
        caught = _guard.release()
    if caught:
        pytest.fail(message(request.node.nodeid, caught), pytrace=False)
