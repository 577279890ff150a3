"""End to end: client -> real broker -> real console worker.

As subprocesses (the real zibrato-broker and zibrato-console) where the test is about the
scripts: the stop signal's final flush, exit codes, the demo; in threads of the test process
(``support.inprocess``) where it is about what the broker and the worker do.
"""

from __future__ import annotations

import contextlib
import io
import math
import signal
import socket
import statistics
import threading
import time
from fractions import Fraction

import msgpack
import pytest
import zmq
from click.testing import CliRunner
from expecter import expect
from zmq.utils.monitor import recv_monitor_message

from support import inprocess
from support.daemons import Daemon, free_ports, run_script, wait_until
from support.pipeline import WorkerPipeline, pipelines
from zibrato import protocol
from zibrato.backends.console import Console, human_seconds
from zibrato.cli import group
from zibrato.worker import Worker
from zibrato.worker_config import WorkerConfig


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


class Threaded(inprocess.ConsolePipeline):
    """The same, broker and worker in threads; options are WorkerConfig fields (``broker``: Broker's)."""

    def stop_worker(self):
        """Stop as SIGTERM stops the script; the summaries of the final flush, warm-up left out."""
        super().stop_worker()
        return [s for s in self.json_lines() if s["name"] != "warmup"]


@pytest.fixture
def threaded():
    yield from pipelines(Threaded)


