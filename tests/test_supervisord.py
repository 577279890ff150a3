"""The shipped supervisord configs, run by the real supervisord (PyPI ``supervisor``).

``supervisord/zibrato.conf`` is included unmodified, with the statsd and Librato
example files beside it; ``supervisord/supervisord.conf``
is rendered for a temporary directory: its socket, pid file and log paths, its
``environment=`` line (free ports below the ephemeral range, the real Etsy
statsd, a local Librato API, a token file of mode 600) and the path of the include. Every other setting
(signals, stop windows, priorities, log files, command lines) is the shipped one.

The scenario: a client streams counters; mid-stream ``supervisorctl restart
zibrato-broker``; the stream goes on through ``supervisorctl stop all`` and
``start all``; then it ends and everything is stopped again. Each destination
must hold exactly what was sent, every program must have stopped by its stop
signal within ``stopwaitsecs`` each time, and ``zibrato status`` must say
healthy (0) while they run and unreachable (2) once they are stopped.
"""

from __future__ import annotations

import collections
import configparser
import json
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from expecter import expect

from support.daemons import BIN, free_ports, run_script, wait_until
from support.etsy_statsd import INSTALL_COMMAND, EtsyStatsd, totals_of
from support.fake_librato import FakeLibrato
from zibrato import Zibrato
from zibrato.runtime import ask_status

CONF_DIR = Path(__file__).resolve().parents[1] / "supervisord"
PROGRAMS = ("zibrato-broker", "zibrato-librato", "zibrato-statsd", "zibrato-console", "zibrato-prometheus")
# the shipped programs, and the statsd and Librato examples included beside them
INCLUDED = ("zibrato.conf", "zibrato-statsd.example.conf", "zibrato-librato.example.conf")
STOPWAITSECS = 10
TICK = 0.005  # one round of counters every 5 ms

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (BIN / "supervisord").exists(),
    reason=f"needs supervisord (bin/setup --test) and Node.js for the real statsd ({INSTALL_COMMAND})",
)


