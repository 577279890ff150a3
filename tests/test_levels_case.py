"""Levels are case-insensitive everywhere: `--levels INFO`, the listener's `--level` and `level:` tags."""

from __future__ import annotations

from support.daemons import Daemon, free_ports, wait_until
from zibrato import Zibrato
from zibrato.listen.statsd import StatsdParser
from zibrato.worker import Worker, parse_levels


def test_levels_flag_is_lower_cased_and_deduplicated():
    assert parse_levels("INFO,Warn,info") == ("info", "warn")
    assert parse_levels("ALL") == ("all",)


def test_the_listener_lower_cases_its_level_and_level_tags():
    pending: dict = {}
    parser = StatsdParser(level="StatsD")
    parser.feed(b"a:1|c\nb:1|c|#level:WARN,env:prod", pending)
    levels = {series.name: series.level for series in pending}
    assert levels == {"a": "statsd", "b": "warn"}


def test_a_worker_given_levels_in_capitals_receives_lower_case_levels(tmp_path):
    from zibrato.backends.console import Console

    assert Worker(Console(), levels=("INFO",)).levels == ("info",)
    port = free_ports(3)
    broker = Daemon(tmp_path, "zibrato-broker", "--port", port, "--startup-grace", "0").start()
    worker = Daemon(
        tmp_path,
        "zibrato-console",
        "--broker",
        f"127.0.0.1:{port + 1}",
        "--levels",
        "INFO",
        "--flush",
        "0.3",
        "--format",
        "json",
    ).start()
    try:
        broker.wait_for_log("broker ready")
        worker.wait_for_log("console worker: levels info")
        with Zibrato(port=port) as z:

            def arrived():
                z.count("info", "case.hits")
                z.flush()
                return any(s["name"] == "case.hits" for s in worker.json_lines())

            wait_until(arrived, timeout=20, interval=0.3, message="info measurements at a worker given INFO")
    finally:
        worker.stop()
        broker.stop()
