"""End to end: client -> real zibrato-broker -> real zibrato-console, as subprocesses."""
from __future__ import annotations

import math
import signal
import statistics

import msgpack
import pytest
import zmq
from expecter import expect

from support.daemons import Daemon, free_ports, run_script, wait_until
from support.pipeline import WorkerPipeline, pipelines
from zibrato import Zibrato
from zibrato.runtime import ask_status


class Pipeline(WorkerPipeline):
    """A broker and one console worker printing JSON lines."""

    def __init__(self, tmp_path, *worker_args, **kwargs):
        super().__init__(tmp_path, "--format", "json", *worker_args, **kwargs)

    def stop_worker(self, signum=signal.SIGTERM):
        """Stop with ``signum``; the summaries of the final flush, warm-up left out."""
        super().stop_worker(signum)
        return [s for s in self.worker.json_lines() if s["name"] != "warmup"]


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: Pipeline(tmp_path, *args, **kwargs))


def nearest_rank(values, pct):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGQUIT, signal.SIGINT])
def test_exact_statistics_arrive_and_stop_signal_flushes_them(pipeline, signum):
    p = pipeline("--percentiles", "50,90,99.9")
    timer_values = [i / 1000 for i in range(1, 201)]  # 1 ms .. 200 ms
    for v in timer_values:
        p.client.timing("info", "db.query", v, source="api")
    for i in range(1, 51):
        p.client.count("info", "signup", i)
    for g in (5, -3, 12, 7):
        p.client.gauge("info", "queue.depth", g)
    p.wait_measurements(200 + 50 + 4)

    out = {s["name"]: s for s in p.stop_worker(signum)}

    timer = out["db.query"]
    expect(timer["type"]) == "timer"
    expect(timer["source"]) == "api"
    expect(timer["count"]) == 200
    expect(timer["min"]) == 0.001
    expect(timer["max"]) == 0.2
    expect(timer["sum"]) == pytest.approx(sum(timer_values))
    expect(timer["mean"]) == pytest.approx(statistics.fmean(timer_values))
    expect(timer["median"]) == pytest.approx(statistics.median(timer_values))
    expect(timer["stddev"]) == pytest.approx(statistics.pstdev(timer_values))
    for key, pct in (("p50", 50), ("p90", 90), ("p99_9", 99.9)):
        expect(timer[key]) == nearest_rank(timer_values, pct)
    expect(out["signup"]["value"]) == sum(range(1, 51))
    expect(out["signup"]["count"]) == 50
    gauge = out["queue.depth"]
    expect((gauge["value"], gauge["min"], gauge["max"], gauge["count"])) == (7, -3, 12, 4)


def test_levels_match_exactly(pipeline):
    p = pipeline("--levels", "info,warn")
    for level in ("info", "information", "info2", "inf", "warn", "warning", "debug"):
        p.client.count(level, f"from.{level}")
    p.client.count("info", "sentinel")
    p.client.flush()
    p.wait_measurements(3)  # from.info, from.warn, sentinel
    names = {s["name"] for s in p.stop_worker()}
    expect(names) == {"from.info", "from.warn", "sentinel"}


def test_flushes_on_wall_clock_schedule_even_without_traffic(pipeline):
    p = pipeline(flush=0.5)
    p.client.count("info", "tick", 3)
    p.client.flush()
    lines = wait_until(lambda: [s for s in p.worker.json_lines() if s["name"] == "tick"],
                       message="the tick counter flushed")
    expect(lines[0]["value"]) == 3
    expect(lines[0]["time"] * 2) == round(lines[0]["time"] * 2)  # a multiple of 0.5 s
    flushes = p.status()["flushes"]
    wait_until(lambda: p.status()["flushes"] >= flushes + 2, timeout=5,
               message="two more flushes with nothing arriving")


def test_garbage_never_stops_broker_or_worker(pipeline):
    p = pipeline("--levels", "all")
    context = zmq.Context.instance()
    raw = context.socket(zmq.PUSH)
    raw.setsockopt(zmq.LINGER, 1000)
    raw.connect(f"tcp://127.0.0.1:{p.base}")
    garbage = [
        b"no terminator at all",
        b"info\x00\xc1 not msgpack",
        b"info\x00" + msgpack.packb([2, 0.0, []]),                   # unknown version
        b"info\x00" + msgpack.packb([1, 0.0, [["x", "n", [1], None, []]]]),  # unknown type
        b"info\x00" + msgpack.packb([1, 0.0, [["c", "n", ["1"], None, []]]]),  # string value
        b"info\x00" + msgpack.packb({"version": 1}),
    ]
    for frame in garbage:
        raw.send(frame)
    raw.send_multipart([b"info\x00", b"two frames"])
    raw.close()
    wait_until(lambda: p.status()["malformed"] >= len(garbage) + 1, message="malformed counted")
    p.client.count("info", "still.alive", 2)
    p.client.flush()
    out = p.stop_worker()
    expect([(s["name"], s["value"]) for s in out]) == [("still.alive", 2)]
    expect(p.worker.stderr).contains("dropped malformed message")
    expect(p.broker.process.poll()) == None


