"""The broker, a worker and the listener run in threads of the test process.

For tests about what they *do* (exact totals, rejects, status figures), not about the console
script (flags, exit codes, signals: those stay subprocess tests). The parts are the real ones
(:class:`~zibrato.broker.Broker`, :meth:`Worker.from_config <zibrato.worker.Worker.from_config>`,
:class:`~zibrato.listen.servers.Listener`) on real ZeroMQ sockets and loopback ports; each runs
its own ``run(stop)`` in a thread, as its console script runs it in the main thread. Nothing
here starts a process, so tests built on it stay in the fast lane (``bin/test --fast``).
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from zibrato import Zibrato
from zibrato.backends.console import Console
from zibrato.broker import Broker
from zibrato.destination import Destination
from zibrato.listen.servers import ListenConfig, Listener
from zibrato.runtime import ask_status
from zibrato.worker import Worker
from zibrato.worker_config import WorkerConfig

from .daemons import free_ports, wait_until
from .warmup import WaitsForMeasurements

DAY = 86400.0  # a flush interval the tests never reach: only the stop flushes


class LogCapture(logging.Handler):
    """What a component logs, as its console script would print it (level and message)."""

    def __init__(self, logger: str) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.logger = logging.getLogger(logger)
        self._level = self.logger.level
        self.logger.addHandler(self)
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def close(self) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)
        super().close()


class Running:
    """``run(stop)`` in a thread: started, waited on, stopped; its exit code or its exception."""

    def __init__(self, name: str, run: Callable[[threading.Event], Any], logger: str) -> None:
        self.name = name
        self._run = run
        self.stop_event = threading.Event()
        self.exit_code: Any = None
        self.error: BaseException | None = None
        self.log = LogCapture(logger)
        self.thread = threading.Thread(target=self._main, name=f"test-{name}", daemon=True)

    def _main(self) -> None:
        try:
            self.exit_code = self._run(self.stop_event)
        except BaseException as error:  # re-raised in the test's thread by stop()
            self.error = error

    def start(self) -> Running:
        self.thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    @property
    def stderr(self) -> str:
        """The log so far (the name a subprocess :class:`~support.daemons.Daemon` gives it)."""
        return self.log.text

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        wait_until(lambda: text in self.log.text or not self.running, timeout, message=f"{text!r} in {self.name} log")
        if text not in self.log.text:
            raise AssertionError(f"{self.name} ended ({self.exit_code!r}, {self.error!r}):\n{self.log.text}")

    def stop(self, timeout: float = 15.0) -> Any:
        """Set the stop event (what SIGTERM does to the console script); its exit code."""
        self.stop_event.set()
        self.thread.join(timeout)
        self.log.close()
        if self.thread.is_alive():
            raise AssertionError(f"{self.name} did not stop within {timeout} s:\n{self.log.text}")
        if self.error is not None:
            raise self.error
        return self.exit_code


class Pipeline(WaitsForMeasurements):
    """A broker and one worker around ``destination``, both in threads, and a client.

    The in-process twin of :class:`support.pipeline.WorkerPipeline` (same ``status``,
    ``warm_up``, ``wait_measurements``, ``stop_worker``). ``config`` overrides
    :class:`~zibrato.worker_config.WorkerConfig` fields; ``broker``, the
    :class:`~zibrato.broker.Broker`'s keywords.
    """

    def __init__(
        self,
        destination: Destination,
        *,
        flush: float = DAY,
        warm_level: str = "info",
        broker: dict[str, Any] | None = None,
        **config: Any,
    ) -> None:
        self.destination = destination
        self.base = free_ports(4)
        self.status_port = self.base + 3
        self.broker_status_port = self.base + 2
        broker_options = {"startup_grace": 0, **(broker or {})}  # Broker's keywords (its flags' names)
        self.broker = Running(
            "broker",
            Broker(port=self.base, status_port=self.broker_status_port, **broker_options).run,
            "zibrato.broker",
        )
        config.setdefault("self_level", None)
        self.config = WorkerConfig(
            flush_interval=flush, brokers=("127.0.0.1",), port=self.base + 1, status_port=self.status_port, **config
        )
        self.warm_level = warm_level
        self.worker: Running | None = None
        self.client = Zibrato(port=self.base)
        self.baseline = 0

    def start(self) -> Pipeline:
        self.broker.start()
        wait_until(self._broker_answers, message="the broker's status")
        worker = Worker.from_config(self.destination, self.config)
        self.worker = Running("worker", worker.run, f"zibrato.{worker.name}").start()
        wait_until(self._worker_answers, message="the worker's status")
        self.warm_up()
        return self

    def _broker_answers(self) -> bool:
        return _answers(self.broker_status_port)

    def _worker_answers(self) -> bool:
        assert self.worker is not None
        if not self.worker.running:
            self.worker.stop()  # raises what it raised
            raise AssertionError(f"the worker ended: {self.worker.exit_code!r}\n{self.worker.stderr}")
        return _answers(self.status_port)

    def status(self) -> dict:
        return ask_status("127.0.0.1", self.status_port, timeout=2)

    def broker_status(self) -> dict:
        return ask_status("127.0.0.1", self.broker_status_port, timeout=2)

    def warm_up(self) -> None:
        """Send until the worker receives (ZeroMQ's slow joiner), then count what arrived."""
        sent = 0

        def received() -> bool:
            nonlocal sent
            self.client.count(self.warm_level, "warmup")
            self.client.flush()
            sent += 1
            return self.status()["measurements"] > 0

        wait_until(received, timeout=10, interval=0.05, message="worker subscription")
        seen = [-1]

        def settled() -> bool:
            now = self.status()["measurements"]
            done, seen[0] = now == seen[0] or now >= sent, now
            return done

        wait_until(settled, timeout=10, interval=0.05, message="the warm-up to settle")
        self.baseline = seen[0]

    def stop_worker(self) -> None:
        """Stop the worker as its console script stops on SIGTERM: the final flush is delivered."""
        assert self.worker is not None
        self.client.flush()
        code = self.worker.stop()
        assert code == 0, f"the worker returned {code!r}:\n{self.worker.stderr}"

    def close(self) -> None:
        self.client.close(timeout=1)
        if self.worker is not None and self.worker.running:
            self.worker.stop()
        self.broker.stop()


class ConsolePipeline(Pipeline):
    """A pipeline to a console worker writing JSON lines to memory (``--format json``)."""

    def __init__(self, **kwargs: Any) -> None:
        self.output = io.StringIO()
        super().__init__(Console(format="json", stream=self.output), **kwargs)

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.output.getvalue().splitlines() if line.startswith("{")]


class RunningListener(Running):
    """A :class:`~zibrato.listen.servers.Listener` in a thread; ``addresses`` once it is ready."""

    def __init__(self, config: ListenConfig) -> None:
        self.listener = Listener(config)
        super().__init__("listen", self.listener.run, "zibrato.listen")

    @property
    def addresses(self) -> dict[str, str]:
        """What it listens on, by input (``statsd``, ``l2met``...): ``HOST:PORT`` or a path."""
        return dict(self.listener.addresses)

    def port(self, what: str) -> int:
        return int(self.addresses[what].rpartition(":")[2])


def start_listener(config: ListenConfig) -> RunningListener:
    """A listener in a thread, ready (every address bound)."""
    running = RunningListener(config)
    running.start().wait_for_log("listen ready")
    return running


def _answers(port: int) -> bool:
    try:
        ask_status("127.0.0.1", port, timeout=0.5)
    except Exception:
        return False
    return True
