"""Run the real console scripts as subprocesses, and wait on what they print."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, message: str = "condition"
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


#: where the tests' daemons get their ports: under Linux's ephemeral range (32768-60999), which the
#: kernel hands out to bind(0) and to every outgoing connection's source port. A port picked from
#: it and handed to a daemon later could meanwhile become the source port of a connection (one test
#: opens a thousand), or, with pytest-xdist, be picked by the other worker. Each xdist worker gets
#: its own slice of the band.
PORT_BAND = (10_000, 32_000)


def _port_slice() -> tuple[int, int]:
    """This test process's slice of PORT_BAND (the whole band without xdist)."""
    low, high = PORT_BAND
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    width = (high - low) // max(1, workers)
    return low + index * width, low + (index + 1) * width


_next_port: int | None = None  # where the next search starts: it advances, so a port just freed is not reused at once


def _candidates(count: int) -> Iterator[int]:
    global _next_port
    low, high = _port_slice()
    for _ in range(2000):
        base = random.randrange(low, high - count) if _next_port is None else _next_port
        if base + count > high:
            base = low
        _next_port = base + count
        yield base


def free_ports(count: int = 1, kinds: tuple[int, ...] = (socket.SOCK_STREAM,)) -> int:
    """A base port such that base .. base+count-1 are all free on 127.0.0.1 (TCP, or each of ``kinds``).

    Taken from this process's slice of :data:`PORT_BAND`, never from the ephemeral range.
    """
    for base in _candidates(count):
        if all(_free(base + i, kind) for i in range(count) for kind in kinds):
            return base
    raise RuntimeError(f"no run of {count} free ports in {_port_slice()}")


def _free(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Daemon:
    """One console script run as a subprocess, its stdout and stderr in files."""

    def __init__(self, tmp_path: Path, script: str, *args: object, env: dict | None = None) -> None:
        self.name = f"{script}-{len(list(tmp_path.glob(script + '-*.err')))}"
        self.stdout_path = tmp_path / f"{self.name}.out"
        self.stderr_path = tmp_path / f"{self.name}.err"
        self.argv = [str(BIN / script), *map(str, args)]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> Daemon:
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=err, env=self.env, stdin=subprocess.DEVNULL)
        return self

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        # generous: a daemon starting under coverage on a loaded 2-core machine can take seconds
        wait_until(lambda: text in self.stderr or self._died(), timeout, message=f"{text!r} in {self.name} log")
        if text not in self.stderr:
            raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.stderr}")

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        stop_process(self.process)

    def _died(self) -> bool:
        return self.process.poll() is not None


def start_server(
    command: list[object], log_path: Path, ready: Callable[[], bool], what: str, timeout: float = 20.0
) -> subprocess.Popen:
    """Start a real server the tests need, its output into ``log_path``; wait until ``ready()``.

    Fails with the server's log when it exits first or is not ready within ``timeout``.
    """
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(part) for part in command], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    wait_until(lambda: process.poll() is not None or ready(), timeout, interval=0.05, message=what)
    if process.poll() is not None:
        raise RuntimeError(f"{what}: exited ({process.returncode}):\n{log_path.read_text(errors='replace')}")
    return process


def stop_process(process: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """TERM a server the tests started, wait for it to end; KILL it after ``timeout``."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_script(
    script: str, *args: object, timeout: float = 30.0, env: dict | None = None, input: str | None = None
) -> subprocess.CompletedProcess:
    """Run a console script to completion, capturing its output."""
    return subprocess.run(
        [str(BIN / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        input=input,
    )
