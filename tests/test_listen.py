"""zibrato-listen end to end: the real statsd clients -> listener -> real broker -> real console worker.

The clients are the real ones (pystatsd's StatsClient and TCPStatsClient,
datadogpy's DogStatsd with buffering on, Etsy statsd's repeater backend);
totals are checked exactly at a real console worker writing JSON lines. The
listener, the broker and the worker run in threads of the test process
(``support.inprocess``) where a test is about what they do; the command line,
exit codes and signals are tested on the real ``zibrato-listen`` script.
Records today's worker cannot read yet (histograms, sets, weights:
Protocol 1.1) are checked at a real PULL socket standing in for the broker,
by decoding its frames with msgpack.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import signal
import socket
import subprocess

import msgpack
import pytest
import zmq
from click.testing import CliRunner

from support import inprocess
from support.daemons import BIN, Daemon, free_ports, run_script, wait_until
from support.etsy_statsd import CAPTURE_BACKEND, INSTALL_COMMAND, EtsyStatsd
from support.warmup import pipelines
from zibrato.cli import group
from zibrato.listen.servers import ListenConfig, udp_drops
from zibrato.runtime import ask_status

TOKEN = "s3cret-drain-token"


def start_listener(broker_port: int, **options) -> tuple[inprocess.RunningListener, int]:
    """A listener in a thread on an ephemeral statsd port; returns it and that port.

    ``options`` are :class:`~zibrato.listen.servers.ListenConfig` fields (the flags' names).
    """
    options = {"statsd": "127.0.0.1:0", "self_metrics": False, **options}
    listener = inprocess.start_listener(ListenConfig(broker=f"127.0.0.1:{broker_port}", **options))
    return listener, listener.port("statsd")


def start_listener_script(tmp_path, broker_port: int, *args: object) -> tuple[Daemon, int]:
    """The real zibrato-listen script on an ephemeral statsd port; returns it and that port."""
    listener = Daemon(
        tmp_path,
        "zibrato-listen",
        "--broker",
        f"127.0.0.1:{broker_port}",
        "--statsd",
        "127.0.0.1:0",
        "--no-self-metrics",
        *args,
    )
    listener.start().wait_for_log("listen ready")
    return listener, listening_port(listener, "statsd")


def listening_port(listener: Daemon, what: str) -> int:
    match = re.search(rf"{what} [\d.]+:(\d+)", listener.stderr)
    assert match, listener.stderr
    return int(match.group(1))


class ListenPipeline(inprocess.ConsolePipeline):
    """Broker + console worker (JSON) + a listener publishing to the broker, in threads."""

    def __init__(self, **listen_options):
        super().__init__()
        self.listen_options = listen_options
        self.listener: inprocess.RunningListener | None = None

    def start(self):
        super().start()
        self.listen_status_port = free_ports(1)
        self.listener, self.statsd_port = start_listener(
            self.base, status_port=self.listen_status_port, **self.listen_options
        )
        return self

    def listen_status(self) -> dict:
        return ask_status("127.0.0.1", self.listen_status_port, timeout=2)

    def wait_lines(self, lines: int) -> None:
        wait_until(lambda: self.listen_status()["lines"] >= lines, message=f"{lines} lines at the listener")

    def wait_values(self, values: int) -> None:
        """Wait until ``values`` values from the listener have been aggregated by the worker."""
        wait_until(
            lambda: self.status()["measurements"] >= self.baseline + values,
            timeout=10,
            message=f"{values} values at the worker",
        )

    def summaries(self) -> dict:
        """Stop the worker (its final flush) and return its summaries by name."""
        self.stop_worker()
        return {s["name"]: s for s in self.json_lines() if s["name"] != "warmup"}

    def close(self):
        if self.listener is not None:
            self.listener.stop()
        super().close()


@pytest.fixture
def listen_pipeline():
    yield from pipelines(ListenPipeline)


class RawPull:
    """A PULL socket standing in for the broker; frames decoded with msgpack, records kept raw."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PULL)
        self.socket.linger = 0
        self.port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.messages: list[tuple[str, float, list]] = []

    def receive_until(self, predicate, timeout: float = 5.0) -> list:
        def ready():
            while self.socket.poll(10):
                level, _, payload = self.socket.recv().partition(b"\x00")
                version, time_, records = msgpack.unpackb(payload, raw=False)
                assert version == 1
                self.messages.append((level.decode(), time_, records))
            return predicate(self.records())

        wait_until(ready, timeout=timeout, message="records at the PULL socket")
        return self.records()

    def records(self) -> list:
        return [(level, *record) for level, _, records in self.messages for record in records]

    def close(self) -> None:
        self.context.destroy(linger=0)


@pytest.fixture
def raw_pull():
    pull = RawPull()
    yield pull
    pull.close()


def send_udp(port: int, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))


