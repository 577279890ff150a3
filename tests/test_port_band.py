"""The tests' daemons get ports below the ephemeral range, each pytest-xdist worker from its own slice."""

from __future__ import annotations

import socket

import pytest
from expecter import expect

from support import daemons
from support.daemons import PORT_BAND, free_ports


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: its usual start
        return 32768


def test_the_band_is_below_the_ephemeral_range() -> None:
    expect(PORT_BAND[1]) <= _ephemeral_low()


@pytest.mark.parametrize("worker", ["gw0", "gw1"])
def test_each_xdist_worker_takes_ports_from_its_own_slice(monkeypatch, worker: str) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setattr(daemons, "_next_port", None)  # a fresh search, as in a new worker
    low, high = PORT_BAND
    middle = (low + high) // 2
    mine = (low, middle) if worker == "gw0" else (middle, high)
    for _ in range(20):
        base = free_ports(3)
        expect(mine[0] <= base and base + 3 <= mine[1]) == True


def test_a_port_in_use_is_never_handed_out(monkeypatch) -> None:
    port = free_ports(1)
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        monkeypatch.setattr(daemons, "_next_port", port)  # the search starts right on it
        expect(free_ports(1)) != port
