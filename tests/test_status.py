"""`zibrato status` against a worker that turns unhealthy and recovers: exit codes 0, 1, 0.

The worker is a real :class:`zibrato.worker.Worker` run in a thread, whose
destination is stuck until the test lets it go, so that its delivery backlog
fills; `zibrato status` is the real console script in a subprocess.
"""

from __future__ import annotations

import subprocess
import threading

from expecter import expect

from support.daemons import free_ports, run_script, wait_until
from zibrato.destination import Destination, Interval
from zibrato.runtime import ask_status
from zibrato.worker import Worker
from zibrato.worker_config import WorkerConfig


class Stuck(Destination):
    """A destination that answers only once ``unstuck`` is set (every flush queues an interval)."""

    name = "stuck"

    def __init__(self) -> None:
        self.unstuck = threading.Event()

    def post(self, interval: Interval) -> None:
        self.unstuck.wait(30)


def status(port: int) -> subprocess.CompletedProcess:
    return run_script("zibrato", "status", "--port", port, "--timeout", "2")


def test_status_exits_1_naming_the_problem_while_delivery_is_stuck_and_0_once_it_recovers():
    port = free_ports(2)
    destination = Stuck()
    worker = Worker(
        destination,
        WorkerConfig(port=port, flush_interval=0.04, max_backlog=200, status_port=port + 1, self_level=None),
    )
    worker.intake.figures["last_received"] = 2e9  # the broker is not the subject here: never "silent"
    stop = threading.Event()
    running = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    running.start()
    try:
        wait_until(
            lambda: ask_status("127.0.0.1", port + 1)["backlog"] > 100, timeout=20, message="the backlog over half full"
        )

        stuck = status(port + 1)

        expect(stuck.returncode) == 1
        expect(stuck.stdout).contains("stuck UNHEALTHY")
        expect(stuck.stdout).contains("delivery backlog")

        destination.unstuck.set()
        wait_until(
            lambda: ask_status("127.0.0.1", port + 1)["backlog"] <= 100, timeout=20, message="the backlog delivered"
        )
        recovered = status(port + 1)

        expect(recovered.returncode) == 0
        expect(recovered.stdout).contains("stuck OK")
    finally:
        destination.unstuck.set()
        stop.set()
        running.join(15)
    expect(running.is_alive()) == False
