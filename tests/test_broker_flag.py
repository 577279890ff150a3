"""Workers take --broker HOST:PORT; the former --host/--port still work, hidden, with a deprecation line."""

from __future__ import annotations

import pytest

from support.daemons import Daemon, free_ports, run_script, wait_until
from zibrato import Zibrato


@pytest.fixture
def broker(tmp_path):
    port = free_ports(3)
    daemon = Daemon(tmp_path, "zibrato-broker", "--port", port, "--startup-grace", "0").start()
    daemon.wait_for_log("broker ready")
    yield port
    daemon.stop()


@pytest.mark.parametrize("flags", ["--broker", "--host/--port"])
def test_a_worker_reads_the_broker_named_either_way(tmp_path, broker, flags):
    address = ["--broker", f"127.0.0.1:{broker + 1}"] if flags == "--broker" else ["--port", broker + 1]
    worker = Daemon(tmp_path, "zibrato-console", *address, "--flush", "0.3", "--format", "json").start()
    try:
        worker.wait_for_log("console worker: levels")
        with Zibrato(port=broker) as z:

            def arrived():
                z.count("info", "flag.hits")
                z.flush()
                names = {s["name"] for s in worker.json_lines()}
                # self-metrics go to the same broker's client port (--broker port - 1)
                return "flag.hits" in names and "zibrato.console.received" in names

            wait_until(arrived, timeout=20, interval=0.3, message="the stream and the self-metrics at the worker")
    finally:
        worker.stop()
    deprecated = "--port on workers are deprecated" in worker.stderr
    assert deprecated == (flags == "--host/--port"), worker.stderr
    if deprecated:
        assert worker.stderr.count("deprecated") == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--broker", "127.0.0.1"], "no port"),
        (["--broker", "127.0.0.1:99999"], "port 99999 out of range"),
        (["--broker", "127.0.0.1:5551", "--port", "5551"], "not both"),
    ],
)
def test_bad_broker_flags_are_usage_errors(args, message):
    result = run_script("zibrato-console", *args, timeout=20)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_help_shows_broker_and_hides_the_former_flags():
    text = run_script("zibrato-console", "--help").stdout
    assert "--broker HOST:PORT" in text and "--host TEXT" not in text and "--port INTEGER" not in text