# --- the real clients --------------------------------------------------------------


def test_pystatsd_udp_and_tcp_clients_arrive_with_exact_totals(listen_pipeline):
    import statsd

    p = listen_pipeline()
    udp = statsd.StatsClient("127.0.0.1", p.statsd_port, prefix="udp")
    tcp = statsd.TCPStatsClient("127.0.0.1", p.statsd_port, prefix="tcp")
    lines = 0
    for client in (udp, tcp):
        for i in range(1, 101):
            client.incr("hits", i)
            client.timing("db.query", i)  # milliseconds
        client.decr("hits", 50)
        client.gauge("depth", 10)
        client.gauge("depth", 5, delta=True)
        client.gauge("depth", -3)  # pystatsd sends 0 then -3
        with client.pipeline() as pipe:  # one datagram (UDP) of several lines
            for _ in range(20):
                pipe.incr("piped", 0.5)
        lines += 100 + 100 + 1 + 1 + 1 + 2 + 20
    tcp.close()
    p.wait_lines(lines)
    p.wait_values(lines)
    s = p.summaries()
    for prefix in ("udp", "tcp"):
        assert s[f"{prefix}.hits"]["value"] == sum(range(1, 101)) - 50
        assert s[f"{prefix}.piped"]["value"] == 10.0
        assert s[f"{prefix}.depth"]["value"] == -3.0 and s[f"{prefix}.depth"]["max"] == 15.0
        timer = s[f"{prefix}.db.query"]
        assert timer["type"] == "timer" and timer["count"] == 100
        assert timer["sum"] == pytest.approx(sum(range(1, 101)) / 1000)
        assert timer["max"] == pytest.approx(0.1)
    assert p.listen_status()["rejected"] == {}


def test_datadogpy_buffered_client_arrives_with_tags_sources_and_levels(listen_pipeline):
    from datadog.dogstatsd import DogStatsd

    p = listen_pipeline(gauge_sign="absolute")
    client = DogStatsd(
        host="127.0.0.1", port=p.statsd_port, disable_buffering=False, disable_telemetry=True, flush_interval=0.05
    )
    for i in range(500):
        client.increment("orders", 2, tags=["region:eu", "host:web-1"])
        client.timing("checkout", 40, tags=["region:eu"])
    client.gauge("temperature", 20, tags=["level:sensors"])
    client.gauge("temperature", -5, tags=["level:sensors"])  # DogStatsD's meaning: set to -5
    client.flush()
    p.wait_lines(1002)
    p.wait_values(1002)
    s = p.summaries()
    assert s["orders"]["value"] == 1000 and s["orders"]["source"] == "web-1"
    assert s["orders"]["tags"] == ["region:eu"]
    assert s["checkout"]["count"] == 500 and s["checkout"]["mean"] == pytest.approx(0.04)
    assert s["temperature"]["value"] == -5 and s["temperature"]["min"] == -5
    assert p.listen_status()["datagrams"] < 1002 / 10, "DogStatsd's buffering packs lines per datagram"
    client.close_socket()


@pytest.mark.skipif(shutil.which("node") is None, reason=f"needs Node.js ({INSTALL_COMMAND})")
def test_etsy_statsd_repeater_feeds_the_listener(listen_pipeline, tmp_path):
    p = listen_pipeline()
    repeater = {
        "backends": ["./backends/repeater", str(CAPTURE_BACKEND)],
        "repeater": [{"host": "127.0.0.1", "port": p.statsd_port}],
        "repeaterProtocol": "udp4",
    }
    with EtsyStatsd(tmp_path, flush_interval_ms=100000, extra_config=repeater) as etsy:
        datagrams = [
            b"jobs:1|c\njobs:1|c|@0.1\nrender:30|ms|@0.5",
            b"queue:+4|g",
            b"queue:-1|g",
            b"bad line\njobs:2|c",
        ] * 50
        send_udp(etsy.port, *datagrams)
        p.wait_lines(50 * 6)
    p.wait_values(50 * 6)
    s = p.summaries()
    assert s["jobs"]["value"] == pytest.approx(50 * (1 + 10 + 2))
    assert s["queue"]["value"] == 150  # +4 -1, fifty times, from nothing
    assert s["render"]["count"] == 100 and s["render"]["max"] == pytest.approx(0.03)  # weight 2
    assert p.listen_status()["rejected"] == {"malformed line": 50}


