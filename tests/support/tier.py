"""The forwarder tier as an operator runs it: hosts (broker + forwarder + producers) and a global tier."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

from zibrato import Zibrato
from zibrato.runtime import ask_status

from .daemons import Daemon, free_ports, wait_until


def make_keys(folder: Path, clients: tuple[str, ...]) -> Path:
    """A global broker's key pair and the clients' pairs, their public keys allowed."""
    from zibrato.curve import create_keys

    allowed = folder / "allowed"
    allowed.mkdir(parents=True)
    create_keys("global", folder)
    for name in clients:
        public, _ = create_keys(name, folder)
        (allowed / public.name).write_bytes(public.read_bytes())
    return folder


def curve_args(keys: Path | None, name: str) -> list:
    if keys is None:
        return []
    return ["--curve-secret-key", keys / f"{name}.key_secret", "--curve-server-key", keys / "global.key"]


class UdpCapture:
    """A statsd stand-in: every datagram received on a loopback port, as text lines."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except OSError:
                continue
            self.lines.extend(data.decode().splitlines())

    def counter_total(self, name: str) -> float:
        """Sum of the ``name:value|c`` lines."""
        total = 0.0
        for line in list(self.lines):
            head, _, kind = line.partition("|")
            metric, _, value = head.rpartition(":")
            if metric == name and kind.startswith("c"):
                total += float(value)
        return total

    def timer_count(self, name: str) -> float:
        """Observations of the ``name:ms|ms[|@rate]`` lines (each counts 1 / rate)."""
        count = 0.0
        for line in list(self.lines):
            parts = line.split("|")
            if parts[0].rpartition(":")[0] == name and len(parts) > 1 and parts[1] == "ms":
                rate = next((float(p[1:]) for p in parts[2:] if p.startswith("@")), 1.0)
                count += 1 / rate
        return count

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


class Host:
    """One host of the tier: its broker, its forwarder to the global broker, a producer."""

    def __init__(
        self,
        tmp_path: Path,
        name: str,
        upstream_port: int,
        *forward_args: object,
        flush: float = 1.0,
        keys: Path | None = None,
    ) -> None:
        self.name = name
        self.base = free_ports(4)
        self.broker = Daemon(tmp_path, "zibrato-broker", "--port", self.base, "--startup-grace", "0.1")
        self.forwarder = Daemon(
            tmp_path,
            "zibrato-forward",
            "--port",
            self.base + 1,
            "--to",
            f"127.0.0.1:{upstream_port}",
            "--flush",
            flush,
            "--levels",
            "info",
            "--no-self-metrics",
            "--retry-cap",
            "1",
            "--status-port",
            self.base + 3,
            *curve_args(keys, name),
            *forward_args,
        )
        self.client = Zibrato(port=self.base)

    def start(self) -> Host:
        self.broker.start().wait_for_log("broker ready")
        self.forwarder.start().wait_for_log("forward worker")
        return self

    def status(self) -> dict:
        return ask_status("127.0.0.1", self.base + 3, timeout=2)

    def close(self) -> None:
        self.client.close(timeout=1)
        self.forwarder.stop()
        self.broker.stop()


class GlobalTier:
    """The global broker with a console (JSON) worker and a statsd worker (to a UDP capture)."""

    def __init__(
        self,
        tmp_path: Path,
        flush: float = 4.0,
        lateness: float = 1.0,
        broker_args: tuple = (),
        keys: Path | None = None,
    ) -> None:
        self.tmp_path, self.keys = tmp_path, keys
        if keys is not None:
            broker_args = (
                "--curve-secret-key",
                keys / "global.key_secret",
                "--curve-clients",
                keys / "allowed",
                *broker_args,
            )
        self.base = free_ports(5)
        self.flush, self.lateness, self.broker_args = flush, lateness, broker_args
        self.statsd = UdpCapture()
        self.consoles: list[Daemon] = []
        self.broker: Daemon | None = None
        self.statsd_worker: Daemon | None = None

    @property
    def port(self) -> int:
        return self.base

    def _worker_args(self, status: int) -> list:
        return [
            "--port",
            self.base + 1,
            "--flush",
            self.flush,
            "--lateness",
            self.lateness,
            "--levels",
            "info",
            "--no-self-metrics",
            "--status-port",
            status,
            *curve_args(self.keys, "global-worker"),
        ]

    def start_workers(self) -> None:
        console = Daemon(
            self.tmp_path,
            "zibrato-console",
            *self._worker_args(self.base + 3),
            "--format",
            "json",
            "--percentiles",
            "50,90,99",
        )
        self.consoles.append(console.start())
        self.statsd_worker = Daemon(
            self.tmp_path, "zibrato-statsd", *self._worker_args(self.base + 4), "--statsd-port", self.statsd.port
        ).start()
        console.wait_for_log("console worker")
        self.statsd_worker.wait_for_log("statsd worker")

    def start_broker(self, grace: float = 0.1) -> None:
        self.broker = Daemon(
            self.tmp_path, "zibrato-broker", "--port", self.base, "--startup-grace", grace, *self.broker_args
        ).start()
        self.broker.wait_for_log("broker ready", timeout=15)

    def start(self) -> GlobalTier:
        self.start_broker()
        self.start_workers()
        return self

    def console_lines(self) -> list[dict]:
        return [line for console in self.consoles for line in console.json_lines()]

    def console_total(self, name: str, source: str | None = None) -> float:
        return sum(
            s["value"]
            for s in self.console_lines()
            if s["name"] == name and s["source"] == source and s["type"] == "counter"
        )

    def console_status(self) -> dict:
        return ask_status("127.0.0.1", self.base + 3, timeout=2)

    def kill(self) -> None:
        """The global tier goes away: the broker killed outright, the workers stopped (TERM)."""
        self.broker.signal(signal.SIGKILL)
        self.broker.wait()
        for worker in (self.consoles[-1], self.statsd_worker):
            worker.signal(signal.SIGTERM)
            assert worker.wait(15) == 0, worker.stderr

    def close(self) -> None:
        for daemon in [*self.consoles, self.statsd_worker, self.broker]:
            if daemon is not None:
                daemon.stop()
        self.statsd.close()


def warm_up(hosts: list[Host], tier: GlobalTier, timeout: float = 20.0) -> None:
    """Send until both global workers show every host's warm-up: the whole chain is connected."""

    def arrived() -> bool:
        for host in hosts:
            host.client.count("info", "warmup", source=host.name)
            host.client.flush()
        return all(
            tier.console_total("warmup", h.name) > 0 and tier.statsd.counter_total(f"{h.name}.warmup") > 0
            for h in hosts
        )

    try:
        wait_until(arrived, timeout=timeout, interval=0.25, message="warm-up through the tier")
    except AssertionError:
        logs = [d for d in [tier.broker, *tier.consoles, tier.statsd_worker] + [h.forwarder for h in hosts] if d]
        raise AssertionError(
            "warm-up did not get through the tier:\n" + "\n".join(f"--- {d.name}\n{d.stderr[-3000:]}" for d in logs)
        ) from None