def nearest_rank(values, pct):
    """The ceil(pct/100 * n)-th smallest, pct taken as written (in floats 0.999 * 1000 > 999)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(Fraction(str(pct)) / 100 * len(ordered))) - 1]


def test_exact_statistics_arrive_and_stop_signal_flushes_them(pipeline):
    signum = signal.SIGTERM  # every stop signal is one handler: tests/test_worker.py
    p = pipeline("--percentiles", "50,90,99,99.9")
    # 1 ms .. 1 s: with 1,000 values p99.9 is the 999th, neither the max nor p99
    timer_values = [i / 1000 for i in range(1, 1001)]
    for v in timer_values:
        p.client.timing("info", "db.query", v, source="api")
    for i in range(1, 51):
        p.client.count("info", "signup", i)
    for g in (5, -3, 12, 7):
        p.client.gauge("info", "queue.depth", g)
    p.wait_measurements(1000 + 50 + 4)

    out = {s["name"]: s for s in p.stop_worker(signum)}

    timer = out["db.query"]
    expect(timer["type"]) == "timer"
    expect(timer["source"]) == "api"
    expect(timer["count"]) == 1000
    expect(timer["min"]) == 0.001
    expect(timer["max"]) == 1.0
    expect(timer["sum"]) == pytest.approx(sum(timer_values))
    expect(timer["mean"]) == pytest.approx(statistics.fmean(timer_values))
    expect(timer["median"]) == pytest.approx(statistics.median(timer_values))
    expect(timer["stddev"]) == pytest.approx(statistics.pstdev(timer_values))
    for key, pct in (("p50", 50), ("p90", 90), ("p99", 99), ("p99_9", 99.9)):
        expect(timer[key]) == nearest_rank(timer_values, pct)
    expect(timer["p99_9"]) == 0.999
    expect(out["signup"]["value"]) == sum(range(1, 51))
    expect(out["signup"]["count"]) == 50
    gauge = out["queue.depth"]
    expect((gauge["value"], gauge["min"], gauge["max"], gauge["count"])) == (7, -3, 12, 4)


def test_levels_match_exactly(threaded):
    p = threaded(levels=("info", "warn"))
    for level in ("info", "information", "info2", "inf", "warn", "warning", "debug"):
        p.client.count(level, f"from.{level}")
    p.client.count("info", "sentinel")
    p.client.flush()
    p.wait_measurements(3)  # from.info, from.warn, sentinel
    names = {s["name"] for s in p.stop_worker()}
    expect(names) == {"from.info", "from.warn", "sentinel"}


def test_flushes_on_wall_clock_schedule_even_without_traffic():
    """A real worker in a thread (the schedule's arithmetic: tests/test_worker.py, no real time)."""
    worker = Worker(
        Console(stream=io.StringIO()), WorkerConfig(port=free_ports(1), flush_interval=0.05, self_level=None)
    )
    stop = threading.Event()
    running = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    running.start()
    try:
        wait_until(lambda: worker.figures_["flushes"] >= 3, timeout=5, message="three flushes with nothing arriving")
        expect(worker.figures_["last_flush"] * 20) == pytest.approx(round(worker.figures_["last_flush"] * 20))
    finally:
        stop.set()
        running.join(10)


def test_first_interval_rate_is_per_second_since_the_worker_started():
    clock = [1003.0]  # a third into the interval 1002-1005
    worker = Worker(Console(stream=io.StringIO()), flush_interval=3.0, self_level=None, clock=lambda: clock[0])
    worker.schedule.start()
    worker.ingest(protocol.encode("info", 1003.5, [("c", "hits", [6], None, [])]))
    clock[0] = 1005.0
    interval = worker.flush(*worker.schedule.due())
    [first] = interval.summaries
    expect((interval.start, interval.end)) == (1003.0, 1005.0)
    expect(first["interval"]) == 2.0
    expect(first["rate"]) == 3.0


def test_garbage_never_stops_broker_or_worker(threaded):
    p = threaded(levels=("all",))
    context = zmq.Context.instance()
    raw = context.socket(zmq.PUSH)
    raw.setsockopt(zmq.LINGER, 1000)
    raw.connect(f"tcp://127.0.0.1:{p.base}")
    garbage = [
        b"no terminator at all",
        b"info\x00\xc1 not msgpack",
        b"info\x00" + msgpack.packb([2, 0.0, []]),  # unknown version
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
    expect(p.broker.running) == True


SMALL_LIMIT = 65536


def timer_frame(name, values):
    """A valid protocol frame: one timer record of ``values`` copies of 1 ms."""
    return protocol.encode("info", time.time(), [["t", name, [0.001] * values, None, []]])


def largest_timer_frame(name, limit):
    """The timer frame with the most values that is still at most ``limit`` bytes."""
    values = limit // 9  # a msgpack double takes 9 bytes
    while len(timer_frame(name, values)) > limit:
        values -= 1
    return values, timer_frame(name, values)


@contextlib.contextmanager
def raw_sender(base):
    """A bare PUSH socket to the broker, and a monitor reporting the broker hanging up on it.

    Kept open until the test has seen the outcome: a socket closed with linger
    ends itself once its frame is in the kernel, before the broker answers.
    """
    raw = zmq.Context.instance().socket(zmq.PUSH)
    monitor = raw.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    raw.connect(f"tcp://127.0.0.1:{base}")
    try:
        yield raw, monitor
    finally:
        raw.disable_monitor()
        monitor.close(linger=0)
        raw.close(linger=0)


def wait_for_hangup(monitor, timeout=10.0):
    if not monitor.poll(timeout * 1000):
        raise AssertionError(f"the broker did not disconnect the sender within {timeout} s")
    expect(recv_monitor_message(monitor)["event"]) == zmq.EVENT_DISCONNECTED


def test_a_message_over_the_broker_limit_is_dropped_and_its_sender_disconnected(threaded):
    p = threaded(broker={"max_message_size": SMALL_LIMIT})
    big = timer_frame("too.big", SMALL_LIMIT // 4)
    assert len(big) > SMALL_LIMIT
    with raw_sender(p.base) as (raw, monitor):
        raw.send(big)
        wait_for_hangup(monitor)
    p.client.count("info", "after", 7)
    p.wait_measurements(1)
    received = p.status()["received"]

    out = p.stop_worker()

    expect([(s["name"], s["value"]) for s in out]) == [("after", 7)]
    broker = p.broker_status()
    expect((broker["received"], broker["forwarded"])) == (received, received)  # the big one: neither
    expect(p.broker.running) == True


def test_a_message_just_under_the_broker_limit_is_delivered(threaded):
    p = threaded(broker={"max_message_size": SMALL_LIMIT})
    values, frame = largest_timer_frame("near.limit", SMALL_LIMIT)
    assert SMALL_LIMIT - 16 < len(frame) <= SMALL_LIMIT
    with raw_sender(p.base) as (raw, monitor):
        raw.send(frame)
        p.wait_measurements(values)
        expect(monitor.poll(0)) == 0  # not disconnected

    out = {s["name"]: s for s in p.stop_worker()}

    expect(out["near.limit"]["count"]) == values


def test_workers_take_every_message_the_broker_allows_past_4_mib(threaded):
    """The broker is the trust boundary: a worker must not cut its own subscription
    over a message the broker was configured to accept."""
    limit = 2 * protocol.MAX_MESSAGE_SIZE
    p = threaded(broker={"max_message_size": limit})
    values, frame = largest_timer_frame("big.but.allowed", limit - 1024)
    assert len(frame) > protocol.MAX_MESSAGE_SIZE
    with raw_sender(p.base) as (raw, monitor):
        raw.send(frame)
        p.wait_measurements(values)
    p.client.count("info", "after", 3)
    p.wait_measurements(values + 1)

    out = {s["name"]: s for s in p.stop_worker()}

    expect(out["big.but.allowed"]["count"]) == values
    expect(out["after"]["value"]) == 3


def test_worker_reports_its_own_figures_under_its_level(pipeline, tmp_path):
    """Worker A (info only) publishes its figures; worker B (level zibrato only) prints them."""
    p = pipeline("--self-metrics", "--levels", "info", flush=0.3)
    observer = Daemon(
        tmp_path,
        "zibrato-console",
        "--port",
        p.base + 1,
        "--format",
        "json",
        "--flush",
        "0.3",
        "--levels",
        "zibrato",
        "--no-self-metrics",
    ).start()
    try:
        baseline = p.status()["received"]  # the warm-up messages
        valid = protocol.encode("info", time.time(), [["c", "x", [1], None, []]])
        with raw_sender(p.base) as (raw, _):
            for frame in (valid, valid, valid, b"info\x00junk", b"info\x00more junk"):
                raw.send(frame)
            wait_until(lambda: p.status()["received"] == baseline + 5, message="five messages")

        def last_value(name):
            values = [s["value"] for s in observer.json_lines() if s["name"] == name]
            return values[-1] if values else None

        wait_until(lambda: last_value("zibrato.console.received") == baseline + 5, message="the received self-metric")
        expect(last_value("zibrato.console.malformed")) == 2
        timers = [s for s in observer.json_lines() if s["name"] == "zibrato.console.flush_duration"]
        expect(timers[0]["type"]) == "timer"
        expect(timers[0]["tags"]).contains("worker:console")
    finally:
        observer.stop()


def test_self_metrics_go_under_the_configured_self_level(broker_pull):
    """A worker in a thread, its broker port at ``broker_pull``: what it publishes about itself."""
    config = WorkerConfig(port=broker_pull.port + 1, broker_port=broker_pull.port, self_level="ops", flush_interval=0.2)
    worker = inprocess.Running(
        "worker", Worker.from_config(Console(stream=io.StringIO()), config).run, "zibrato.console"
    ).start()
    try:
        records = broker_pull.receive_count(1, "zibrato.console.received")
    finally:
        expect(worker.stop()) == 0
    expect({r.level for r in records}) == {"ops"}


def test_broker_status_reports_forwarded_messages(threaded):
    p = threaded()
    p.client.count("info", "x")
    p.client.flush()
    p.wait_measurements(1)
    result = zibrato_status("--port", p.base + 2, "--port", p.status_port)
    expect(result.exit_code) == 0
    expect(result.output).contains("broker OK")
    expect(result.output).contains("console OK")
    silent = zibrato_status("--port", free_ports(1), "--timeout", "0.3")
    expect(silent.exit_code) == 2
    expect(silent.output).contains("UNREACHABLE")


def zibrato_status(*args):
    """`zibrato status` in-process (tests/test_status.py runs the script)."""
    return CliRunner().invoke(group, ["status", *map(str, args)], prog_name="zibrato")


def test_broker_stops_cleanly_on_its_stop_signal_and_forwards_what_it_took(pipeline):
    signum = signal.SIGQUIT  # supervisord's stopsignal; TERM and INT are the same handler
    p = pipeline()
    for i in range(1, 101):
        p.client.count("info", "before.stop", i)
    assert p.client.flush(), "flush() timed out"  # in ZeroMQ's hands: on its way to the broker

    p.broker.signal(signum)
    code = p.broker.wait(10)

    expect(code) == 0
    expect(p.broker.stderr).contains(f"received {signal.Signals(signum).name}, stopping")
    expect(p.broker.stderr).contains("broker stopped")
    expect(p.broker.stderr).does_not_contain("Traceback")
    p.wait_measurements(100)  # the worker got all of them, through the stopping broker
    out = {s["name"]: s for s in p.stop_worker()}
    expect(out["before.stop"]["value"]) == sum(range(1, 101))


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


def test_the_console_scripts_are_installed_and_explain_themselves():
    """One subprocess check of the entry points; every flag's usage is checked in test_cli.py."""
    result = run_script("zibrato-console", "--help")
    expect(result.returncode) == 0
    expect(result.stdout).contains("--percentiles")


def test_demo_shows_metrics_within_seconds(tmp_path):
    base = free_ports(3)
    result = run_script(
        "zibrato", "demo", "--port", base, "--flush", "0.5", "--duration", "3", "--format", "json", timeout=60
    )
    expect(result.returncode) == 0
    names = {line.split('"name":"')[1].split('"')[0] for line in result.stdout.splitlines() if '"name":"' in line}
    expect(names >= {"web.request", "db.query", "queue.depth"}) == True
    expect([name for name in names if name.startswith("zibrato.")]) == []  # the demo's metrics only
    expect(result.stderr).does_not_contain("deprecated")  # a newcomer's first command uses today's flags


def test_demo_stops_with_a_clear_message_when_its_broker_cannot_start():
    base = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base))
        taken.listen()
        started = time.monotonic()
        result = run_script("zibrato", "demo", "--port", base, "--duration", "60", timeout=20)
    expect(result.returncode) == 1
    expect(result.stderr).contains("address already in use")
    expect(result.stderr).contains("the broker exited with status 1")
    expect(time.monotonic() - started < 10) == True


# --- the console's table (no subprocesses) ------------------------------------------


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0s"),
        (1.0, "1s"),
        (0.9996, "1s"),
        (2.5, "2.5s"),
        (59.99, "1min"),
        (1234, "20.6min"),
        (7200, "2h"),
        (1e6, "278h"),
        (0.0456, "45.6ms"),
        (0.0009996, "1ms"),
        (0.000123, "123µs"),
        (5e-9, "5ns"),
        (-0.002, "-2ms"),
    ],
)
def test_human_seconds_reads_without_exponents(seconds, text):
    expect(human_seconds(seconds)) == text