def test_sampled_timers_histograms_and_sets_are_protocol_1_1_records(tmp_path, raw_pull):
    listener, port = start_listener(raw_pull.port, level="apps")
    try:
        from datadog.dogstatsd import DogStatsd

        client = DogStatsd(host="127.0.0.1", port=port, disable_buffering=False, disable_telemetry=True)
        client.histogram("payload", 512, tags=["route:/a"])
        client.distribution("latency", 7.5)
        client.set("visitors", "u-17")
        client.set("visitors", "u-42")
        client.flush()
        send_udp(port, b"render:30|ms|@0.25\nhits:1|c\nsize:5:6|h|#level:web", b"size:9|h|@0.5|#level:web")
        records = raw_pull.receive_until(lambda r: sum(len(x[3]) for x in r) >= 9)
    finally:
        listener.stop()
    by = {}
    for level, type_, name, values, source, tags, *rest in records:
        by.setdefault((level, type_, name, tuple(rest)), []).extend(values)
    assert by[("apps", "h", "payload", ())] == [512]
    assert by[("apps", "h", "latency", ())] == [7.5]
    assert sorted(by[("apps", "s", "visitors", ())]) == ["u-17", "u-42"]
    assert by[("apps", "t", "render", (4.0,))] == [0.03]
    assert by[("apps", "c", "hits", ())] == [1.0]
    assert by[("web", "h", "size", ())] == [5, 6] and by[("web", "h", "size", (2.0,))] == [9]
    for _, _, records_ in raw_pull.messages:  # 1.1 records never share a message with 1.0 ones
        kinds = {len(r) > 5 or r[0] in ("h", "s") for r in records_}
        assert len(kinds) == 1


def test_histograms_sets_and_sample_weights_reach_the_console_worker(listen_pipeline):
    """With the Protocol 1.1 decoder, the worker summarises what DogStatsD's h, d and s send."""
    from datadog.dogstatsd import DogStatsd

    p = listen_pipeline()
    client = DogStatsd(host="127.0.0.1", port=p.statsd_port, disable_buffering=False, disable_telemetry=True)
    for i in range(1, 101):
        client.histogram("payload", i, tags=["route:/a"])
        client.distribution("latency", i / 10)
        client.set("visitors", f"u-{i % 7}")
    client.flush()
    send_udp(p.statsd_port, *[b"render:30|ms|@0.25\nhits:1|c|@0.1"] * 10)
    p.wait_lines(320)
    p.wait_values(320)
    s = p.summaries()
    assert s["payload"]["type"] == "histogram" and s["payload"]["count"] == 100
    assert s["payload"]["sum"] == 5050 and s["payload"]["tags"] == ["route:/a"]
    assert s["latency"]["max"] == pytest.approx(10.0)
    assert s["visitors"]["type"] == "set" and s["visitors"]["value"] == 7
    assert s["render"]["count"] == 40 and s["render"]["sum"] == pytest.approx(1.2)  # 10 x weight 4
    assert s["hits"]["value"] == pytest.approx(100)
    client.close_socket()


# --- rejects, limits, never blocking ------------------------------------------------


def test_every_reject_is_counted_by_reason_logged_escaped_and_the_rest_kept(listen_pipeline):
    p = listen_pipeline()
    bad = [
        b"x:nan|c",
        b":1|c",
        b"x:1|zz",
        b"x:1|c|@2",
        b"x:abc|c",
        b"x:-1|ms",
        b"\xff\xfe:1|c",
        b"y" * 9000 + b":1|c",
        b"x:1|c|T1000",
        b"x:1|c|#level:bad level",
        b"evil\x1b[31m:1|c",
    ]
    send_udp(p.statsd_port, *[b"good:1|c\n" + line + b"\ngood:1|c" for line in bad])
    p.wait_lines(2 * len(bad))
    status = p.listen_status()
    assert status["rejected"] == {
        "non-finite value": 1,
        "empty name": 1,
        "unknown type": 1,
        "bad rate": 1,
        "bad value": 1,
        "negative timer": 1,
        "invalid utf-8": 1,
        "line too long": 1,
        "timestamp out of window": 1,
        "bad level": 1,
        "bad name": 1,
    }
    p.wait_values(2 * len(bad))
    assert p.summaries()["good"]["value"] == 2 * len(bad)
    log = p.listener.stderr
    assert "rejected statsd input (non-finite value): 'x:nan|c'" in log  # the first, escaped
    assert "\x1b" not in log and "\xff" not in log
    assert p.listener.running


