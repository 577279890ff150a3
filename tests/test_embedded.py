"""zibrato.embedded: the worker runtime and a destination in the application's process, end to end.

Console (a real subprocess printing JSON lines) and Prometheus (its real
HTTP endpoint scraped) receive exactly what was recorded; a forked child
warns once and drops what it records, counted; the in-process transport is
bounded in bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import urllib.request

import pytest

from support.daemons import wait_until
from zibrato import embedded
from zibrato.embedded import QueueTransport


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)


def test_console_in_process_prints_exact_json_lines_and_the_last_interval_at_close():
    result = run_python(
        """
        import zibrato.embedded
        z = zibrato.embedded.start("console", format="json", flush=60)
        for i in range(1000):
            z.count("info", "orders", 2)
        for ms in (1, 2, 3, 4):
            z.timing("info", "db.query", seconds=ms / 1000)
        z.count("debug", "kept.apart")
        z.close()   # flushes the partial interval and delivers it
        """
    )
    assert result.returncode == 0, result.stderr
    lines = {s["name"]: s for s in map(json.loads, result.stdout.splitlines())}
    assert lines["orders"]["value"] == 2000 and lines["orders"]["count"] == 1000
    assert lines["db.query"]["count"] == 4 and lines["db.query"]["max"] == 0.004
    assert "kept.apart" in lines


def test_prometheus_in_process_serves_exact_counts_from_many_threads():
    z = embedded.start("prometheus", listen="127.0.0.1:0", flush=0.2)
    try:

        def record():
            for _ in range(500):
                z.count("info", "embedded.requests")

        threads = [threading.Thread(target=record) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        z.count("debug", "embedded.debug")
        destination = z.destination

        def scraped():
            if destination.server is None:
                return None
            host, port = destination.address
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as answer:
                text = answer.read().decode()
            return 'embedded_requests_total{level="info"} 2000.0' in text and "embedded_debug_total" in text

        wait_until(scraped, timeout=20, interval=0.1, message="2000 requests scraped from the embedded worker")
        assert z.dropped == 0
    finally:
        z.close()


def test_levels_filter_as_a_worker_would():
    z = embedded.start("console", format="json", levels="INFO", flush=60)
    try:
        assert z.runtime.worker.levels == ("info",)
    finally:
        z.close()


def test_a_forked_child_warns_once_drops_and_counts_and_nothing_crashes():
    result = run_python(
        """
        import os, sys
        import zibrato.embedded
        z = zibrato.embedded.start("console", format="json", flush=60)
        z.count("info", "parent")
        pid = os.fork()
        if pid == 0:
            for _ in range(3):
                z.count("info", "child")
                z.flush()
            sys.stderr.write(f"child dropped {z.dropped}\\n")
            sys.stderr.flush()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        z.close()
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("embedded mode does not aggregate across processes") == 1, result.stderr
    assert "child dropped 3" in result.stderr
    names = [json.loads(line)["name"] for line in result.stdout.splitlines()]
    assert names == ["parent"]


def test_the_in_process_transport_is_bounded_in_bytes_and_refuses_rather_than_blocks():
    transport = QueueTransport(max_bytes=100)
    assert transport.send(b"x" * 60) is True
    assert transport.send(b"x" * 60) is False  # would pass the bound: dropped and counted by the publisher
    assert transport.refused == 1
    assert transport.take() == [b"x" * 60] and transport.send(b"x" * 60) is True


def test_an_unknown_destination_or_option_fails_at_once():
    with pytest.raises(ValueError, match="unknown destination 'librat'"):
        embedded.start("librat")
    with pytest.raises(TypeError):
        embedded.start("console", colour=True)
