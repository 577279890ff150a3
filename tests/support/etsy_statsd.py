"""Run the real Etsy statsd (npm ``statsd`` 0.9.0) as a subprocess in tests.

Setup, once per checkout (from the repository root)::

    npm ci --prefix tests/statsd --no-audit --no-fund --omit=optional

Use::

    with EtsyStatsd(tmp_path, protocol="udp") as statsd:
        send_to(statsd.host, statsd.port, b"a:3|c")
        assert statsd.wait_for(lambda flushes: totals_of(flushes).counters.get("a") == 3)

statsd loads ``tests/statsd/capture_backend.js``, which appends one JSON line
per flush to a file; :meth:`EtsyStatsd.flushes` parses them. See that file for
the fields of a flush. statsd's own metrics (``statsd.packets_received`` and so
on) are not in ``counters``/``gauges`` but under ``flush["statsd"]``.

Choices made for the config statsd is given (all overridable):

* Everything listens on 127.0.0.1 only, on free ports found by binding port 0.
* ``deleteIdleStats: true`` so counters, timers and sets only appear in the
  flushes in which something was received (no stream of zeros), **but**
  ``deleteGauges: false``: with statsd's ``deleteGauges`` a gauge is forgotten
  right after every flush it was reported in, so a delta (``g:+1|g``) that
  lands in the next flush would *set* the gauge to 1 instead of adding to it,
  depending on timing. Gauges therefore persist, as with statsd's defaults,
  and are repeated in every flush.
* ``automaticConfigReload: false``: statsd otherwise watches its config file and
  re-runs its start-up code (zeroing its internal counters) when it changes.
* :meth:`stop` sends SIGTERM: statsd 0.9.0 then exits and flushes once more
  from ``process.on('exit')``, so everything received before ``stop()`` is in
  :meth:`flushes` afterwards.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .daemons import free_ports

STATSD_VERSION = "0.9.0"
STATSD_DIR = Path(__file__).resolve().parents[1] / "statsd"
CAPTURE_BACKEND = STATSD_DIR / "capture_backend.js"
INSTALL_COMMAND = "npm ci --prefix tests/statsd --no-audit --no-fund --omit=optional"
HOST = "127.0.0.1"

_POLL = 0.02  # seconds between polls while waiting


class StatsdNotInstalled(RuntimeError):
    """node is missing, or the npm install of statsd is."""


class StatsdStartError(RuntimeError):
    """statsd exited or did not answer in time."""


@dataclass
class Totals:
    """What a run of flushes adds up to.

    counters: summed over flushes (sample rates already applied by statsd).
    gauges: the last value reported for each gauge.
    timers: every raw timer value, flush after flush (statsd sorts the values
        within a flush, so the order is not the order of arrival).
    timer_counts: statsd's sample-rate-scaled timer counts, summed.
    sets: union of the members reported for each set.
    bad_lines_seen, packets_received, metrics_received: statsd's own counters, summed.
    """

    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    timers: dict[str, list[float]] = field(default_factory=dict)
    timer_counts: dict[str, float] = field(default_factory=dict)
    sets: dict[str, set[str]] = field(default_factory=dict)
    bad_lines_seen: int = 0
    packets_received: int = 0
    metrics_received: int = 0


def totals_of(flushes: Iterable[dict]) -> Totals:
    """Add up captured flushes (see :class:`Totals`)."""
    result = Totals()
    for flush in flushes:
        for name, value in flush["counters"].items():
            result.counters[name] = result.counters.get(name, 0) + value
        result.gauges.update(flush["gauges"])
        for name, values in flush["timers"].items():
            result.timers.setdefault(name, []).extend(values)
        for name, count in flush["timer_counters"].items():
            result.timer_counts[name] = result.timer_counts.get(name, 0) + count
        for name, members in flush["sets"].items():
            result.sets.setdefault(name, set()).update(members)
        internal = flush["statsd"]
        result.bad_lines_seen += internal.get("bad_lines_seen") or 0
        result.packets_received += internal.get("packets_received") or 0
        result.metrics_received += internal.get("metrics_received") or 0
    return result


def _free_ports(kinds: list[int]) -> list[int]:
    """One free 127.0.0.1 port per socket kind (SOCK_DGRAM/SOCK_STREAM), all distinct, out of the ephemeral range."""
    return [free_ports(1, (kind,)) for kind in kinds]


class EtsyStatsd:
    """The real Etsy statsd in a subprocess, with a backend capturing every flush."""

    def __init__(
        self,
        tmp_path: Path,
        flush_interval_ms: int = 200,
        protocol: str = "udp",
        percent_thresholds: Iterable[float] = (90, 95),
        port: int | None = None,
        mgmt_port: int | None = None,
        *,
        delete_idle_stats: bool = True,
        delete_gauges: bool = False,
        extra_config: dict | None = None,
        start_timeout: float = 10.0,
        statsd_dir: Path = STATSD_DIR,
        node: str = "node",
    ) -> None:
        if protocol not in ("udp", "tcp"):
            raise ValueError(f"protocol must be 'udp' or 'tcp', not {protocol!r}")
        self.host = HOST
        self.protocol = protocol
        self.flush_interval_ms = int(flush_interval_ms)
        self.percent_thresholds = list(percent_thresholds)
        self.delete_idle_stats = delete_idle_stats
        self.delete_gauges = delete_gauges
        self.extra_config = dict(extra_config or {})
        self.start_timeout = start_timeout
        self.statsd_dir = Path(statsd_dir)
        self.node = node
        self._given_port = port
        self._given_mgmt_port = mgmt_port
        self._started_once = False
        self.port: int = port or 0
        self.mgmt_port: int = mgmt_port or 0
        self.workdir = Path(tempfile.mkdtemp(prefix="etsy_statsd-", dir=tmp_path))
        self.config_file = self.workdir / "config.js"
        self.capture_file = self.workdir / "flushes.jsonl"
        self.log_file = self.workdir / "statsd.log"
        self._proc: subprocess.Popen | None = None

    # -- life cycle ---------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EtsyStatsd:
        """Start statsd; return once its admin console answers."""
        if self._proc is not None:
            raise RuntimeError("statsd is already running")
        node = self._check_installed()
        # Ports picked here may be taken by someone else between probing and
        # statsd binding them: on the first start, pick others and retry.
        # Restarts reuse the same ports.
        picking = not self._started_once and (self._given_port is None or self._given_mgmt_port is None)
        attempts = 3 if picking else 1
        for attempt in range(attempts):
            self._pick_ports()
            try:
                self._spawn(node)
                self._wait_until_ready()
                self._started_once = True
                return self
            except StatsdStartError as error:
                self._terminate()
                if attempt + 1 < attempts and "EADDRINUSE" in str(error):
                    self.port = self._given_port or 0
                    self.mgmt_port = self._given_mgmt_port or 0
                    continue
                raise
            except BaseException:
                self._terminate()
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM statsd (which flushes a last time) and wait for it to exit."""
        if self._proc is not None:
            self._terminate()

    def __enter__(self) -> EtsyStatsd:
        return self.start()

    def __exit__(self, *exc_info) -> bool:
        self.stop()
        return False

    # -- results ------------------------------------------------------------

    def flushes(self) -> list[dict]:
        """Every flush captured so far (across restarts), oldest first."""
        try:
            text = self.capture_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        # A line is complete once its newline is written.
        return [json.loads(line) for line in text.split("\n")[:-1] if line]

    def totals(self, flushes: Iterable[dict] | None = None) -> Totals:
        """:func:`totals_of` the given flushes, by default all of them."""
        return totals_of(self.flushes() if flushes is None else flushes)

    def timer_data(self, name: str) -> list[dict]:
        """statsd's computed stats for timer ``name``, one dict per flush that reported it."""
        return [f["timer_data"][name] for f in self.flushes() if name in f["timer_data"]]

    def wait_for(self, predicate: Callable[[list[dict]], bool], timeout: float = 10.0) -> bool:
        """Poll :meth:`flushes` until ``predicate(flushes)`` is true; False on timeout.

        Raises StatsdStartError if statsd died meanwhile (its log is in the message).
        """
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.flushes()):
                return True
            if self._proc is not None and self._proc.poll() is not None:
                raise StatsdStartError(f"statsd exited with {self._proc.returncode}\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """Send one command to statsd's admin console and return its answer.

        Commands: help, stats, counters, timers, gauges, health [up|down], config,
        delcounters/deltimers/delgauges NAME... ``counters``/``timers``/``gauges``
        answer with node's util.inspect() text, not JSON. The trailing "END" line
        is removed.
        """
        with socket.create_connection((HOST, self.mgmt_port), timeout=timeout) as sock:
            # statsd handles each TCP chunk as one command (split on spaces
            # only), so "quit" must not travel with the command. The answer is
            # written synchronously, so once some of it has arrived, a "quit"
            # is handled after all of it and closes the connection.
            sock.sendall(command.encode("ascii") + b"\n")
            chunks = [sock.recv(65536)]
            if chunks[0]:
                sock.sendall(b"quit\n")
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        answer = b"".join(chunks).decode("ascii", "replace")
        stripped = answer.rstrip("\n")
        if stripped.endswith("END"):
            answer = stripped[: -len("END")]
        return answer

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no statsd log)"
        return "statsd log ({}):\n{}".format(self.log_file, "\n".join(text.splitlines()[-lines:]))

    # -- internals ----------------------------------------------------------

    def _check_installed(self) -> str:
        node = shutil.which(self.node)
        if node is None:
            raise StatsdNotInstalled(
                f"{self.node!r} is not on PATH: the Etsy statsd tests need Node.js (>= 8), "
                f"then, from the repository root: {INSTALL_COMMAND}"
            )
        package_json = self.statsd_dir / "node_modules" / "statsd" / "package.json"
        try:
            version = json.loads(package_json.read_text(encoding="utf-8")).get("version")
        except FileNotFoundError:
            raise StatsdNotInstalled(
                f"Etsy statsd is not installed ({package_json} is missing). "
                f"From the repository root, run: {INSTALL_COMMAND}"
            ) from None
        if version != STATSD_VERSION:
            raise StatsdNotInstalled(
                f"{package_json} is statsd {version}, the tests need {STATSD_VERSION}. "
                f"From the repository root, run: {INSTALL_COMMAND}"
            )
        return node

    def _pick_ports(self) -> None:
        data_kind = socket.SOCK_DGRAM if self.protocol == "udp" else socket.SOCK_STREAM
        needed = [kind for kind, have in ((data_kind, self.port), (socket.SOCK_STREAM, self.mgmt_port)) if not have]
        if not needed:
            return
        picked = iter(_free_ports(needed))
        # A TCP probe could return the caller's own port: keep them distinct.
        while True:
            if not self.port:
                self.port = next(picked)
            if not self.mgmt_port:
                self.mgmt_port = next(picked)
            if self.port != self.mgmt_port:
                return
            self.mgmt_port = 0
            picked = iter(_free_ports([socket.SOCK_STREAM]))

    def _config(self) -> dict:
        server = "./servers/udp" if self.protocol == "udp" else "./servers/tcp"
        config = {
            "servers": [{"server": server, "address": HOST, "port": self.port}],
            "mgmt_address": HOST,
            "mgmt_port": self.mgmt_port,
            "flushInterval": self.flush_interval_ms,
            "percentThreshold": self.percent_thresholds,
            "backends": [str(CAPTURE_BACKEND)],
            "captureFile": str(self.capture_file),
            "deleteIdleStats": self.delete_idle_stats,
            "deleteGauges": self.delete_gauges,
            "automaticConfigReload": False,
            "title": False,
        }
        config.update(self.extra_config)
        return config

    def _spawn(self, node: str) -> None:
        # statsd eval()s its config file as JavaScript; JSON is valid JavaScript.
        self.config_file.write_text(json.dumps(self._config(), indent=2) + "\n", encoding="utf-8")
        with open(self.log_file, "ab") as log:
            log.write(f"--- starting statsd on {self.protocol} {self.port}, admin {self.mgmt_port}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [
                    node,
                    "--no-deprecation",
                    str(self.statsd_dir / "node_modules" / "statsd" / "stats.js"),
                    str(self.config_file),
                ],
                cwd=str(self.statsd_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise StatsdStartError(
                    f"statsd exited with {self._proc.returncode} while starting "
                    f"({self.protocol} port {self.port}, admin port {self.mgmt_port})\n{self.log_tail()}"
                )
            if self._answers():
                return
            if time.monotonic() >= deadline:
                raise StatsdStartError(
                    f"statsd did not answer on admin port {self.mgmt_port} within "
                    f"{self.start_timeout}s\n{self.log_tail()}"
                )
            time.sleep(_POLL)

    def _answers(self) -> bool:
        try:
            if not self.admin("health", timeout=1.0).startswith("health: up"):
                return False
            if self.protocol == "tcp":
                # statsd starts listening on the data port before the admin
                # port; an empty connection is harmless, check anyway.
                socket.create_connection((HOST, self.port), timeout=1.0).close()
            return True
        except OSError:
            return False

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EtsyStatsd {self.protocol}://{self.host}:{self.port} admin {self.mgmt_port} {state}>"