class Supervisor:
    """supervisord in the foreground (-n) as a subprocess, driven with supervisorctl."""

    def __init__(self, tmp_path: Path, environment: dict[str, str]) -> None:
        self.dir = tmp_path
        self.log_dir = Path(environment["ZIBRATO_LOG_DIR"])
        # A unix socket path must stay under ~107 bytes; pytest's tmp_path may not.
        self.run_dir = Path(tempfile.mkdtemp(prefix="zsv-", dir="/tmp"))
        self.config = render_config(tmp_path / "supervisord.conf", self.run_dir, self.log_dir, environment)
        self.process: subprocess.Popen | None = None

    def start(self) -> Supervisor:
        with open(self.dir / "supervisord.stdout", "ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "supervisord"), "-n", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.config), *args], capture_output=True, text=True, timeout=timeout
        )

    def states(self) -> dict[str, str]:
        """program -> RUNNING, STARTING, STOPPED, FATAL... (empty while supervisord is not up)."""
        lines = self.ctl("status").stdout.splitlines()
        return dict(line.split()[:2] for line in lines if line.split()[:1] and line.split()[0] in PROGRAMS)

    def wait_running(self, timeout: float = 20) -> None:
        def all_running():
            assert self.process.poll() is None, f"supervisord exited:\n{self.log}"
            states = self.states()
            assert "FATAL" not in states.values(), f"{states}\n{self.program_logs()}"
            return states and all(states.get(name) == "RUNNING" for name in PROGRAMS)

        wait_until(all_running, timeout=timeout, interval=0.2, message="every program RUNNING")

    @property
    def log(self) -> str:
        path = self.log_dir / "supervisord.log"
        return path.read_text(errors="replace") if path.exists() else "(no supervisord.log)"

    def program_logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.log_dir.glob("zibrato-*.log"))
        )

    def shutdown(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # stops every program, then exits
            try:
                self.process.wait(4 * STOPWAITSECS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def render_config(target: Path, run_dir: Path, log_dir: Path, environment: dict[str, str]) -> Path:
    """supervisord.conf with this test's paths and environment; it includes zibrato.conf as shipped."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(CONF_DIR / "supervisord.conf")
    shipped = dict(re.findall(r'(\w+)="([^"]*)"', parser["supervisord"]["environment"]))
    expect(sorted(set(shipped) - set(environment))) == []  # every site value is replaced
    socket_path = run_dir / "supervisor.sock"
    parser["unix_http_server"]["file"] = str(socket_path)
    parser["supervisorctl"]["serverurl"] = f"unix://{socket_path}"
    parser["supervisord"].update(
        {
            "logfile": str(log_dir / "supervisord.log"),
            "pidfile": str(run_dir / "supervisord.pid"),
            "childlogdir": str(log_dir),
            "environment": ",".join(f'{key}="{value}"' for key, value in environment.items()),
        }
    )
    parser["include"]["files"] = " ".join(str(CONF_DIR / name) for name in INCLUDED)
    with open(target, "w") as out:
        parser.write(out)
    return target


class Stream(threading.Thread):
    """A round of counters every TICK seconds until halted; ``sent`` holds the exact totals."""

    def __init__(self, client: Zibrato) -> None:
        super().__init__(name="test-stream", daemon=True)
        self.client = client
        self.sent: collections.Counter = collections.Counter()
        self.rounds = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.rounds += 1
            weight = self.rounds % 7 + 1
            self.client.count("info", "sv.ticks")
            self.client.count("info", "sv.weighted", weight)
            self.sent["sv.ticks"] += 1
            self.sent["sv.weighted"] += weight
            self.halt.wait(TICK)

    def wait_rounds(self, more: int) -> None:
        target = self.rounds + more
        wait_until(lambda: self.rounds >= target, timeout=10, message=f"{more} more rounds sent")


def zibrato_status(*ports: int, timeout: float = 2.0) -> subprocess.CompletedProcess:
    args = [arg for port in ports for arg in ("--port", str(port))]
    return run_script("zibrato", "status", "--timeout", str(timeout), *args)


def stop_all_within_stopwaitsecs(supervisor: Supervisor) -> None:
    """`supervisorctl stop all`: every program reports stopped, sooner than stopwaitsecs."""
    started = time.monotonic()
    stopped = supervisor.ctl("stop", "all", timeout=4 * STOPWAITSECS)
    stop_seconds = time.monotonic() - started
    for name in PROGRAMS:
        expect(stopped.stdout).contains(f"{name}: stopped")
    expect(stop_seconds < STOPWAITSECS) == True


def counter_totals(pairs) -> dict[str, float]:
    """The stream's counters (sv.*) summed over every flush."""
    totals: dict[str, float] = collections.defaultdict(int)
    for name, value in pairs:
        if name.startswith("sv."):
            totals[name] += value
    return dict(totals)


def statsd_totals(flushes: list[dict]) -> dict[str, float]:
    return counter_totals(totals_of(flushes).counters.items())


def delivered(log_dir: Path, librato: FakeLibrato, statsd: EtsyStatsd) -> dict[str, dict]:
    """What each destination holds: console JSON lines (its stdout log), Librato posts, statsd flushes."""
    lines = (log_dir / "zibrato-console.metrics.jsonl").read_text().splitlines()
    console = [json.loads(line) for line in lines]
    return {
        "console": counter_totals((s["name"], s["value"]) for s in console if s["type"] == "counter"),
        # a counter reaches Librato as a gauge of its per-flush sum
        "librato": counter_totals((m["name"], m.get("value", 0)) for m in librato.measurements()),
        "statsd": statsd_totals(statsd.flushes()),
    }


@pytest.fixture
def etsy_statsd(tmp_path):
    with EtsyStatsd(tmp_path, flush_interval_ms=200) as statsd:
        yield statsd


@pytest.fixture
def librato():
    with FakeLibrato() as fake:
        yield fake


def test_broker_restart_and_stop_all_under_supervisord_lose_nothing(tmp_path, etsy_statsd, librato):
    # broker, its PUB, its status; the librato, statsd, console, prometheus status ports; its scrape port
    # (below the ephemeral range: the workers retry connecting from new ephemeral ports before the broker is up)
    base = free_ports(8)
    status_ports = (base + 2, base + 3, base + 4, base + 5, base + 6)
    token_file = tmp_path / "librato-token"
    token_file.write_text(librato.token + "\n")
    token_file.chmod(0o600)
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    supervisor = Supervisor(
        tmp_path,
        {
            "ZIBRATO_BIN": str(BIN),
            "ZIBRATO_LOG_DIR": str(log_dir),
            "ZIBRATO_BROKER_PORT": str(base),
            "ZIBRATO_BROKER_PUB_PORT": str(base + 1),
            "ZIBRATO_LIBRATO_STATUS_PORT": str(base + 3),
            "ZIBRATO_STATSD_STATUS_PORT": str(base + 4),
            "ZIBRATO_CONSOLE_STATUS_PORT": str(base + 5),
            "ZIBRATO_PROMETHEUS_STATUS_PORT": str(base + 6),
            "ZIBRATO_PROMETHEUS_LISTEN": f"127.0.0.1:{base + 7}",
            "ZIBRATO_STATSD_STATSD_HOST": etsy_statsd.host,
            "ZIBRATO_STATSD_STATSD_PORT": str(etsy_statsd.port),
            "ZIBRATO_LIBRATO_USERNAME": librato.user,
            "ZIBRATO_LIBRATO_APITOKEN_FILE": str(token_file),
            "ZIBRATO_LIBRATO_API_URL": librato.url,  # read by zibrato-librato itself (--api-url)
        },
    )
    client = Zibrato(port=base)
    stream = Stream(client)
    try:
        supervisor.start().wait_running()
        healthy = zibrato_status(*status_ports)
        expect(healthy.returncode) == 0
        expect(healthy.stdout.count(" OK")) == len(status_ports)

        stream.start()
        wait_until(
            lambda: ask_status("127.0.0.1", base + 5)["measurements"] >= 100,
            timeout=10,
            message="the console receiving the stream",
        )
        restarted = supervisor.ctl("restart", "zibrato-broker")
        expect(restarted.stdout).contains("zibrato-broker: stopped")
        expect(restarted.stdout).contains("zibrato-broker: started")
        wait_until(
            lambda: ask_status("127.0.0.1", base + 2)["received"] >= 10,
            timeout=10,
            message="the restarted broker receiving the stream",
        )
        stream.wait_rounds(100)
        expect(zibrato_status(*status_ports).returncode) == 0

        # stop all while the client keeps sending: what the broker already took
        # must be delivered by the stopping workers; what the client sends
        # meanwhile waits in its queue for the next start.
        stop_all_within_stopwaitsecs(supervisor)
        unreachable = zibrato_status(*status_ports, timeout=0.5)
        expect(unreachable.returncode) == 2
        expect(unreachable.stdout.count("UNREACHABLE")) == len(status_ports)
        stream.wait_rounds(20)
        expect(supervisor.ctl("start", "all").returncode) == 0
        supervisor.wait_running()
        wait_until(
            lambda: ask_status("127.0.0.1", base + 2)["received"] >= 10,
            timeout=10,
            message="the started broker receiving the stream",
        )
        stream.wait_rounds(100)

        stream.halt.set()
        stream.join(5)
        client.close(timeout=5)  # hands everything to ZeroMQ and waits for it to reach the broker
        expect(client.dropped) == 0
        stop_all_within_stopwaitsecs(supervisor)

        sent = dict(stream.sent)
        etsy_statsd.wait_for(lambda flushes: statsd_totals(flushes) == sent, timeout=5)
        expect(delivered(log_dir, librato, etsy_statsd)) == {"console": sent, "librato": sent, "statsd": sent}

        log = supervisor.log
        for name in PROGRAMS:
            expect(log).contains(f"stopped: {name} (exit status 0)")
            expect((log_dir / f"{name}.log").read_text()).contains("received SIGQUIT, stopping")
        # the restart, then stop all twice
        expect(log.count("stopped: zibrato-broker (exit status 0)")) == 3
        expect(log).does_not_contain("SIGKILL")
        expect(log).does_not_contain("exited: ")  # no program ever ended on its own
    finally:
        stream.halt.set()
        client.close(timeout=1)
        supervisor.shutdown()
