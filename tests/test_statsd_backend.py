"""zibrato-statsd against real sockets and the real Etsy statsd 0.9.0.

The first tests drive the destination directly (``post`` as the delivery
thread calls it, or its real delivery queue: tests/support/rig.py) against
loopback sockets of the test's own, or the real statsd; the others run
client -> zibrato-broker -> zibrato-statsd -> Etsy statsd as real processes
and read back what statsd itself computed (through the capture backend of
tests/support/etsy_statsd.py). No mocks, no fixed sleeps: everything polls
with a timeout.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import socket
import threading
import time

import pytest
from expecter import expect

from support.daemons import free_ports, run_script, wait_until
from support.etsy_statsd import INSTALL_COMMAND, EtsyStatsd
from support.pipeline import DAY, WorkerPipeline, pipelines
from support.rig import Rig
from zibrato.backends.statsd import Statsd, milliseconds, number, pack, sample_rate
from zibrato.delivery import Backoff

needs_node = pytest.mark.skipif(
    shutil.which("node") is None,
    reason=f"Node.js (node) is not on PATH; the real Etsy statsd needs it (then: {INSTALL_COMMAND})",
)
T = 1_700_000_000.0


class UdpReceiver:
    """A UDP socket on a free loopback port, standing in for statsd; keeps every datagram."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []

    def receive_lines(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """Receive until ``count`` lines have arrived in all; the lines, in order."""
        deadline = time.monotonic() + timeout
        while len(self.lines()) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {count} lines; got {self.lines()}")
            self.sock.settimeout(left)
            try:
                self.datagrams.append(self.sock.recv(65535))
            except TimeoutError:
                pass
        return self.lines()

    def lines(self) -> list[bytes]:
        return [line for d in self.datagrams for line in d.split(b"\n")]

    def close(self) -> None:
        self.sock.close()


class TcpReceiver:
    """A TCP listener standing in for statsd: records each connection's bytes."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[bytearray] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            data = bytearray()
            with self._lock:
                self.connections.append(data)
                self._conns.append(conn)
            threading.Thread(target=self._read, args=(conn, data), daemon=True).start()

    def _read(self, conn: socket.socket, data: bytearray) -> None:
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                data.extend(chunk)

    def drop_connections(self) -> None:
        """statsd restarting: every open connection is closed from this side."""
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)  # close() alone does not end a blocked recv
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def received(self) -> bytes:
        with self._lock:
            return b"".join(bytes(c) for c in self.connections)

    def close(self) -> None:
        self.listener.close()
        self.drop_connections()


@pytest.fixture
def udp_receiver():
    receiver = UdpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def make_backend(caplog):
    """Statsd destinations in a Rig (fast TCP retries), connected, closed after the test."""
    caplog.set_level(logging.INFO)
    made = []

    def make(port, max_samples=100_000, backoff=None, **options):
        settings = dict(timeout=2.0)
        settings.update(options)
        rig = Rig(Statsd(port=port, **settings), max_samples=max_samples, backoff=backoff or Backoff(0.01, 0.05))
        made.append(rig)
        try:
            rig.destination.connect()
        except OSError:
            pass  # TCP with nothing listening: post() connects
        return rig

    yield make
    for rig in made:
        rig.stop(0.1)
        rig.destination.close()


def interval(backend, *records, time_=T):
    """Aggregate (type, name, source, tags, values) records; return (boundary, summaries)."""
    for record in records:
        backend.aggregator.add(*record)
    return time_, backend.aggregator.flush(time_, 10.0)


def etsy_rank(values, pct):
    """Etsy statsd's upper_N: the round(N/100 x n)-th smallest value."""
    ordered = sorted(values)
    return ordered[max(1, round(pct / 100 * len(ordered))) - 1]


# --- formatting and mapping: the backend's bytes on a real UDP socket --------------


def test_each_type_becomes_its_statsd_line(make_backend, udp_receiver):
    backend = make_backend(udp_receiver.port)
    t, summaries = interval(
        backend,
        ("c", "signup", None, (), (1, 2, 3.5)),
        ("c", "big", None, (), (10**16,)),
        ("g", "queue.depth", None, (), (5, 12, 7)),
        ("g", "zero", None, (), (3, -0.0)),
        ("t", "db.query", None, (), (0.001, 0.007, 0.0015, 2, 5e-8)),
    )
    backend.post(t, summaries)
    lines = udp_receiver.receive_lines(9)
    expect(lines) == [
        b"big:10000000000000000|c",
        b"signup:6.5|c",
        b"queue.depth:7|g",
        b"zero:0|g",
        b"db.query:1|ms",
        b"db.query:7|ms",
        b"db.query:1.5|ms",
        b"db.query:2000|ms",
        b"db.query:0.00005|ms",
    ]
    expect(len(udp_receiver.datagrams)) == 1  # 160 bytes: one datagram
    f = backend.figures()
    expect((f["lines_sent"], f["datagrams_sent"], f["send_errors"])) == (9, 1, 0)


def test_a_negative_gauge_is_set_with_zero_first_in_the_same_datagram(make_backend, udp_receiver):
    backend = make_backend(udp_receiver.port, mtu=64)
    t, summaries = interval(
        backend, *[("c", f"pad.{i}", None, (), (1,)) for i in range(4)], ("g", "temperature", None, (), (4, -5))
    )
    backend.post(t, summaries)
    udp_receiver.receive_lines(6)
    [datagram] = [d for d in udp_receiver.datagrams if b"temperature" in d]
    expect(datagram.split(b"\n")[-2:]) == [b"temperature:0|g", b"temperature:-5|g"]


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0.001, "1"),
        (0.007, "7"),
        (0.0015, "1.5"),
        (2, "2000"),
        (0, "0"),
        (123.456789, "123456.789"),
        (5e-8, "0.00005"),
        (1e14, "100000000000000000"),
        (1 / 3, "333.333333333333"),
    ],
)
def test_seconds_become_milliseconds_without_float_noise_or_exponents(seconds, text):
    expect(milliseconds(seconds)) == text


