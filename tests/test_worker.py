"""The worker runtime in-process: schedule (injected clock), series rules, status, stop, redaction.

Real ZeroMQ sockets on loopback where sockets are involved; no subprocesses.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import zmq
from expecter import expect

from support.daemons import free_ports, wait_until
from zibrato import protocol
from zibrato.backends.console import Console
from zibrato.broker import Broker
from zibrato.delivery import DeliveryQueue, Rejected
from zibrato.destination import Destination, Interval
from zibrato.rules import SeriesRules
from zibrato.runtime import STOP_SIGNALS, Secrets, StatusServer, ask_status, install_stop_handlers, printable
from zibrato.worker import Schedule, Worker
from zibrato.worker_config import WorkerConfig


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the schedule, without real time ----------------------------------------------------


def test_flushes_fall_on_wall_clock_multiples_and_the_first_interval_starts_at_start():
    clock = Clock(1000.3)
    schedule = Schedule(10.0, clock)
    expect(schedule.due()) == None
    clock.now = 1010.0
    expect(schedule.due()) == (1000.3, 1010.0)
    clock.now = 1015.0
    expect(schedule.due()) == None
    clock.now = 1020.01
    expect(schedule.due()) == (1010.0, 1020.0)
    expect(schedule.late_flushes) == 0


def test_a_late_flush_is_counted_with_its_lag_and_missed_boundaries_are_declared():
    clock = Clock(1000.0)
    schedule = Schedule(1.0, clock)
    clock.now = 1001.7  # 0.7 s late: more than half an interval
    expect(schedule.due()) == (1000.0, 1001.0)
    expect((schedule.late_flushes, schedule.missed_boundaries)) == (1, 0)
    expect(schedule.lag) == pytest.approx(0.7)
    clock.now = 1005.2  # boundaries 1002..1005 passed: one interval covers them, said so
    expect(schedule.due()) == (1001.0, 1005.0)
    expect((schedule.late_flushes, schedule.missed_boundaries)) == (2, 3)
    expect(schedule.max_lag) == pytest.approx(3.2)
    clock.now = 1006.0
    expect(schedule.due()) == (1005.0, 1006.0)


def test_fractional_boundaries_are_clean_decimals():
    clock = Clock(613.25)
    schedule = Schedule(0.1, clock)
    clock.now = 613.3
    expect(schedule.due()[1]) == 613.3


def test_the_worker_reports_late_flushes_in_status_and_self_metrics():
    clock = Clock(1000.0)
    worker = Worker(Console(stream=io.StringIO()), flush_interval=1.0, self_level=None, clock=clock)
    clock.now = 1003.5
    worker.flush(*worker.schedule.due())
    f = worker.figures()
    expect((f["late_flushes"], f["missed_boundaries"], f["flush_lag_seconds"])) == (1, 2, 2.5)
    expect(" ".join(f["problems"])).contains("flushes run 2.5 s late")
    expect(worker.self_figures(0)["late_flushes"]) == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_every_stop_signal_sets_the_stop_event(signum):
    """So that one end-to-end stop test per daemon covers TERM, INT and QUIT."""
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    stop = threading.Event()
    try:
        install_stop_handlers(stop)
        signal.raise_signal(signum)
        expect(stop.is_set()) == True
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


# --- series rules -----------------------------------------------------------------------------


def test_series_rules_keep_drop_and_drop_tags_with_counts():
    rules = SeriesRules(keep=["db.*", "#team:core"], drop=["db.debug*", "#env:dev"], drop_tags=["pod*"])
    records = [
        ("c", "db.query", (1, 2), None, ("pod:a1", "env:prod")),
        ("c", "db.debug.x", (1,), None, ()),
        ("c", "web.hit", (1,), None, ("team:core",)),
        ("c", "web.miss", (5,), None, ()),
        ("g", "db.size", (3,), None, ("env:dev",)),
    ]
    kept = rules.apply(records)
    expect(kept) == [("c", "db.query", (1, 2), None, ("env:prod",)), ("c", "web.hit", (1,), None, ("team:core",))]
    expect(rules.measurements_dropped) == 3  # one value each
    expect(rules.tags_dropped) == 1
    rules.apply(records)  # cached decisions count the same
    expect(rules.measurements_dropped) == 6


def test_dropped_tags_merge_series_in_the_worker():
    worker = Worker(Console(stream=io.StringIO()), self_level=None, rules=SeriesRules(drop_tags=["host"]))
    for host in ("a", "b"):
        worker.ingest(protocol.encode("info", 1.0, [("c", "hits", [1], None, [f"host:{host}", "k:v"])]))
    [summary] = worker.aggregator.flush(60.0, 60.0)
    expect((summary["value"], list(summary["tags"]))) == (2, ["k:v"])
    expect(worker.figures()["tags_dropped_by_rules"]) == 2


# --- health -------------------------------------------------------------------------------------


def test_a_worker_that_hears_nothing_from_its_broker_for_several_flushes_is_unhealthy():
    worker = Worker(
        Console(stream=io.StringIO()), WorkerConfig(brokers=("10.255.255.1",), flush_interval=1.0, self_level=None)
    )
    expect(worker.figures()["healthy"]) == True
    worker.started -= 31  # 31 s and 31 flushes without a message
    f = worker.figures()
    expect(f["healthy"]) == False
    expect(" ".join(f["problems"])).contains("nothing received from the broker at tcp://10.255.255.1:5551")
    worker.intake.figures["last_received"] = time.time()
    expect(worker.figures()["healthy"]) == True


def test_a_rejected_interval_is_counted_and_makes_status_unhealthy():
    class Refusing(Destination):
        name = "refusing"

        def post(self, interval):
            raise Rejected("latin-1 codec can't encode the token")

    queue = DeliveryQueue(Refusing())
    queue.put(Interval(0, 60, [{"name": "x"}]))
    queue.stop(time.monotonic() + 2)
    queue.run()
    expect(queue.counts["rejected_intervals"]) == 1
    [problem] = queue.problems()
    expect(problem).contains("1 rejected")
    expect(problem).contains("latin-1")


# --- status sockets survive anything -----------------------------------------------------------


def hostile_requests(port: int) -> None:
    """Multipart, a wrong request, junk TCP, a huge frame, and a client that leaves mid-request."""
    context = zmq.Context()
    try:
        for frames in ([b"STATUS", b"x"], [b"HELLO"], [b"", b"STATUS"]):
            req = context.socket(zmq.REQ)
            req.setsockopt(zmq.LINGER, 0)
            req.connect(f"tcp://127.0.0.1:{port}")
            req.send_multipart(frames)
            expect(req.poll(3000)) != 0
            expect(json.loads(req.recv())).contains("error")
            req.close()
        huge = context.socket(zmq.REQ)
        huge.setsockopt(zmq.LINGER, 0)
        huge.connect(f"tcp://127.0.0.1:{port}")
        huge.send(b"S" * 100_000)  # over MAXMSGSIZE: libzmq drops the peer
        huge.close()
        gone = context.socket(zmq.REQ)
        gone.setsockopt(zmq.LINGER, 0)
        gone.connect(f"tcp://127.0.0.1:{port}")
        gone.send(b"STATUS")
        gone.close()  # before the answer
    finally:
        context.term()
    for junk in (b"GET / HTTP/1.0\r\n\r\n", bytes(range(256)) * 8, b"\xff" + b"\x00" * 8 + b"\x7f"):
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            raw.sendall(junk)


@contextlib.contextmanager
def _console_worker_in_a_thread(port: int) -> Iterator[threading.Thread]:
    """A console worker of the broker at ``port``, its status on ``port + 1``, run in a thread until the block ends."""
    worker = Worker(
        Console(stream=io.StringIO()),
        WorkerConfig(port=port, flush_interval=60.0, status_port=port + 1, self_level=None),
    )
    stop = threading.Event()
    running = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    running.start()
    try:
        yield running
    finally:
        stop.set()
        running.join(10)


def test_a_worker_status_port_answers_after_hostile_requests():
    port = free_ports(2)
    with _console_worker_in_a_thread(port) as running:
        wait_until(lambda: _answers(port + 1), message="the status port")
        hostile_requests(port + 1)
        expect(ask_status("127.0.0.1", port + 1, 3)["role"]) == "console"
        expect(running.is_alive()) == True
    expect(running.is_alive()) == False


def test_the_broker_status_port_answers_after_hostile_requests():
    port = free_ports(3)
    broker = Broker(port=port, status_port=port + 2, startup_grace=0)
    stop = threading.Event()
    running = threading.Thread(target=broker.run, args=(stop,), daemon=True)
    running.start()
    try:
        expect(broker.wait_ready(5)) == True
        hostile_requests(port + 2)
        expect(ask_status("127.0.0.1", port + 2, 3)["role"]) == "broker"
        expect(running.is_alive()) == True
    finally:
        stop.set()
        running.join(10)
    expect(running.is_alive()) == False


def test_a_status_request_that_timed_out_never_breaks_the_brokers_control_socket():
    """Issue 11.2: the relaxed REQ can ask again (and stop) after a request went unanswered."""
    broker = Broker(port=0)
    context = broker.context
    silent = context.socket(zmq.REP)  # a proxy that never answers
    silent.bind(f"inproc://broker-control-{id(broker)}")
    requests = broker.control_requests()
    broker.control_timeout = 0.02
    try:
        expect(broker.proxy_statistics(requests)) == {}
        expect(broker.proxy_statistics(requests)) == {}  # EFSM here without REQ_RELAXED
        requests.send(b"TERMINATE")
    finally:
        for s in (silent, requests):
            s.close(linger=0)
        context.term()


def test_status_answers_at_once_while_the_receive_loop_is_busy():
    port = free_ports(2)

    slow = threading.Event()

    def busy(records, sharded):  # a record filter: the intake's seam, here a receive loop far behind
        if slow.is_set():
            time.sleep(0.5)
        return records

    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    worker = Worker(
        Console(stream=io.StringIO()),
        WorkerConfig(port=port, flush_interval=60.0, status_port=port + 1, self_level=None, stop_timeout=1.0),
    )
    worker.intake.filters.append(busy)
    stop = threading.Event()
    running = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    running.start()
    try:
        frame = protocol.encode("info", 1.0, [("c", "x", [1], None, [])])
        wait_until(lambda: pub.send(frame) or worker.figures_["received"] > 0, message="the flood")
        slow.set()
        for _ in range(20):
            pub.send(frame)
        started = time.monotonic()
        expect(ask_status("127.0.0.1", port + 1, 2.0)["role"]) == "console"
        expect(time.monotonic() - started) < 0.4  # less than one busy ingest
    finally:
        slow.clear()
        stop.set()
        running.join(10)
        pub.close()
        context.term()


def _answers(port: int) -> bool:
    try:
        return bool(ask_status("127.0.0.1", port, 0.5))
    except TimeoutError:
        return False


# --- stopping when behind --------------------------------------------------------------------


def test_a_stopping_worker_reads_what_is_queued_or_counts_what_it_leaves(caplog):
    port = free_ports(1)
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    worker = Worker(Console(stream=io.StringIO()), WorkerConfig(port=port, self_level=None))
    sub = worker.intake.subscribe(context)
    try:
        frame = protocol.encode("info", 1.0, [("c", "x", [1], None, [])])
        wait_until(lambda: pub.send(frame) or sub.poll(10), message="the subscription")
        for _ in range(1000):
            pub.send(frame)
        wait_until(lambda: sub.poll(0), message="queued messages")
        worker.intake.drain_at_stop(sub, read_until=time.monotonic())  # no time to read: count
        expect(worker.figures_["unread_at_stop"]) >= 1000
        expect(caplog.text).contains("not read within half the stop budget")
        for _ in range(500):
            pub.send(frame)
        wait_until(lambda: sub.poll(0), message="queued messages")
        worker.intake.figures["received"] = 0
        worker.intake.drain_at_stop(sub, read_until=time.monotonic() + 2)  # time enough: read
        expect(worker.figures_["received"]) == 500
    finally:
        sub.close()
        pub.close()
        context.term()


def test_unread_at_stop_counts_the_measurements_lost_so_that_read_plus_unread_is_what_was_sent():
    """Issue 22, item 10: it counted messages (3,475) where 21,235 measurements were lost."""
    port = free_ports(1)
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    worker = Worker(Console(stream=io.StringIO()), WorkerConfig(port=port, self_level=None))
    sub = worker.intake.subscribe(context)
    try:
        probe = protocol.encode("probe", 1.0, [("c", "probe", [1], None, [])])
        wait_until(lambda: pub.send(probe) or sub.poll(10), message="the subscription")
        while sub.poll(50):
            sub.recv()  # the probes are not part of what is counted
        now = time.time()
        summary = {"kind": "c", "start": now - 1, "end": now, "sum": 4.0, "count": 4}
        frames = [
            protocol.encode("info", 1.0, [("c", "x", [1, 2, 3], None, []), ("t", "y", [0.1] * 4, None, [])]),
            protocol.encode("info", 1.0, [("m", "z", [summary], None, [])]),
        ]
        for i in range(600):
            pub.send(frames[i % 2])
        sent = 300 * 7 + 300 * 4
        wait_until(lambda: sub.poll(0), message="queued messages")
        worker.intake.receive_available(sub, limit=250)  # the worker read some before the stop
        worker.intake.drain_at_stop(sub, read_until=time.monotonic())  # no time to read the rest
        f = worker.figures_
        expect(f["measurements"] + f["unread_at_stop"]) == sent
        expect(f["received"] + f["unread_messages_at_stop"]) == 600
        expect(f["unread_at_stop"] > f["unread_messages_at_stop"]) == True
    finally:
        sub.close()
        pub.close()
        context.term()


# --- what reaches a log ------------------------------------------------------------------------


def test_a_newline_from_the_wire_never_forges_a_log_line_and_long_text_is_cut(caplog):
    worker = Worker(Console(stream=io.StringIO()), self_level=None)
    worker.intake.malformed("name 'a\nzibrato.console ERROR forged' " + "x" * 100_000)
    [record] = caplog.records
    expect("\n" in record.getMessage()) == False
    expect(len(record.getMessage())) < 400
    expect(printable("a\u2028b")) == "a\\u2028b"


def test_every_form_of_a_credential_is_redacted_from_logs_and_status_replies():
    secrets = Secrets()
    user, token = "ops@example.com", "tok-7f3e9a1c"
    secrets.add_basic(user, token)
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("zibrato.test.redaction")
    logger.addHandler(handler)
    import zibrato.runtime as runtime

    saved = runtime.SECRETS
    runtime.SECRETS = secrets
    try:
        root_handlers = logging.getLogger().handlers
        logging.getLogger().handlers = [handler]
        secrets.install()
        logger.propagate = False
        logger.error("server echoed Authorization: Basic %s and %s", basic, token)
        try:
            raise ValueError(f"bad {token}")
        except ValueError:
            logger.exception("failed")
        # the status reply passes through the same redaction
        context = zmq.Context()
        port = free_ports(1)
        server = StatusServer(context, "127.0.0.1", port, lambda: {"last_error": f"echo {basic}"})
        server.start()
        reply = ask_status("127.0.0.1", port, 3)
        server.close()
        context.term()
    finally:
        logging.getLogger().handlers = root_handlers
        runtime.SECRETS = saved
        logger.removeHandler(handler)
    expect(stream.getvalue()).does_not_contain(basic)
    expect(stream.getvalue()).does_not_contain(token)
    expect(stream.getvalue()).contains("<redacted>")
    expect(reply["last_error"]) == "echo <redacted>"


def test_a_destination_publishes_its_own_figures_with_the_runtimes_under_the_self_level():
    from zibrato.backends.statsd import Statsd
    from zibrato.testing import MemoryZibrato

    destination = Statsd()
    destination.counts["lines_lost"] = 7
    worker = Worker(destination, self_level="ops")
    worker.self_client = client = MemoryZibrato()
    worker.report_self(series=3, elapsed=0.01)
    seen = client.measurements
    seen.assert_gauged("zibrato.statsd.lines_lost", value=7, level="ops")
    seen.assert_gauged("zibrato.statsd.series_flushed", value=3, level="ops")
    seen.assert_gauged("zibrato.statsd.late_flushes", value=0, level="ops")
    expect({m.level for m in seen}) == {"ops"}


def test_a_worker_pointed_at_no_broker_says_so_in_status_and_connects_when_it_appears():
    port = free_ports(2)
    worker = Worker(
        Console(stream=io.StringIO()),
        WorkerConfig(port=port, flush_interval=60.0, status_port=port + 1, self_level=None),
    )
    stop = threading.Event()
    running = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    running.start()
    context = zmq.Context()
    try:
        wait_until(lambda: _answers(port + 1), message="the status port")
        expect(ask_status("127.0.0.1", port + 1)["broker_connected"]) == False
        worker.connection.unconnected_since -= 11  # as if 11 s had passed
        status = ask_status("127.0.0.1", port + 1)
        expect(status["healthy"]) == False
        expect(" ".join(status["problems"])).contains(f"not connected to the broker at tcp://127.0.0.1:{port}")
        pub = context.socket(zmq.PUB)
        pub.bind(f"tcp://127.0.0.1:{port}")
        wait_until(lambda: ask_status("127.0.0.1", port + 1)["broker_connected"], message="connected")
        expect(ask_status("127.0.0.1", port + 1)["healthy"]) == True
        pub.close(linger=0)
        wait_until(lambda: not ask_status("127.0.0.1", port + 1)["broker_connected"], message="the broker gone")
    finally:
        stop.set()
        running.join(10)
        context.term()


class _MergesLevels(Destination):
    name = "levels"

    def post(self, interval: Interval) -> None:  # pragma: no cover - the tests flush by hand
        pass


class _KeepsLevels(_MergesLevels):
    needs_level = True


def test_a_destination_that_keeps_levels_gets_each_level_apart_with_its_level():
    worker = Worker(_KeepsLevels(), levels=("all",), self_level=None)
    for level in ("info", "warn"):
        worker.ingest(protocol.encode(level, 1.0, [("c", "jobs", (2,), None, ())]))
    summaries = worker.aggregator.flush(10.0, 10.0)
    expect(sorted((s["level"], s["value"]) for s in summaries)) == [("info", 2), ("warn", 2)]


def test_by_default_a_series_merges_across_levels_and_carries_no_level():
    worker = Worker(_MergesLevels(), levels=("all",), self_level=None)
    for level in ("info", "warn"):
        worker.ingest(protocol.encode(level, 1.0, [("c", "jobs", (2,), None, ())]))
    [summary] = worker.aggregator.flush(10.0, 10.0)
    expect((summary["value"], "level" in summary)) == (4, False)


def _connect_waits_for_the_handshake(monkeypatch, socket_type: int, peer: zmq.Socket) -> zmq.Socket:
    """``socket_type`` sockets return from connect() only once ``peer`` has completed the handshake.

    The widest form of the race a loaded machine runs into: the connection is made before
    whoever connected looks at it.
    """
    handshakes = peer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    original = zmq.Socket.connect

    def connect(self, address):
        result = original(self, address)
        if self.type == socket_type:
            assert handshakes.poll(10_000), "the peer saw no handshake"
            handshakes.recv_multipart()
        return result

    monkeypatch.setattr(zmq.Socket, "connect", connect)
    return handshakes


def test_a_worker_that_connects_at_once_still_knows_it_is_connected(monkeypatch):
    """The monitor is attached before connect(): else a fast connection went unseen (status: unconnected)."""
    port = free_ports(2)
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.bind(f"tcp://127.0.0.1:{port}")
    handshakes = _connect_waits_for_the_handshake(monkeypatch, zmq.SUB, pub)
    try:
        with _console_worker_in_a_thread(port):
            wait_until(lambda: _answers(port + 1), message="the status port")
            wait_until(lambda: ask_status("127.0.0.1", port + 1)["broker_connected"], timeout=5, message="connected")
    finally:
        handshakes.close(linger=0)
        pub.close(linger=0)
        context.term()


def test_the_listener_that_connects_at_once_still_knows_it_is_connected(monkeypatch):
    from zibrato.listen.publisher import Publisher as ListenPublisher

    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    handshakes = _connect_waits_for_the_handshake(monkeypatch, zmq.PUSH, pull)
    publisher = ListenPublisher(context, f"tcp://127.0.0.1:{port}")
    try:
        expect(publisher.link.poll()) == None  # None: connected (else since when it is not)
        expect(publisher.link.connections) == 1
    finally:
        publisher.close(linger=0)
        handshakes.close(linger=0)
        pull.close(linger=0)
        context.term()
