"""Connection floods against the real daemons: half-open HTTP, dripping headers, idle TCP, early hang-ups.

Each daemon runs under a 1,024-descriptor limit (supervisord's and systemd's
default, set with prlimit), as the attack measured it; every loop is bounded
and every connection is on loopback.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import time

import pytest
from expecter import expect
from test_listen import TOKEN, basic, frame, listening_port, post

from support.daemons import Daemon, free_ports, wait_until
from support.pipeline import WorkerPipeline, pipelines
from zibrato.runtime import ask_status

FLOOD = 1000


def limited(daemon: Daemon, descriptors: int = 1024) -> Daemon:
    """Run ``daemon`` under a descriptor limit, as supervisord and systemd do by default."""
    daemon.argv = ["prlimit", f"--nofile={descriptors}:{descriptors}", "--", *daemon.argv]
    return daemon


@contextlib.contextmanager
def open_connections(port: int, count: int, first_bytes: bytes = b""):
    """``count`` TCP connections to ``port`` that send ``first_bytes`` (maybe nothing) and then nothing."""
    made: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", port))
                if first_bytes:
                    sock.sendall(first_bytes)
            except OSError:
                sock.close()
                continue
            made.append(sock)
        yield made
    finally:
        for sock in made:
            sock.close()


def closed_by_peer(sock: socket.socket, timeout: float = 15.0) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` (reads until EOF or a reset; bounded)."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def start_listener(tmp_path, *args: object) -> tuple[Daemon, int]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    status_port = free_ports(1)
    listener = Daemon(
        tmp_path,
        "zibrato-listen",
        "--broker",
        f"127.0.0.1:{free_ports(1)}",  # nobody there: the listener never blocks on it
        "--statsd",
        "127.0.0.1:0",
        "--l2met",
        "127.0.0.1:0",
        "--l2met-token-file",
        token_file,
        "--status-port",
        status_port,
        "--no-self-metrics",
        *args,
    )
    limited(listener).start().wait_for_log("listen ready")
    return listener, status_port


@pytest.fixture
def listener(tmp_path):
    made: list[Daemon] = []

    def start(*args: object) -> tuple[Daemon, int]:
        daemon, status_port = start_listener(tmp_path, *args)
        made.append(daemon)
        return daemon, status_port

    yield start
    for daemon in made:
        daemon.stop()


# --- the l2met drain (zibrato-listen) -------------------------------------------------------


def test_a_thousand_half_open_drain_connections_leave_the_drain_and_status_answering(listener):
    daemon, status_port = listener()
    drain = listening_port(daemon, "l2met")
    with open_connections(drain, FLOOD) as flood:
        expect(len(flood)) > 900
        expect(post(drain, frame("count#signup=4"), f"Bearer {TOKEN}")) == 200
        status = ask_status("127.0.0.1", status_port, timeout=5)
    expect(status["l2met_measurements"]) == 1
    expect(status["http_max_connections"]) == 200
    expect(status["http_evicted_connections"]) >= FLOOD - 200
    expect(daemon.stderr).contains("closed the one waiting longest for its request's headers")
    expect(daemon.stderr).does_not_contain("Traceback")


def test_headers_that_drip_are_cut_at_the_header_timeout(listener):
    daemon, status_port = listener("--http-header-timeout", "1")
    drain = listening_port(daemon, "l2met")
    with socket.create_connection(("127.0.0.1", drain)) as slow:
        slow.sendall(b"POST /logs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(20):  # a header byte every 0.1 s: every read is quick, the whole never ends
            try:
                slow.sendall(b"X")
            except OSError:
                break
            time.sleep(0.1)
        expect(closed_by_peer(slow)) == True
    wait_until(lambda: ask_status("127.0.0.1", status_port)["http_header_timeouts"] >= 1, message="a header timeout")
    expect(daemon.stderr).contains("whose request headers took over 1 s")


def test_oversized_request_lines_and_headers_are_refused_and_counted(listener):
    daemon, status_port = listener()
    drain = listening_port(daemon, "l2met")
    expect(post(drain, b"", f"Bearer {TOKEN}", "/logs?" + "a" * 10_000)) == 414
    conn = http.client.HTTPConnection("127.0.0.1", drain, timeout=5)
    conn.putrequest("POST", "/logs")
    for i in range(20):
        conn.putheader(f"X-Padding-{i}", "b" * 4000)
    conn.endheaders()
    expect(conn.getresponse().status) == 431
    conn.close()
    expect(ask_status("127.0.0.1", status_port)["http_oversized_requests"]) == 2


def test_refused_drain_requests_are_logged_rate_limited_and_counted(listener):
    daemon, status_port = listener()
    drain = listening_port(daemon, "l2met")
    for _ in range(30):
        expect(post(drain, frame("count#x=1"), basic("user", "wrong-token"))) == 401
    expect(post(drain, frame("count#x=1"), f"Bearer {TOKEN}", "/nope")) == 404
    status = ask_status("127.0.0.1", status_port)
    expect((status["drain_refused"], status["drain_invalid"])) == (30, 1)
    logged = [line for line in daemon.stderr.splitlines() if "refused a drain request" in line]
    expect(1 <= len(logged) <= 2) == True
    expect(logged[0]).contains("with 401: no valid token")
    expect(daemon.stderr).does_not_contain("wrong-token")


# --- TCP statsd (zibrato-listen) ---------------------------------------------------------------


def test_a_thousand_idle_tcp_connections_do_not_lock_out_a_real_sender(listener):
    daemon, status_port = listener()
    port = listening_port(daemon, "statsd")
    with open_connections(port, FLOOD) as flood:
        expect(len(flood)) > 900
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sender:
            sender.sendall(b"orders:1|c\norders:2|c\n")
            wait_until(
                lambda: ask_status("127.0.0.1", status_port, timeout=5)["lines"] >= 2,
                timeout=15,
                message="the real sender's lines",
            )
        status = ask_status("127.0.0.1", status_port, timeout=5)
    expect(status["tcp_evicted"]) >= FLOOD - status["tcp_max_connections"]
    expect(status["tcp_open"]) <= status["tcp_max_connections"]
    expect(daemon.stderr).contains("closed the TCP statsd connection idle longest")


def test_idle_tcp_connections_are_closed_after_the_idle_timeout(listener):
    daemon, status_port = listener("--tcp-idle-timeout", "1")
    port = listening_port(daemon, "statsd")
    with open_connections(port, 5, b"orders:1|c") as idle:  # a line whose end never comes
        expect(all(closed_by_peer(sock) for sock in idle)) == True
    status = ask_status("127.0.0.1", status_port)
    expect((status["tcp_idle_closed"], status["tcp_open"], status["lines"])) == (5, 0, 0)
    expect(status["rejected"]["line unfinished at close"]) == 5
    expect(daemon.stderr).contains("idle for 1 s (--tcp-idle-timeout)")


# --- zibrato-prometheus and zibrato-web ---------------------------------------------------------------


class PrometheusPipeline(WorkerPipeline):
    script = "zibrato-prometheus"
    ready_log = "prometheus worker"

    def __init__(self, tmp_path, *args, **kwargs):
        self.listen_port = free_ports(1)
        super().__init__(tmp_path, "--listen", f"127.0.0.1:{self.listen_port}", *args, **kwargs)

    def start(self):
        self.broker.start().wait_for_log("broker ready")
        self.worker = limited(Daemon(self.tmp_path, self.script, *self.worker_command(), env=self.env))
        self.worker.start().wait_for_log(self.ready_log)
        wait_until(lambda: _accepts(self.listen_port), timeout=15, message="the server listening")
        return self


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class WebPipeline(PrometheusPipeline):
    script = "zibrato-web"
    ready_log = "web view at"


@pytest.fixture
def prometheus(tmp_path):
    yield from pipelines(lambda *args, **kwargs: PrometheusPipeline(tmp_path, *args, **kwargs))


@pytest.fixture
def web(tmp_path):
    yield from pipelines(lambda *args, **kwargs: WebPipeline(tmp_path, *args, **kwargs))


def get(port: int, path: str, host: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": host} if host else {})
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    return answer.status, body


def test_prometheus_answers_a_scrape_under_a_thousand_half_open_connections(prometheus):
    p = prometheus()
    with open_connections(p.listen_port, FLOOD, b"GET /metrics HTTP/1.1\r\n") as flood:
        expect(len(flood)) > 900
        status, body = get(p.listen_port, "/metrics")
        expect(status) == 200
        figures = p.status()
    expect(figures["http_evicted_connections"]) >= FLOOD - 200
    expect(figures["healthy"]) == True


def test_prometheus_refuses_a_rebound_host_name_unless_allowed(prometheus):
    p = prometheus()
    expect(get(p.listen_port, "/metrics", host=f"attacker.example:{p.listen_port}")[0]) == 403
    expect(get(p.listen_port, "/metrics", host=f"localhost:{p.listen_port}")[0]) == 200
    expect(p.status()["hosts_refused"]) == 1
    allowed = prometheus("--allow-host", "metrics.internal")
    expect(get(allowed.listen_port, "/metrics", host=f"metrics.internal:{allowed.listen_port}")[0]) == 200
    expect(get(allowed.listen_port, "/metrics", host="attacker.example")[0]) == 403


def test_scrapers_that_hang_up_early_log_no_traceback(prometheus):
    p = prometheus()
    for i in range(300):  # enough series that an answer does not fit in one write
        p.client.gauge("info", f"queue.depth.{i}", i)
    p.client.flush()
    wait_until(lambda: p.status()["series"] >= 300 or p.status()["measurements"] >= 300, timeout=15, message="series")
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", p.listen_port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # hang up with a reset
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.close()
    expect(get(p.listen_port, "/metrics")[0]) == 200
    expect(p.worker.stderr).does_not_contain("Traceback")
    went_away = [line for line in p.worker.stderr.splitlines() if "went away" in line]
    expect(len(went_away)) <= 1


def test_web_caps_its_event_streams(web):
    p = web("--max-event-streams", "2")
    streams = []
    try:
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", p.listen_port, timeout=10)
            conn.request("GET", "/api/events")
            response = conn.getresponse()  # kept: the stream closes when it is collected
            expect(response.status) == 200
            streams.append(response)
        expect(get(p.listen_port, "/api/events")[0]) == 503
        figures = p.status()
    finally:
        for response in streams:
            response.close()
    expect((figures["event_streams"], figures["event_streams_refused"], figures["max_event_streams"])) == (2, 1, 2)
    expect(p.worker.stderr).contains("refused an event stream: 2 open (--max-event-streams)")


def test_web_answers_under_a_thousand_half_open_connections(web):
    p = web()
    with open_connections(p.listen_port, FLOOD) as flood:
        expect(len(flood)) > 900
        expect(get(p.listen_port, "/api/summary")[0]) == 200
        figures = p.status()
    expect(figures["http_evicted_connections"]) >= FLOOD - 200
