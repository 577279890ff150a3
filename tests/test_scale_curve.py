"""CURVE on real links: keys, a broker that refuses unknown clients, encrypted bytes on the wire."""

from __future__ import annotations

import logging
import shutil
import socket
import threading

import pytest

from support.daemons import Daemon, free_ports, wait_until
from zibrato import Zibrato
from zibrato.curve import create_keys, warn_if_exposed
from zibrato.runtime import ask_status

pytestmark = pytest.mark.timeout(60)


class Relay:
    """A TCP relay on loopback that records every byte the client side sends: a capture of the link."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.captured = bytearray()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self.listener.accept()
            except OSError:
                return
            outbound = socket.create_connection(("127.0.0.1", self.target))
            self._sockets += [inbound, outbound]
            threading.Thread(target=self._pipe, args=(inbound, outbound, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(outbound, inbound, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    return
                if record:
                    with self._lock:
                        self.captured += data
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()
        for s in self._sockets:
            s.close()


@pytest.fixture
def keys(tmp_path):
    folder, allowed = tmp_path / "keys", tmp_path / "allowed"
    allowed.mkdir()
    for name in ("broker", "worker", "app", "stranger"):
        create_keys(name, folder)
    for name in ("worker", "app"):
        shutil.copy(folder / f"{name}.key", allowed)
    return folder, allowed


def curve_broker_and_console(tmp_path, keys, base: int, *worker_args: object) -> tuple[Daemon, Daemon]:
    """A CURVE broker on ``base`` (allowing the keys' directory) and a console worker with its own key."""
    folder, allowed = keys
    broker = Daemon(
        tmp_path,
        "zibrato-broker",
        "--port",
        base,
        "--startup-grace",
        "0.1",
        "--curve-secret-key",
        folder / "broker.key_secret",
        "--curve-clients",
        allowed,
    ).start()
    worker = Daemon(
        tmp_path,
        "zibrato-console",
        "--port",
        base + 1,
        "--flush",
        0.5,
        "--format",
        "json",
        "--no-self-metrics",
        *worker_args,
        "--curve-secret-key",
        folder / "worker.key_secret",
        "--curve-server-key",
        folder / "broker.key",
    ).start()
    return broker, worker


def test_curve_encrypts_the_link_refuses_unknown_keys_and_reloads_the_allowed_ones(tmp_path, keys):
    folder, allowed = keys
    base = free_ports(4)
    broker, worker = curve_broker_and_console(tmp_path, keys, base, "--status-port", base + 3)
    relay = Relay(base)
    app = Zibrato(port=relay.port, curve_secret_key=folder / "app.key_secret", curve_server_key=folder / "broker.key")
    stranger = Zibrato(
        port=base, curve_secret_key=folder / "stranger.key_secret", curve_server_key=folder / "broker.key"
    )
    try:
        broker.wait_for_log("broker ready")
        worker.wait_for_log("console worker")

        def totals(name: str) -> float:
            return sum(s["value"] for s in worker.json_lines() if s["name"] == name)

        def app_arrived() -> bool:
            app.count("info", "payroll.secret_metric")
            stranger.count("info", "intruder.metric")
            app.flush()
            stranger.flush()
            return totals("payroll.secret_metric") > 0

        wait_until(app_arrived, timeout=15, interval=0.2, message="the allowed client's counts")
        wait_until(
            lambda: ask_status("127.0.0.1", base + 2)["curve_refused"] > 0, timeout=10, message="the stranger refused"
        )
        status = ask_status("127.0.0.1", base + 2)
        assert "127.0.0.1" in status["curve_refused_by_address"]
        assert "refused a CURVE client from 127.0.0.1" in broker.stderr
        assert totals("intruder.metric") == 0
        # The capture of the encrypted link holds the traffic, but not a metric name.
        assert len(relay.captured) > 200
        assert b"payroll" not in relay.captured and b"secret_metric" not in relay.captured

        # The stranger's key is allowed now: the broker reloads the directory. libzmq does not
        # reconnect a socket whose handshake was refused, so the stranger starts a new client.
        shutil.copy(folder / "stranger.key", allowed)
        wait_until(
            lambda: ask_status("127.0.0.1", base + 2)["curve_reloads"] >= 1,
            timeout=10,
            message="the key directory reloaded",
        )
        stranger.close(timeout=0)
        stranger = Zibrato(
            port=base, curve_secret_key=folder / "stranger.key_secret", curve_server_key=folder / "broker.key"
        )

        def stranger_arrived() -> bool:
            stranger.count("info", "intruder.metric")
            stranger.flush()
            return totals("intruder.metric") > 0

        wait_until(stranger_arrived, timeout=15, interval=0.3, message="the newly allowed client")
        assert broker.process.poll() is None
    finally:
        app.close(timeout=1)
        stranger.close(timeout=1)
        relay.close()
        worker.stop()
        broker.stop()


def test_a_plain_link_capture_does_show_the_names(tmp_path):
    """The control for the capture above: without CURVE the same relay sees the metric names."""
    base = free_ports(3)
    broker = Daemon(tmp_path, "zibrato-broker", "--port", base, "--startup-grace", "0.1").start()
    relay = Relay(base)
    app = Zibrato(port=relay.port)
    try:
        broker.wait_for_log("broker ready")

        def captured() -> bool:
            app.count("info", "payroll.secret_metric")
            app.flush()
            return b"payroll.secret_metric" in relay.captured

        wait_until(captured, timeout=10, interval=0.1, message="the name on a plain link")
    finally:
        app.close(timeout=1)
        relay.close()
        broker.stop()


def test_binding_beyond_loopback_without_curve_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="zibrato.curve"):
        warn_if_exposed("127.0.0.1", False, "the broker")
        warn_if_exposed("0.0.0.0", True, "the broker")
        assert not caplog.records
        warn_if_exposed("0.0.0.0", False, "the broker")
    assert "without CURVE" in caplog.text


def test_a_broker_with_half_the_curve_options_is_a_usage_error(tmp_path, keys):
    from support.daemons import run_script

    folder, _ = keys
    result = run_script("zibrato-broker", "--port", free_ports(3), "--curve-secret-key", folder / "broker.key_secret")
    assert result.returncode == 2 and "both --curve-secret-key and --curve-clients" in result.stderr
    result = run_script(
        "zibrato-console", "--curve-secret-key", folder / "worker.key", "--curve-server-key", folder / "broker.key"
    )
    assert result.returncode == 2 and "no secret key" in result.stderr


def test_zibrato_listen_publishes_over_curve_to_a_curve_broker(tmp_path, keys):
    import re

    folder, allowed = keys
    base = free_ports(4)
    broker, worker = curve_broker_and_console(tmp_path, keys, base, "--levels", "statsd")
    listener = Daemon(
        tmp_path,
        "zibrato-listen",
        "--broker",
        f"127.0.0.1:{base}",
        "--statsd",
        "127.0.0.1:0",
        "--no-self-metrics",
        "--curve-secret-key",
        folder / "app.key_secret",
        "--curve-server-key",
        folder / "broker.key",
    ).start()
    try:
        broker.wait_for_log("broker ready")
        worker.wait_for_log("console worker")
        listener.wait_for_log("listen ready")
        port = int(re.search(r"statsd [\d.]+:(\d+)", listener.stderr).group(1))

        def arrived() -> bool:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"curve.listen.hits:1|c", ("127.0.0.1", port))
            return any(s["name"] == "curve.listen.hits" for s in worker.json_lines())

        wait_until(arrived, timeout=15, interval=0.2, message="the listener's line through the CURVE broker")
    finally:
        for daemon in (listener, worker, broker):
            daemon.stop()
