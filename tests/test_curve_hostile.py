"""CURVE against a real broker: a removed key's live connection is cut; failed handshakes are counted."""

from __future__ import annotations

import zmq
from expecter import expect
from test_scale_curve import curve_broker_and_console, keys  # noqa: F401 - the keys fixture

from support.daemons import free_ports, wait_until
from zibrato import Zibrato
from zibrato.runtime import ask_status


def test_removing_a_key_cuts_its_live_connection_within_the_reload_period(tmp_path, keys):  # noqa: F811
    folder, allowed = keys
    base = free_ports(4)
    broker, worker = curve_broker_and_console(tmp_path, keys, base)
    app = Zibrato(port=base, curve_secret_key=folder / "app.key_secret", curve_server_key=folder / "broker.key")
    try:
        broker.wait_for_log("broker ready")
        worker.wait_for_log("console worker")

        def totals(name: str) -> float:
            return sum(s["value"] for s in worker.json_lines() if s["name"] == name)

        def arrived() -> bool:
            app.count("info", "before.removal")
            app.flush()
            return totals("before.removal") > 0

        wait_until(arrived, timeout=15, interval=0.2, message="the allowed client's counts")
        (allowed / "app.key").unlink()
        wait_until(
            lambda: ask_status("127.0.0.1", base + 2)["curve_connections_cut"] >= 1,
            timeout=10,
            message="the removed key's connection cut",
        )
        status = ask_status("127.0.0.1", base + 2)
        expect(status["curve_keys_removed"]) == 1
        expect(broker.stderr).contains("1 CURVE key(s) removed: cut")

        # The same live client keeps sending: its reconnection is refused, nothing more arrives.
        wait_until(
            lambda: ask_status("127.0.0.1", base + 2)["curve_refused"] >= 1,
            timeout=10,
            message="the removed key refused at its reconnection",
        )
        for _ in range(50):
            app.count("info", "after.removal")
        app.flush()
        worker_client = Zibrato(
            port=base, curve_secret_key=folder / "worker.key_secret", curve_server_key=folder / "broker.key"
        )
        try:

            def marker() -> bool:  # a still-allowed key's count, sent after the removed key's
                worker_client.count("info", "marker")
                worker_client.flush()
                return totals("marker") > 0

            wait_until(marker, timeout=15, interval=0.3, message="a still-allowed client's counts")
        finally:
            worker_client.close(timeout=1)
        expect(totals("after.removal")) == 0
    finally:
        app.close(timeout=0)
        worker.stop()
        broker.stop()


def test_plain_and_wrong_key_clients_are_counted_and_logged_by_the_broker(tmp_path, keys):  # noqa: F811
    folder, _ = keys
    base = free_ports(4)
    broker, worker = curve_broker_and_console(tmp_path, keys, base)
    context = zmq.Context()
    try:
        broker.wait_for_log("broker ready")
        plain = context.socket(zmq.PUSH)
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(f"tcp://127.0.0.1:{base}")
        wrong = context.socket(zmq.PUSH)
        wrong.setsockopt(zmq.LINGER, 0)
        public, secret = zmq.curve_keypair()
        wrong.curve_publickey, wrong.curve_secretkey = public, secret
        wrong.curve_serverkey = zmq.curve_keypair()[0]  # not the broker's key
        wrong.connect(f"tcp://127.0.0.1:{base}")

        def failures() -> int:
            return sum(ask_status("127.0.0.1", base + 2)["curve_handshakes_failed"].values())

        wait_until(lambda: failures() >= 2, timeout=15, message="two failed handshakes")
        expect(broker.stderr).contains("a client failed the CURVE handshake")
        lines = [line for line in broker.stderr.splitlines() if "failed the CURVE handshake" in line]
        expect(len(lines)) <= 2  # rate-limited: a reconnecting client does not flood the log
    finally:
        context.destroy(linger=0)
        worker.stop()
        broker.stop()