@pytest.mark.parametrize(
    "value, text",
    [
        (0, "0"),
        (-0.0, "0"),
        (3.0, "3"),
        (-5, "-5"),
        (2.5, "2.5"),
        (1e16, "10000000000000000"),
        (1e-5, "0.00001"),
        (True, "1"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_counter_and_gauge_numbers_are_plain_decimals(value, text):
    expect(number(value)) == text


@pytest.mark.parametrize("value", [1e40, 1.5e300, 1.7976931348623157e308, -2.5e120, 1e-7, -1e-45, 5e-324])
def test_extreme_numbers_are_written_without_an_exponent_and_read_back_exactly(value):
    text = number(value)
    expect(re.fullmatch(r"-?\d+(\.\d+)?", text) is not None) == True
    expect(float(text)) == value
    seconds = min(abs(value), 1e300) / 1000  # 15 digits of the largest double round past it
    ms = milliseconds(seconds)
    expect(re.fullmatch(r"\d+(\.\d+)?", ms) is not None) == True
    expect(float(ms)) == pytest.approx(seconds * 1000, rel=1e-14)


def test_a_negative_zero_timing_is_sent_as_zero(make_backend, udp_receiver):
    expect(milliseconds(-0.0)) == "0"
    backend = make_backend(udp_receiver.port)
    backend.post(*interval(backend, ("t", "t", None, (), (-0.0,)), ("g", "g", None, (), (-0.0,))))
    expect(udp_receiver.receive_lines(2)) == [b"g:0|g", b"t:0|ms"]


def test_sampled_timer_lines_carry_the_rate_that_scales_the_count_back(make_backend, udp_receiver):
    backend = make_backend(udp_receiver.port, max_samples=10)
    t, summaries = interval(
        backend, ("t", "busy", None, (), tuple(i / 1000 for i in range(1, 41))), ("t", "calm", None, (), (0.5, 0.25))
    )
    backend.post(t, summaries)
    lines = udp_receiver.receive_lines(12)
    busy = [line for line in lines if line.startswith(b"busy:")]
    expect(len(busy)) == 10
    for line in busy:  # past --max-exact, values spread over the sketch (within 1 % of real ones)
        match = re.fullmatch(rb"busy:([0-9.]+)\|ms\|@0\.25", line)
        expect(match is not None) == True
        expect(1 <= float(match.group(1)) <= 40) == True
    expect(sorted(line for line in lines if line.startswith(b"calm:"))) == [b"calm:250|ms", b"calm:500|ms"]
    # Etsy reads the rate with /^@([\d.]+)/: an exponent would be read as 1.
    expect(sample_rate(1e-5)) == "0.00001"
    for rate in (100_000 / 333_333, 3e-9):  # every digit kept, in plain decimals
        expect(float(sample_rate(rate))) == rate
        expect(re.fullmatch(r"0\.\d+", sample_rate(rate)) is not None) == True


def test_packing_respects_the_mtu_exactly_and_sends_every_line_once(make_backend, udp_receiver, caplog):
    expect(pack([b"a" * 49, b"b" * 50, b"c"], 100)) == [(b"a" * 49 + b"\n" + b"b" * 50, 2), (b"c", 1)]
    expect(pack([b"x:0|g\nx:-1|g"], 8)) == [(b"x:0|g\nx:-1|g", 2)]  # a unit is never split

    mtu = 120
    backend = make_backend(udp_receiver.port, mtu=mtu)
    records = [("c", "n" * (1 + i % 37) + str(i), None, (), (i,)) for i in range(200)]
    records.append(("g", "neg", None, (), (-3,)))
    records.append(("c", "x" * 150, None, (), (1,)))  # a line longer than the mtu
    t, summaries = interval(backend, *records)
    units = backend.destination.mapping.lines(summaries)
    expected = [line for unit in units for line in unit.split(b"\n")]
    backend.post(t, summaries)
    lines = udp_receiver.receive_lines(len(expected))
    expect(sorted(lines)) == sorted(expected)  # every line, once
    oversized = [d for d in udp_receiver.datagrams if len(d) > mtu]
    expect(oversized) == [b"x" * 150 + b":1|c"]  # alone in its datagram
    expect(b"neg:0|g\nneg:-3|g" in b"\n".join(udp_receiver.datagrams)) == True
    # Greedy: a datagram ends only where the next unit would not have fitted.
    payloads = [payload for payload, _ in pack(units, mtu)]
    expect(sorted(udp_receiver.datagrams)) == sorted(payloads)
    rest = list(units)
    for payload in payloads:
        taken = [rest.pop(0)]
        while rest and len(b"\n".join(taken + [rest[0]])) <= mtu:
            taken.append(rest.pop(0))
        expect(b"\n".join(taken)) == payload
    expect(rest) == []
    expect(backend.figures_["oversized_lines"]) == 1
    backend.post(*interval(backend, ("c", "x" * 150, None, (), (1,))))
    expect(caplog.text.count("does not fit --mtu")) == 1  # logged once


def test_names_are_sanitised_and_each_change_logged_once(make_backend, udp_receiver, caplog):
    backend = make_backend(udp_receiver.port, prefix="my app")
    records = [
        ("c", "db query/µs", "web 1", (), (1,)),
        ("c", "a:b|c@d#e\nf\tg", None, (), (2,)),
        ("c", "fine.name-1;k=v", None, (), (3,)),
        ("c", "µ", None, (), (4,)),
    ]
    for _ in range(2):
        backend.post(*interval(backend, *records))
    lines = udp_receiver.receive_lines(8)
    expect(lines[:4]) == [
        b"my_app.abcde_f_g:2|c",
        b"my_app.web_1.db_query-s:1|c",
        b"my_app.fine.name-1;k=v:3|c",
        b"my_app._:4|c",
    ]
    expect(lines[4:]) == lines[:4]
    changes = [r.getMessage() for r in caplog.records if "does not fit statsd's rules" in r.getMessage()]
    expect(len(changes)) == 5  # the prefix, 'db query/µs', 'web 1', 'a:b|c...' and 'µ', each once
    expect(backend.figures_["names_changed"]) == 5


@pytest.mark.parametrize(
    "prefix, source, name, line",
    [
        (".", None, "x", b"x:1|c"),
        ("app.", None, "x", b"app.x:1|c"),
        ("..app..", ".", "x", b"app.x:1|c"),
        ("", "web.", "x", b"web.x:1|c"),
        ("app", ".web", "x.", b"app.web.x:1|c"),
        ("", None, ".a..b.", b"a.b:1|c"),
        ("app", "..", "..", b"app._:1|c"),
    ],
)
def test_dots_in_prefix_source_and_name_never_make_empty_parts(make_backend, udp_receiver, prefix, source, name, line):
    backend = make_backend(udp_receiver.port, prefix=prefix)
    backend.post(*interval(backend, ("c", name, source, (), (1,))))
    expect(udp_receiver.receive_lines(1)) == [line]


def test_a_prefix_ending_in_a_dot_is_not_a_name_change(make_backend, udp_receiver, caplog):
    backend = make_backend(udp_receiver.port, prefix="app.")
    backend.post(*interval(backend, ("c", "x", None, (), (1,))))
    expect(udp_receiver.receive_lines(1)) == [b"app.x:1|c"]
    expect(backend.figures_["names_changed"]) == 0
    expect(caplog.text).does_not_contain("does not fit statsd's rules")


def test_source_as_prefix_or_tag_and_tags_dropped_or_dogstatsd(make_backend, udp_receiver, caplog):
    series = [
        ("c", "login", "api", ("env:prod", "region:eu|x,y#@"), (1,)),
        ("t", "db.query", "api", ("k:v w",), (0.5,)),
    ]
    default = make_backend(udp_receiver.port)
    default.post(*interval(default, *series))
    expect(udp_receiver.receive_lines(2)) == [b"api.login:1|c", b"api.db.query:500|ms"]
    expect(caplog.text).contains("tags are dropped")

    udp_receiver.datagrams.clear()
    tagged = make_backend(udp_receiver.port, source_as="tag", tags="dogstatsd")
    tagged.post(*interval(tagged, *series))
    expect(udp_receiver.receive_lines(2)) == [
        b"login:1|c|#source:api,env:prod,region:euxy",
        b"db.query:500|ms|#source:api,k:v_w",
    ]

    udp_receiver.datagrams.clear()
    both = make_backend(udp_receiver.port, tags="dogstatsd", max_samples=1)
    both.post(*interval(both, ("t", "t", "api", ("k:v",), (0.1, 0.2))))
    [line] = udp_receiver.receive_lines(1)
    match = re.fullmatch(rb"api\.t:([0-9.]+)\|ms\|@0\.5\|#k:v", line)  # a value of the sketch
    expect(match is not None) == True
    expect(100 <= float(match.group(1)) <= 200) == True


def test_udp_a_refused_datagram_is_counted_and_the_next_one_still_goes_out(make_backend):
    """The kernel reports an earlier refusal (ICMP) on the next send, which it then drops: resend."""
    port = free_ports(1, (socket.SOCK_DGRAM,))  # nothing listens: the next datagram is refused
    backend = make_backend(port)
    backend.post(*interval(backend, ("c", "into.the.void", None, (), (1,))))
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", port))  # statsd is back
        receiver.settimeout(5)
        backend.post(*interval(backend, ("c", "back", None, (), (2,))))
        expect(receiver.recv(100)) == b"back:2|c"
    finally:
        receiver.close()
    f = backend.figures()
    expect((f["send_errors"], f["lines_lost"], f["lines_sent"])) == (1, 0, 2)
    expect(f["statsd_error"]).contains("refused")


# --- against the real Etsy statsd, without the pipeline --------------------------


def admin_counter(statsd, name):
    match = re.search(rf"'?{re.escape(name)}'?: (\d+)", statsd.admin("counters"))
    return int(match.group(1)) if match else 0


@needs_node
def test_every_line_the_backend_makes_is_valid_for_etsy_statsd(tmp_path, make_backend):
    """Odd names, tags, sampled timers, negative gauges and extreme numbers: no bad line."""
    with EtsyStatsd(tmp_path, flush_interval_ms=60_000) as statsd:
        backend = make_backend(statsd.port, tags="dogstatsd", max_samples=50)
        statsd_values = tuple(i / 1000 for i in range(1, 201))
        t, summaries = interval(
            backend,
            ("c", "odd name/µ:|@#", "src 1", ("env:prod",), (1, 2)),
            ("c", "tiny", None, (), (1e-7,)),
            ("g", "g.neg", None, (), (-2.5,)),
            ("g", "huge", None, (), (1.5e300,)),  # 301 digits, no exponent
            ("t", "sampled", None, (), statsd_values),
            ("t", "exact", None, (), (0.25, 0.0005)),
        )
        units = backend.destination.mapping.lines(summaries)
        lines = sum(u.count(b"\n") + 1 for u in units)
        backend.post(t, summaries)
        expect(lines) == 1 + 1 + 2 + 1 + 50 + 2
        wait_until(lambda: admin_counter(statsd, "statsd.metrics_received") >= lines, message="every line at statsd")
    [flush] = statsd.flushes()
    expect(flush["statsd"]["bad_lines_seen"]) == 0
    expect(flush["counters"]) == {"src_1.odd_name-;env=prod": 3, "tiny": 1e-7}
    expect(flush["gauges"]) == {"g.neg": -2.5, "huge": 1.5e300}
    expect(flush["timer_counters"]["sampled"]) == pytest.approx(200)  # 50 lines at @0.25
    expect(len(flush["timers"]["sampled"])) == 50
    # values spread over the sketch: each within 1 % of a value sent
    expect(all(1 <= v <= 200 * 1.01 for v in flush["timers"]["sampled"])) == True
    expect(flush["timers"]["exact"]) == [0.5, 250]


# --- end to end: client -> zibrato-broker -> zibrato-statsd -> Etsy statsd -----------


class StatsdPipeline(WorkerPipeline):
    """A broker, a zibrato-statsd worker (fast TCP retries) and a real Etsy statsd."""

    script, ready_log = "zibrato-statsd", "statsd worker"

    def __init__(self, tmp_path, protocol, *worker_args, flush=DAY, statsd_flush_ms=60_000):
        super().__init__(
            tmp_path,
            "--levels",
            "info",
            "--protocol",
            protocol,
            "--retry-delay",
            "0.05",
            "--max-retry-delay",
            "0.2",
            *worker_args,
            flush=flush,
        )
        self.statsd = EtsyStatsd(tmp_path, flush_interval_ms=statsd_flush_ms, protocol=protocol)

    def worker_command(self):
        return ["--statsd-port", self.statsd.port, *self.worker_args]

    def start(self):
        self.statsd.start()
        return super().start()

    def totals(self):
        return self.statsd.totals()

    def close(self):
        super().close()
        self.statsd.stop()


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: StatsdPipeline(tmp_path, *args, **kwargs))


def send_to_statsd(statsd, line: bytes):
    if statsd.protocol == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(line, (statsd.host, statsd.port))
    else:
        with socket.create_connection((statsd.host, statsd.port), timeout=5) as sock:
            sock.sendall(line + b"\n")


@needs_node
@pytest.mark.parametrize(
    "protocol, options, names",
    [
        ("udp", [], {"login": "login", "timer": "api.db.query"}),
        (
            "tcp",
            ["--source-as", "tag", "--tags", "dogstatsd"],
            {"login": "login;env=prod", "timer": "db.query;source=api"},
        ),
    ],
)
def test_statsd_computes_exact_statistics_from_what_the_worker_sends_at_sigterm(pipeline, protocol, options, names):
    p = pipeline(protocol, *options)
    # The gauge already exists in statsd with a positive value: a bare "-12" would be a delta.
    send_to_statsd(p.statsd, b"temperature:40|g")
    wait_until(lambda: "temperature: 40" in p.statsd.admin("gauges"), message="the seeded gauge")
    timer_ms = [float(i) for i in range(1, 201)] + [2.5, 0.125]
    for ms in timer_ms:
        p.client.timing("info", "db.query", ms / 1000, source="api")
    for i in range(1, 51):
        p.client.count("info", "signup", i)
    p.client.count("info", "login", 3, tags={"env": "prod"})
    for g in (5, -3, 12, 7):
        p.client.gauge("info", "queue.depth", g)
    for g in (4, -12):
        p.client.gauge("info", "temperature", g)
    p.wait_measurements(len(timer_ms) + 50 + 1 + 4 + 2)
    expect(p.statsd.flushes()) == []  # nothing flushed yet at either end

    p.stop_worker()  # the final flush is the only one: it must reach statsd
    # warmup, signup, login, queue.depth, temperature (0 then -12), the timer values; the seed
    lines = 1 + 1 + 1 + 1 + 2 + len(timer_ms)
    wait_until(
        lambda: admin_counter(p.statsd, "statsd.metrics_received") >= lines + 1, message=f"{lines} lines at statsd"
    )
    expect(p.worker.stderr).contains(f"{lines} lines sent")
    p.statsd.stop()  # statsd flushes once more on SIGTERM: one flush holds everything

    [flush] = [f for f in p.statsd.flushes() if f["counters"] or f["timers"]]
    expect(flush["statsd"]["bad_lines_seen"]) == 0
    expect(flush["counters"]) == {"warmup": flush["counters"]["warmup"], "signup": 1275, names["login"]: 3}
    expect(flush["gauges"]) == {"queue.depth": 7, "temperature": -12}
    stats = flush["timer_data"][names["timer"]]
    expect((stats["count"], stats["lower"], stats["upper"])) == (len(timer_ms), 0.125, 200)
    expect(stats["mean"]) == pytest.approx(math.fsum(timer_ms) / len(timer_ms), rel=1e-12)
    expect(stats["sum"]) == pytest.approx(math.fsum(timer_ms), rel=1e-12)
    expect(stats["upper_90"]) == etsy_rank(timer_ms, 90)
    expect(stats["upper_95"]) == etsy_rank(timer_ms, 95)


@needs_node
@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_statsd_gone_for_a_while_does_not_stop_the_worker(pipeline, protocol):
    p = pipeline(protocol, flush=0.3, statsd_flush_ms=100)
    p.client.count("info", "before", 1)
    p.client.flush()
    wait_until(lambda: p.totals().counters.get("before") == 1, message="'before' at statsd")

    p.statsd.stop()
    during = 0
    deadline = time.monotonic() + 10
    while p.status()["send_errors"] == 0 or during < 20:  # several flushes while statsd is down
        assert time.monotonic() < deadline, f"no send error while statsd was down: {p.status()}"
        flushes = p.status()["flushes"]
        p.client.count("info", "during", 10)
        p.client.flush()
        during += 10
        wait_until(lambda: p.status()["flushes"] > flushes, message="the next flush")
    status = p.status()
    expect(p.worker.process.poll()) == None
    expect(status["healthy"]) == False
    expect(" ".join(status["problems"])).contains("statsd")
    shown = run_script("zibrato", "status", "--port", p.status_port)
    expect((shown.returncode, "statsd UNHEALTHY" in shown.stdout)) == (1, True)

    p.statsd.start()  # the same ports
    p.client.count("info", "after", 100)
    p.client.flush()
    wait_until(lambda: p.totals().counters.get("after") == 100, message="'after' at statsd")
    if protocol == "tcp":  # kept and retried: nothing lost
        wait_until(lambda: p.totals().counters.get("during") == during, message="the outage's counts")
        wait_until(lambda: p.status()["healthy"], message="healthy again")
        expect(p.worker.stderr).contains("recovered after")
    expect(p.worker.process.poll()) == None
    p.stop_worker()
    expect(p.totals().counters.get("during", 0) <= during) == True  # never twice


# --- TCP delivery details, against a listener of the test's own -----------------------


def test_tcp_lines_are_newline_terminated_and_a_closed_connection_is_reopened(make_backend):
    receiver = TcpReceiver()
    try:
        backend = make_backend(receiver.port, protocol="tcp")
        backend.post(*interval(backend, ("c", "a", None, (), (1,)), ("g", "g", None, (), (-1,))))
        wait_until(lambda: receiver.received() == b"a:1|c\ng:0|g\ng:-1|g\n", message="first interval")
        receiver.drop_connections()  # statsd restarted: a write on the old connection would be lost
        backend.post(*interval(backend, ("c", "b", None, (), (2,))))
        wait_until(lambda: receiver.received().endswith(b"b:2|c\n"), message="second interval")
        expect(len(receiver.connections)) == 2
        expect(backend.figures_["reconnects"]) == 1
        expect(backend.figures_["lines_lost"]) == 0
    finally:
        receiver.close()


def test_tcp_keeps_the_interval_until_statsd_listens(make_backend, unused_port, caplog):
    backend = make_backend(unused_port, protocol="tcp")
    backend.deliver(*interval(backend, ("c", "kept", None, (), (5,))))
    wait_until(lambda: backend.figures_["send_errors"] >= 2, message="failed attempts")
    expect(backend.figures()["healthy"]) == False
    expect(backend.figures()["problems"][0]).contains("statsd delivery failing for")
    listener = socket.create_server(("127.0.0.1", unused_port))
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            expect(conn.recv(100)) == b"kept:5|c\n"
        wait_until(lambda: backend.queue.counts["delivered_intervals"] == 1, message="delivered")
        expect(backend.figures()["healthy"]) == True
        expect(caplog.text).contains("connection refused")
    finally:
        listener.close()


def test_stopping_gives_up_by_the_deadline_and_counts_the_loss(make_backend, unused_port, caplog):
    backend = make_backend(unused_port, protocol="tcp", backoff=Backoff(30, 60))
    backend.deliver(*interval(backend, ("c", "a", None, (), (1,)), ("c", "b", None, (), (2,))))
    wait_until(lambda: backend.figures_["send_errors"] == 1, message="the first failure")
    expect(backend.stop()) < 1.5
    expect(backend.figures_["send_errors"]) <= 2  # at most one final attempt in the window
    expect(backend.figures_["lines_lost"]) == 2
    expect(backend.queue.counts["cut_off_series"]) == 2
    expect((backend.queue.counts["cut_off_parts"], backend.queue.counts["cut_off_points"])) == (1, 2)  # one chunk
    expect(caplog.text).contains("stop deadline reached")
