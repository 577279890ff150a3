"""zibrato-statsd sends Zibrato's own figures to statsd only with --self-metrics, and never warns about them."""

from __future__ import annotations

import socket

import pytest

from support.daemons import Daemon, free_ports, wait_until
from zibrato import Zibrato


@pytest.fixture
def udp():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    yield sock
    sock.close()


def lines_of(sock: socket.socket, into: list[str]) -> list[str]:
    while True:
        try:
            into.extend(sock.recv(65536).decode().splitlines())
        except TimeoutError:
            return into


@pytest.mark.parametrize("explicit", [False, True], ids=["default", "--self-metrics"])
def test_self_metrics_reach_statsd_only_when_asked(tmp_path, udp, explicit):
    port = free_ports(3)
    broker = Daemon(tmp_path, "zibrato-broker", "--port", port, "--startup-grace", "0").start()
    args = ["--broker", f"127.0.0.1:{port + 1}", "--flush", "0.3", "--statsd-port", udp.getsockname()[1]]
    worker = Daemon(tmp_path, "zibrato-statsd", *args, *(["--self-metrics"] if explicit else [])).start()
    received: list[str] = []
    try:
        broker.wait_for_log("broker ready")
        worker.wait_for_log("statsd worker: levels")
        with Zibrato(port=port) as z:

            def enough():
                z.count("info", "app.hits")
                z.flush()
                lines = lines_of(udp, received)
                # several flushes, so the worker's own figures had their chance
                return sum(line.startswith("app.hits:") for line in lines) >= 4

            wait_until(enough, timeout=30, interval=0.2, message="app.hits over several flushes")
        own = [line for line in received if line.startswith("zibrato.")]
        if explicit:
            assert any(line.startswith("zibrato.statsd.") for line in own), received
        else:
            assert own == [], own
        assert " WARNING " not in worker.stderr, worker.stderr
    finally:
        worker.stop()
        broker.stop()