def test_tcp_lines_split_across_reads_and_an_overlong_line(listen_pipeline):
    p = listen_pipeline(max_line_length=100)
    with socket.create_connection(("127.0.0.1", p.statsd_port)) as conn:
        conn.sendall(b"split:1|c\nspl")
        conn.sendall(b"it:2|c\n" + b"z" * 300)  # over the limit before its newline arrives
        conn.sendall(b"z" * 300 + b"\nsplit:4|c\r\n")
    p.wait_lines(3)
    p.wait_values(3)
    assert p.listen_status()["rejected"] == {"line too long": 1}
    assert p.summaries()["split"]["value"] == 7


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_loopback(tmp_path, raw_pull):
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    listener = Daemon(
        tmp_path, "zibrato-listen", "--broker", f"127.0.0.1:{raw_pull.port}", "--statsd", "[::1]:0", "--no-self-metrics"
    )
    listener.start().wait_for_log("listen ready")
    try:
        port = int(re.search(r"statsd \[::1\]:(\d+)", listener.stderr).group(1))
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"v6:1|c", ("::1", port))
        with socket.create_connection(("::1", port)) as conn:
            conn.sendall(b"v6:2|c\n")
        records = raw_pull.receive_until(lambda r: sum(sum(x[3]) for x in r) == 3)
        assert {x[2] for x in records} == {"v6"}
    finally:
        listener.stop()


def test_unix_datagram_socket(tmp_path, raw_pull):
    path = tmp_path / "statsd.sock"
    listener, _ = start_listener(raw_pull.port, statsd_unix=str(path))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"unix.hits:3|c", str(path))
        records = raw_pull.receive_until(lambda r: r)
        assert records == [("statsd", "c", "unix.hits", [3.0], None, [])]
    finally:
        listener.stop()
    assert not path.exists(), "the socket file is removed at exit"


def test_a_broker_that_never_answers_never_blocks_the_listener_drops_are_counted(tmp_path):
    """A 'broker' that accepts TCP and never speaks ZeroMQ: every message past --hwm is dropped."""
    status_port = free_ports(1)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        # a process of its own: in a thread, its 10 ms flushes can split a burst (the GIL is shared)
        listener, port = start_listener_script(
            tmp_path, silent.getsockname()[1], "--hwm", "1", "--flush-interval", "0.01", "--status-port", status_port
        )
        try:

            def published(values):  # sent or dropped: each burst is a flush of its own
                status = ask_status("127.0.0.1", status_port)
                return status["values_sent"] + status["values_dropped"] >= values

            for burst in range(1, 21):
                send_udp(port, *[b"flood:1|c\nflood:1|ms"] * 50)
                wait_until(lambda: published(burst * 100))
            status = ask_status("127.0.0.1", status_port)
            assert status["lines"] == 2000 and status["messages_sent"] == 1
            assert status["values_sent"] == 100 and status["values_dropped"] == 1900
            assert status["healthy"] is False and "values_dropped" in status["problems"][0]
        finally:
            listener.stop()


def test_kernel_drops_are_read_from_proc_net_udp():
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        receiver.bind(("127.0.0.1", 0))
        assert udp_drops(receiver) == 0
        for _ in range(200):
            sender.sendto(b"x" * 1000, receiver.getsockname())
        wait_until(lambda: (udp_drops(receiver) or 0) > 0, message="kernel drops")


def test_status_reports_the_receive_buffer_and_kernel_drops(listen_pipeline):
    p = listen_pipeline(receive_buffer=4 * 1024 * 1024)
    status = p.listen_status()
    assert status["role"] == "listen" and status["healthy"] is True
    assert status["kernel_drops"] == 0 and status["receive_buffer"] >= 4 * 1024 * 1024
    shown = CliRunner().invoke(group, ["status", "--port", str(p.listen_status_port), "--json"], prog_name="zibrato")
    assert shown.exit_code == 0 and json.loads(shown.output)["role"] == "listen"


