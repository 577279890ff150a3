"""A real broker and one real worker on free ports, with a client: the end-to-end fixture."""

from __future__ import annotations

import signal
from pathlib import Path

from zibrato import Zibrato
from zibrato.runtime import ask_status

from .daemons import Daemon, free_ports, wait_until
from .warmup import WaitsForMeasurements, pipelines

__all__ = ["WorkerPipeline", "RemoteWritePipeline", "pipelines"]

DAY = 86400  # a flush interval the tests never reach: only the stop signal flushes


class WorkerPipeline(WaitsForMeasurements):
    """``zibrato-broker`` plus one worker script with a status port; subclasses name the worker.

    Tests wait on the worker's own figures (its status port), never on sleeps.
    """

    script = "zibrato-console"
    ready_log = "console worker"

    def __init__(
        self,
        tmp_path: Path,
        *worker_args: object,
        flush: float = DAY,
        env: dict | None = None,
        warm_level: str = "info",
        broker_args: tuple = (),
    ) -> None:
        self.tmp_path = tmp_path
        self.base = free_ports(4)
        self.status_port = self.base + 3
        self.broker = Daemon(tmp_path, "zibrato-broker", "--port", self.base, "--startup-grace", "0.1", *broker_args)
        self.worker_args = [
            "--port",
            self.base + 1,
            "--flush",
            flush,
            "--status-port",
            self.status_port,
            "--no-self-metrics",
            *worker_args,
        ]
        self.env, self.warm_level = env, warm_level
        self.worker: Daemon | None = None
        self.client = Zibrato(port=self.base)
        self.baseline = 0

    def worker_command(self) -> list:
        """The worker's arguments; override to add what is known only at start."""
        return self.worker_args

    def start(self) -> WorkerPipeline:
        # Both start at once, so their interpreters start side by side: the worker's SUB socket
        # connects whenever the broker binds (ZeroMQ reconnects), and the warm-up waits for it.
        self.broker.start()
        self.worker = Daemon(self.tmp_path, self.script, *self.worker_command(), env=self.env)
        self.worker.start()
        self.broker.wait_for_log("broker ready")
        self.worker.wait_for_log(self.ready_log)
        self.warm_up()
        return self

    def status(self) -> dict:
        return ask_status("127.0.0.1", self.status_port, timeout=2)

    def broker_status(self) -> dict:
        return ask_status("127.0.0.1", self.base + 2, timeout=2)

    def warm_up(self) -> None:
        """Send until the worker receives (its subscription is live: ZeroMQ's slow joiner),
        then wait for every warm-up sent, so that :attr:`baseline` is exact."""
        sent = 0

        def received() -> bool:
            nonlocal sent
            self.client.count(self.warm_level, "warmup")
            self.client.flush()
            sent += 1
            return self.status()["measurements"] > 0

        wait_until(received, timeout=10, interval=0.05, message="worker subscription")
        if self.status()["measurements"] >= sent:
            self.baseline = sent
            return
        # A warm-up sent before the subscription was live is lost for good (ZeroMQ's slow
        # joiner), so "every warm-up" may never come: count what arrived once it settles.
        seen = [-1]

        def settled() -> bool:
            now = self.status()["measurements"]
            done, seen[0] = now == seen[0], now
            return done

        wait_until(settled, timeout=10, interval=0.15, message="the warm-up to settle")
        self.baseline = seen[0]

    def stop_worker(self, signum: int = signal.SIGTERM) -> None:
        self.client.flush()
        self.worker.signal(signum)
        code = self.worker.wait(15)
        assert code == 0, f"{self.script} exited {code}:\n{self.worker.stderr}"

    def close(self) -> None:
        self.client.close(timeout=1)
        if self.worker is not None:
            self.worker.stop()
        self.broker.stop()


# --- the real console script writing to a remote write receiver -----------------------------


class RemoteWritePipeline(WorkerPipeline):
    """``zibrato-remote-write`` posting to ``url`` (a real Prometheus or VictoriaMetrics)."""

    script = "zibrato-remote-write"
    ready_log = "remote-write worker"

    def __init__(self, tmp_path, url, *args, **kwargs):
        super().__init__(tmp_path, "--url", url, *args, **kwargs)

    def restart_worker(self) -> None:
        """Stop the worker (its final flush is delivered) and start a new one: counters start again."""
        self.stop_worker()
        self.worker = Daemon(self.tmp_path, self.script, *self.worker_command(), env=self.env)
        self.worker.start().wait_for_log(self.ready_log)
        self.warm_up()
