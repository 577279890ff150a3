"""The README's "Writing a new worker" example, as printed, works: its --help, a delivery, and a
retry that honours the stop deadline."""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from expecter import expect

from support.rig import Rig
from zibrato.delivery import Backoff

README = Path(__file__).resolve().parents[1] / "README.md"


def example_module(tmp_path: Path) -> Path:
    """The README's zibrato_carbon.py, written out as a file."""
    [code] = re.findall(r"```python\n(# zibrato_carbon\.py\n.*?)```", README.read_text(), re.S)
    path = tmp_path / "zibrato_carbon.py"
    path.write_text(code)
    return path


def load(tmp_path: Path):
    spec = importlib.util.spec_from_file_location("zibrato_carbon", example_module(tmp_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_worker_command_explains_its_flags(tmp_path):
    example_module(tmp_path)

    shown = subprocess.run(
        [sys.executable, "-c", "import zibrato_carbon; zibrato_carbon.main()", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )

    expect(shown.returncode) == 0
    expect(shown.stdout).contains("Usage: zibrato-carbon")
    expect(shown.stdout).contains("Deliver each flush to Graphite's carbon")
    for flag in ("--levels", "--flush", "--percentiles", "--drop", "--carbon-port", "--retry-delay", "--config"):
        expect(shown.stdout).contains(flag)


def test_the_example_destination_delivers_graphite_lines(tmp_path):
    module = load(tmp_path)
    with socket.socket() as carbon:
        carbon.bind(("127.0.0.1", 0))
        carbon.listen(1)
        carbon.settimeout(10)
        rig = Rig(module.Carbon(carbon.getsockname()))
        rig.send(1700000000.0, [{"name": "signup", "value": 3}, {"name": "db.query", "mean": 0.25, "p99": 0.5}])
        rig.stop(1.0)
        connection, _ = carbon.accept()
        with connection:
            connection.settimeout(10)
            received = b""
            while chunk := connection.recv(4096):
                received += chunk

    expect(received.decode().splitlines()) == [
        "signup.value 3 1700000000",
        "db.query.mean 0.25 1700000000",
        "db.query.p99 0.5 1700000000",
    ]


def test_the_example_retries_while_carbon_is_down_and_gives_up_by_the_stop_deadline(tmp_path, unused_port):
    module = load(tmp_path)
    attempts = []

    class Counted(module.Carbon):
        def post(self, interval):
            attempts.append(time.monotonic())
            super().post(interval)

    rig = Rig(Counted(("127.0.0.1", unused_port)), backoff=Backoff(0.3, 10))
    rig.deliver(1700000000.0, [{"name": "lost", "value": 1}])
    deadline = time.monotonic() + 5
    while len(attempts) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    expect(len(attempts)) == 2  # refused, retried after the backoff
    stopped = time.monotonic()
    expect(rig.stop(window=1.0)) < 1.2
    # One attempt per backoff step (0.3-0.6 s fits the window, the next is shortened once): no storm.
    expect(len([t for t in attempts if t > stopped])) <= 2
    expect(min(b - a for a, b in zip(attempts, attempts[1:]))) >= 0.1
    expect(rig.queue.counts["cut_off_intervals"]) == 1
    expect(rig.queue.last_error).contains("cannot send to carbon")
