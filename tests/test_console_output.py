"""What the console prints for a newcomer: no sketch in the JSON unless asked, one median, signals by name."""

from __future__ import annotations

import json
import signal
import subprocess

from support.daemons import BIN, free_ports, run_script, wait_until
from zibrato.aggregation import Aggregator
from zibrato.backends.console import Console, table
from zibrato.destination import Interval

T = 1_700_000_000.0


def sketched_timer() -> dict:
    """A real timer summary past --max-exact: it carries its sketch."""
    aggregator = Aggregator(percentiles=(50, 99), max_exact=10)
    aggregator.add("t", "db.query", None, (), [i / 1000 for i in range(1, 200)])
    [summary] = [s for s in aggregator.flush(T, 10.0) if s["name"] == "db.query"]
    assert "sketch" in summary
    return summary


def test_console_json_leaves_the_sketch_out_unless_asked():
    summary = sketched_timer()
    plain = json.loads(Console(format="json").render(Interval(T - 10, T, [summary])))
    assert "sketch" not in plain and plain["p99"] == summary["p99"] and plain["count"] == 199
    full = json.loads(Console(format="json", sketch=True).render(Interval(T - 10, T, [summary])))
    assert full["sketch"] == summary["sketch"]


def test_the_console_flag_sketch_is_offered():
    result = run_script("zibrato-console", "--help")
    assert "--sketch" in result.stdout


def test_the_table_shows_p50_and_no_second_median():
    summary = {**sketched_timer(), "median": 0.1005, "p50": 0.1}
    text = table(T, [summary])
    assert "p50=" in text and "median" not in text
    without_p50 = {k: v for k, v in summary.items() if k != "p50"}
    assert "median(interpolated)=" in table(T, [without_p50])


def test_zibrato_help_says_what_it_is_for_and_no_longer_names_librato():
    result = run_script("zibrato", "--help")
    assert "Librato, statsd, terminal" not in result.stdout
    assert "OTLP, Prometheus" in result.stdout


def test_ctrl_c_in_the_demo_is_logged_as_sigint_by_every_daemon(tmp_path):
    port = free_ports(3)
    err = tmp_path / "demo.err"
    with open(err, "wb") as stderr:
        demo = subprocess.Popen(
            [str(BIN / "zibrato"), "demo", "--port", str(port), "--flush", "0.5"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until(lambda: "console worker: levels" in err.read_text(), timeout=30, message="the demo's worker up")
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground process
        assert demo.wait(30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    log = err.read_text()
    assert log.count("received SIGINT, stopping") >= 2, log  # the broker and the console
    assert "SIGTERM" not in log
