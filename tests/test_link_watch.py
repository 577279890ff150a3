"""Nothing silent: a worker or the listener without a broker, and levels that hear nothing, say so in the log.

Real daemons as subprocesses; the warnings come after 10 s without a broker
(so these tests wait that long), and after 3 empty flushes while connected.
"""

from __future__ import annotations

import logging
import signal

import pytest

from support.daemons import Daemon, free_ports, wait_until
from zibrato.link_watch import LinkWatch
from zibrato.runtime import ask_status


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def test_a_worker_without_a_broker_warns_after_10_seconds(tmp_path, daemons):
    port = free_ports(2)  # nothing listens there
    worker = Daemon(
        tmp_path, "zibrato-console", "--broker", f"127.0.0.1:{port + 1}", "--flush", "1", "--no-self-metrics"
    ).start()
    daemons.append(worker)
    worker.wait_for_log(f"WARNING no connection to the broker at tcp://127.0.0.1:{port + 1} for 10 s", timeout=40)
    assert "is it running there (--host, --port)?" in worker.stderr


def test_the_listener_without_a_broker_warns_after_10_seconds(tmp_path, daemons):
    port = free_ports(1)
    listener = Daemon(
        tmp_path, "zibrato-listen", "--statsd", "127.0.0.1:0", "--broker", f"127.0.0.1:{port}", "--no-self-metrics"
    ).start()
    daemons.append(listener)
    listener.wait_for_log(f"WARNING no connection to the broker at tcp://127.0.0.1:{port} for 10 s", timeout=40)
    assert "(--broker)" in listener.stderr


def test_levels_that_receive_nothing_while_connected_are_warned_about(tmp_path, daemons):
    port = free_ports(3)
    broker = Daemon(tmp_path, "zibrato-broker", "--port", port, "--startup-grace", "0").start()
    daemons.append(broker)
    broker.wait_for_log("broker ready")
    worker = Daemon(
        tmp_path,
        "zibrato-console",
        "--broker",
        f"127.0.0.1:{port + 1}",
        "--levels",
        "infoo",
        "--flush",
        "0.3",
        "--no-self-metrics",
    ).start()
    daemons.append(worker)
    worker.wait_for_log("WARNING levels infoo received nothing for 3 flushes while connected", timeout=30)


def test_a_clean_stop_of_broker_then_worker_logs_no_connection_warning(tmp_path, daemons):
    port = free_ports(3)
    broker = Daemon(tmp_path, "zibrato-broker", "--port", port, "--startup-grace", "0").start()
    daemons.append(broker)
    broker.wait_for_log("broker ready")
    worker = Daemon(tmp_path, "zibrato-console", "--broker", f"127.0.0.1:{port + 1}", "--flush", "0.5").start()
    daemons.append(worker)
    worker.wait_for_log("console worker: levels")
    wait_until(
        lambda: ask_status("127.0.0.1", port + 2)["subscribed_levels"] == ["*"],
        timeout=10,
        message="the worker connected to the broker",
    )
    # supervisord's order on shutdown: the broker first, then the worker
    broker.signal(signal.SIGTERM)
    assert broker.wait() == 0
    worker.wait_for_log("lost the connection to the broker")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    warnings = [line for line in worker.stderr.splitlines() if " WARNING " in line]
    assert warnings == [], warnings


def test_one_warning_per_episode():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("zibrato.test-watch")
    log.addHandler(Keep())
    now = [100.0]
    watch = LinkWatch(log, "tcp://b:5551", "--host, --port", levels=("info",), clock=lambda: now[0])
    watch.unconnected(95.0)  # 5 s: not yet
    now[0] = 111.0
    watch.unconnected(95.0)
    watch.unconnected(95.0)  # the same episode: once
    watch.unconnected(None)  # connected again
    watch.unconnected(111.0)
    now[0] = 122.0
    watch.unconnected(111.0)  # a new episode
    for total in (5, 5, 5, 5, 5, 5):  # connected, nothing new: warned at the 3rd empty flush only
        watch.flushed(total, connected=True)
    assert [r.getMessage()[:40] for r in records] == [
        "no connection to the broker at tcp://b:5",
        "no connection to the broker at tcp://b:5",
        "levels info received nothing for 3 flush",
    ]