def test_oversized_message_is_refused_and_the_broker_keeps_going(tmp_path):
    base = free_ports(3)
    broker = Daemon(tmp_path, "zibrato-broker", "--port", base, "--startup-grace", "0",
                    "--max-message-size", 2048).start()
    try:
        broker.wait_for_log("broker ready")
        context = zmq.Context.instance()
        raw = context.socket(zmq.PUSH)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(f"tcp://127.0.0.1:{base}")
        raw.send(b"info\x00" + b"x" * 100_000)
        raw.close()
        wait_until(lambda: ask_status("127.0.0.1", base + 2)["received"] == 0 and True,
                   message="status answer")
        with Zibrato(port=base) as z:
            z.count("info", "after")
            z.flush()
            wait_until(lambda: ask_status("127.0.0.1", base + 2)["received"] >= 1,
                       message="the next client's message")
        expect(broker.process.poll()) == None
    finally:
        broker.stop()


def test_worker_reports_its_own_figures_under_its_level(tmp_path):
    base = free_ports(3)
    broker = Daemon(tmp_path, "zibrato-broker", "--port", base, "--startup-grace", "0").start()
    worker = Daemon(tmp_path, "zibrato-console", "--port", base + 1, "--format", "json",
                    "--flush", "0.3", "--levels", "zibrato")
    try:
        broker.wait_for_log("broker ready")
        worker.start()
        lines = wait_until(lambda: [s for s in worker.json_lines()
                                    if s["name"] == "zibrato.console.flush_duration"],
                           message="self metrics flushed")
        expect(lines[0]["type"]) == "timer"
        expect(lines[0]["tags"]).contains("worker:console")
    finally:
        worker.stop()
        broker.stop()


def test_broker_status_reports_forwarded_messages(pipeline):
    p = pipeline()
    p.client.count("info", "x")
    p.client.flush()
    p.wait_measurements(1)
    result = run_script("zibrato", "status", "--port", p.base + 2, "--port", p.status_port)
    expect(result.returncode) == 0
    expect(result.stdout).contains("broker OK")
    expect(result.stdout).contains("console OK")
    silent = run_script("zibrato", "status", "--port", free_ports(1), "--timeout", "0.3")
    expect(silent.returncode) == 2
    expect(silent.stdout).contains("UNREACHABLE")


def test_broker_port_in_use_is_a_clear_error(tmp_path):
    base = free_ports(3)
    first = Daemon(tmp_path, "zibrato-broker", "--port", base, "--startup-grace", "0").start()
    try:
        first.wait_for_log("broker ready")
        second = run_script("zibrato-broker", "--port", base, timeout=20)
        expect(second.returncode) == 1
        expect(second.stderr).contains("address already in use")
    finally:
        first.stop()


@pytest.mark.parametrize("script, args, complaint", [
    ("zibrato-broker", ["--port", "abc"], "is not a valid integer"),
    ("zibrato-broker", ["--bogus"], "No such option"),
    ("zibrato-console", ["--levels", ","], "no level given"),
    ("zibrato-console", ["--levels", "in fo"], "invalid level"),
    ("zibrato-console", ["--flush", "0"], "must be greater than 0"),
    ("zibrato-console", ["--percentiles", "50,101"], "outside (0, 100]"),
    ("zibrato-console", ["--format", "xml"], "xml"),
])
def test_bad_flags_exit_with_usage(script, args, complaint):
    result = run_script(script, *args)
    expect(result.returncode) == 2
    expect(result.stderr).contains("Usage:")
    expect(result.stderr).contains(complaint)


def test_help_explains_every_command():
    for script in ("zibrato", "zibrato-broker", "zibrato-console"):
        result = run_script(script, "--help")
        expect(result.returncode) == 0
        expect(result.stdout).contains("Usage:")
    expect(run_script("zibrato-console", "--help").stdout).contains("--percentiles")


def test_demo_shows_metrics_within_seconds(tmp_path):
    base = free_ports(3)
    result = run_script("zibrato", "demo", "--port", base, "--flush", "0.5", "--duration", "3",
                        "--format", "json", timeout=60)
    expect(result.returncode) == 0
    names = {line.split('"name":"')[1].split('"')[0] for line in result.stdout.splitlines()
             if '"name":"' in line}
    expect(names >= {"web.request", "db.query", "queue.depth"}) == True