def test_self_metrics_carry_lines_and_rejects_by_reason(tmp_path, raw_pull):
    listener = Daemon(
        tmp_path,
        "zibrato-listen",
        "--broker",
        f"127.0.0.1:{raw_pull.port}",
        "--statsd",
        "127.0.0.1:0",
        "--flush-interval",
        "10",
    )
    listener.start().wait_for_log("listen ready")
    send_udp(listening_port(listener, "statsd"), b"ok:1|c\nx:nan|c\nx:1|q\ny:2|q")
    listener.signal(signal.SIGTERM)  # the last figures are published at stop
    assert listener.wait(10) == 0
    raw_pull.receive_until(lambda r: any(x[2] == "ok" for x in r))

    def last(name, *tags):
        values = [x[3][-1] for x in raw_pull.records() if x[0] == "zibrato" and x[2] == name and tuple(x[5]) == tags]
        return values[-1] if values else None

    assert last("zibrato.listen.lines") == 1
    assert last("zibrato.listen.rejected", "input:statsd", "reason:non-finite value") == 1
    assert last("zibrato.listen.rejected", "input:statsd", "reason:unknown type") == 2
    assert last("zibrato.listen.kernel_drops") == 0


# --- l2met ---------------------------------------------------------------------------


def frame(message: str, app: str = "app", procid: str = "web.1") -> bytes:
    body = f"<40>1 2026-12-02T06:45:29+00:00 host {app} {procid} - {message}".encode()
    return b"%d %s" % (len(body), body)


def post(port: int, body: bytes, auth: str | None, path: str = "/logs") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Content-Type": "application/logplex-1", "Logplex-Msg-Count": "1"}
    if auth:
        headers["Authorization"] = auth
    conn.request("POST", path, body=body, headers=headers)
    code = conn.getresponse().status
    conn.close()
    return code


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_l2met_drain_with_token_produces_the_documented_series(listen_pipeline, tmp_path):
    p = listen_pipeline(l2met="127.0.0.1:0", l2met_token=TOKEN)  # from a file: test_hostile_connections
    port = p.listener.port("l2met")
    body = (
        frame("at=info measure#db.latency=4ms count#signup sample#db.size=-3GB source=api")
        + frame("connect=1ms service=18ms bytes=13", app="heroku", procid="router")
        + frame("measure#db.latency=6ms count#signup=2 source=api")
    )
    assert post(port, body, None) == 401
    assert post(port, body, basic("user", "wrong")) == 401
    assert post(port, body, "Bearer wrong") == 401
    assert post(port, body, basic("user", TOKEN), "/nope") == 404
    assert post(port, body, basic("user", TOKEN), "/logs?prefix=shop&source-prefix=eu") == 200
    assert post(port, frame("count#signup=4"), f"Bearer {TOKEN}") == 200
    assert post(port, frame("count#signup=8"), basic(TOKEN)) == 200  # https://TOKEN@host/logs
    wait_until(lambda: p.listen_status()["l2met_measurements"] == 10)
    p.wait_values(9)  # router.bytes is a histogram: a 1.1 record
    s = p.summaries()
    assert s["shop.db.latency"]["count"] == 2 and s["shop.db.latency"]["sum"] == pytest.approx(0.010)
    assert s["shop.db.latency"]["source"] == "eu.api"
    assert s["shop.signup"]["value"] == 3 and s["signup"]["value"] == 12
    assert s["shop.db.size"]["value"] == -3
    assert s["shop.router.service"]["max"] == pytest.approx(0.018)
    assert s["shop.router.connect"]["source"] == "eu"
    assert p.listen_status()["drain_refused"] == 3
    assert TOKEN not in p.listener.stderr


def test_drain_answers_for_a_body_too_big_or_without_length(tmp_path, raw_pull):
    listener, _ = start_listener(raw_pull.port, l2met="127.0.0.1:0", l2met_token=TOKEN, max_body=2048)
    port = listener.port("l2met")
    try:
        assert post(port, frame("count#big=1 " + "x" * 3000), f"Bearer {TOKEN}") == 413
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.putrequest("POST", "/logs")
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.endheaders()
        assert conn.getresponse().status == 411
        conn.close()
        assert post(port, frame("count#small=1"), f"Bearer {TOKEN}") == 200
        records = raw_pull.receive_until(lambda r: r)
        assert [r[2] for r in records] == ["small"]
    finally:
        listener.stop()


