"""The client's side of the first hour: levels in lower case, an unreachable broker said aloud, process metrics."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import zmq
from expecter import expect

from support.daemons import Daemon, free_ports, wait_until
from zibrato import Zibrato
from zibrato import process_metrics as process_metrics_module
from zibrato.client_link import WARN_AFTER_SECONDS, BrokerLink
from zibrato.testing import MemoryTransport, MemoryZibrato


def test_levels_are_lower_cased_in_the_client():
    z = MemoryZibrato()
    z.count("INFO", "signup")
    z.timing("Debug", "db.query", seconds=0.1)
    assert [m.level for m in z.measurements] == ["info", "debug"]


@pytest.fixture
def zibrato_log(caplog):
    caplog.set_level(logging.INFO, logger="zibrato")
    return caplog


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "reach" in r.getMessage()]


def test_a_host_that_does_not_resolve_is_warned_about_once(zibrato_log):
    z = Zibrato(host="nosuch.invalid", port=5550)
    try:
        for _ in range(10):
            z.count("info", "x")
        wait_until(lambda: warnings_of(zibrato_log), timeout=20, interval=0.2, message="the unreachable warning")
        [warning] = warnings_of(zibrato_log)
        assert "cannot reach the broker at tcp://nosuch.invalid:5550" in warning and "host not resolved" in warning
        assert "bytes wait in ZeroMQ" in warning
        assert z.broker_connected is False
    finally:
        z.close(timeout=0.1)
    assert len(warnings_of(zibrato_log)) == 1


def test_a_refused_broker_is_warned_about_then_its_return_is_noted(tmp_path, zibrato_log):
    port = free_ports(3)
    z = Zibrato(port=port)
    broker = None
    try:
        z.count("info", "x")
        wait_until(lambda: warnings_of(zibrato_log), timeout=20, interval=0.2, message="the unreachable warning")
        assert "connection refused or unreachable" in warnings_of(zibrato_log)[0]
        broker = Daemon(tmp_path, "zibrato-broker", "--port", port, "--startup-grace", "0").start()
        wait_until(lambda: z.broker_connected, timeout=20, interval=0.2, message="the client reaching the broker")
        wait_until(
            lambda: any("reached the broker" in r.getMessage() for r in zibrato_log.records),
            timeout=5,
            message="the 'reached again' line",
        )
    finally:
        z.close(timeout=1)
        if broker is not None:
            broker.stop()


class ThreadedMemory(MemoryTransport):
    """The in-memory transport, but sent from the sender thread as ZeroMQ would be."""

    synchronous = False


def test_process_metrics_are_recorded_from_the_sender_thread_under_semantic_names(monkeypatch):
    threads: list[str] = []
    original = process_metrics_module.ProcessMetrics.record

    def record(self):
        threads.append(threading.current_thread().name)
        original(self)

    monkeypatch.setattr(process_metrics_module.ProcessMetrics, "record", record)
    transport = ThreadedMemory()
    z = Zibrato(transport=transport, process_metrics=True)
    try:
        z.count("info", "app.start")  # the sender starts with the first measurement
        wanted = {
            "process.cpu.time",
            "process.memory.usage",
            "process.open_file_descriptor.count",
            "process.thread.count",
            "cpython.gc.collections",
        }
        wait_until(
            lambda: wanted <= {m.name for m in transport.measurements},
            timeout=10,
            message="the process metrics",
        )
    finally:
        z.close()
    assert set(threads) == {"zibrato-sender"}
    memory = transport.measurements.find("process.memory.usage")[0]
    assert memory.level == "info" and memory.value > 1_000_000 and memory.tags == ()
    modes = {m.tags for m in transport.measurements.find("process.cpu.time")}
    assert modes <= {("cpu.mode:user",), ("cpu.mode:system",)}


def test_process_metrics_are_off_by_default_and_the_pid_is_a_tag_only_when_asked():
    transport = ThreadedMemory()
    z = Zibrato(transport=transport)
    z.count("info", "app.start")
    z.flush()
    z.close()
    assert not [m for m in transport.measurements if m.name.startswith("process.")]
    tagged = ThreadedMemory()
    z = Zibrato(transport=tagged, process_metrics="runtime", process_metrics_pid=True)
    z.count("info", "app.start")
    wait_until(lambda: tagged.measurements.find("process.thread.count"), timeout=10, message="a sample")
    z.close()
    sample = tagged.measurements.find("process.thread.count")[0]
    assert sample.level == "runtime" and sample.tags[0].startswith("process.pid:")


def test_a_connected_link_reads_its_events_every_few_seconds_and_still_warns_of_a_lost_broker(zibrato_log):
    """While connected the monitor is read at most every read_every s (cold reads cost); a loss is still said."""
    context = zmq.Context()
    port = free_ports(1)
    pull = context.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{port}")
    push = context.socket(zmq.PUSH)
    now = [0.0]
    link = BrokerLink(push, f"tcp://127.0.0.1:{port}", lambda: "nothing waits", clock=lambda: now[0])
    push.connect(f"tcp://127.0.0.1:{port}")
    try:
        wait_until(lambda: link.check() or link.connected, timeout=10, interval=0.05, message="connected")
        reads = []
        monitor_poll = link.monitor.poll
        link.monitor.poll = lambda timeout=0: reads.append(now[0]) or monitor_poll(timeout)
        pull.close(linger=0)  # the broker goes away
        for _ in range(10):  # a check at every drain for 4.9 s of its clock (and 0.5 s of real time): nothing read
            link.check()
            now[0] += 0.49
            time.sleep(0.05)
        expect((reads, link.connected)) == ([], True)
        now[0] = 5.0  # read_every later: the disconnection is read
        wait_until(lambda: link.check() or not link.connected, timeout=10, interval=0.05, message="disconnected")
        now[0] = 5.0 + WARN_AFTER_SECONDS
        link.check()
        [warning] = warnings_of(zibrato_log)
        expect(warning).contains(f"cannot reach the broker at tcp://127.0.0.1:{port} for 5 s")
    finally:
        link.close()
        push.close(linger=0)
        context.term()