def test_a_drain_token_file_saved_with_a_bom_is_read_without_it(tmp_path, raw_pull):
    """The drain's token goes through the one secret-file helper: a BOM and a CRLF are not part of it."""
    token_file = tmp_path / "token"
    token_file.write_bytes(b"\xef\xbb\xbf" + TOKEN.encode() + b"\r\n")
    token_file.chmod(0o600)
    listener, _ = start_listener_script(
        tmp_path, raw_pull.port, "--l2met", "127.0.0.1:0", "--l2met-token-file", token_file
    )
    port = listening_port(listener, "l2met")
    try:
        assert post(port, frame("count#bom=1"), f"Bearer {TOKEN}") == 200
        assert post(port, frame("count#bom=1"), f"Bearer \ufeff{TOKEN}".encode().decode("latin-1")) == 401
        records = raw_pull.receive_until(lambda r: r)
        assert [r[2] for r in records] == ["bom"]
    finally:
        listener.stop()


def test_stdin_with_tee_passes_lines_through_and_publishes_them(tmp_path, raw_pull):
    text = (
        "starting\nmeasure#job.duration=1.5s count#job.done source=worker-3\n"
        "bad measure#x=oops tuple count#job.done\n\u00e9t\u00e9 ok\n"
    )
    result = subprocess.run(
        [
            str(BIN / "zibrato-listen"),
            "--stdin",
            "--tee",
            "--statsd",
            "off",
            "--no-self-metrics",
            "--broker",
            f"127.0.0.1:{raw_pull.port}",
        ],
        input=text.encode(),
        capture_output=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == text.encode()
    records = raw_pull.receive_until(lambda r: sum(len(x[3]) for x in r) >= 3)
    assert sorted((name, values, source or "") for _, _, name, values, source, _ in records) == [
        ("job.done", [1.0], ""),
        ("job.done", [1.0], "worker-3"),
        ("job.duration", [1.5], "worker-3"),
    ]
    assert b"rejected l2met input (bad value): 'measure#x=oops'" in result.stderr


# --- the command line ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args,message",
    [
        (["--statsd", "nowhere"], "HOST:PORT"),
        (["--statsd", "127.0.0.1:99999"], "port 99999 out of range"),
        (["--tee"], "--tee needs --stdin"),
        (["--l2met", "127.0.0.1:0"], "--l2met needs --l2met-token-file"),
        (["--level", "no spaces"], "1-64 characters"),
        (["--flush-interval", "0"], "0.001"),
        (["--gauge-sign", "sideways"], "delta"),
        (["--statsd", "off"], "nothing to listen to"),
    ],
)
def test_bad_flags_exit_with_a_usage_message(args, message):
    result = CliRunner().invoke(group, ["listen", *args], prog_name="zibrato")
    assert result.exit_code == 2 and message in result.output, result.output


def test_the_script_exits_2_with_the_usage_message_on_a_bad_flag():
    result = run_script("zibrato-listen", "--statsd", "nowhere", timeout=10)
    assert result.returncode == 2 and "HOST:PORT" in result.stderr, result.stderr


def test_a_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        result = run_script(
            "zibrato-listen", "--statsd", f"127.0.0.1:{taken.getsockname()[1]}", "--no-self-metrics", timeout=10
        )
    assert result.returncode == 1 and "cannot bind --statsd (UDP)" in result.stderr


def test_a_timestamped_line_travels_in_a_message_of_its_own_time(tmp_path, raw_pull):
    import time

    stamp = int(time.time()) - 120
    listener, port = start_listener(raw_pull.port)
    try:
        send_udp(port, b"now:1|c\nthen:2|c|T%d" % stamp)
        raw_pull.receive_until(lambda r: len(r) == 2)
    finally:
        listener.stop()
    times = {records[0][1]: time_ for _, time_, records in raw_pull.messages}
    assert times["then"] == stamp and abs(times["now"] - time.time()) < 60


def test_stops_cleanly_on_term_publishing_what_it_holds(tmp_path, raw_pull):
    """Datagrams still in the kernel's buffer at the signal are read and published too."""
    listener, port = start_listener_script(tmp_path, raw_pull.port, "--flush-interval", "10")
    send_udp(port, b"last:1|c")
    listener.signal(signal.SIGTERM)
    assert listener.wait(10) == 0
    records = raw_pull.receive_until(lambda r: r)
    assert records == [("statsd", "c", "last", [1.0], None, [])]
