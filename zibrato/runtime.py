"""Plumbing every daemon shares: logging, stop signals, rate-limited warnings, status replies."""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from typing import Callable

import zmq

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
STATUS_REQUEST = b"STATUS"


def setup_logging(verbose: bool = False) -> None:
    """Daemons log to stderr (supervisord captures it), one line per event."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def install_stop_handlers(stop: threading.Event) -> None:
    """TERM, INT and QUIT (supervisord's configured stopsignal) all mean: finish and exit."""
    log = logging.getLogger("zibrato")

    def handler(signum: int, frame: object) -> None:
        if not stop.is_set():
            log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


class RateLimitedLog:
    """Logs the first occurrence, then at most one summary line per ``every`` seconds.

    A flood of malformed messages must be visible in the logs without filling them.
    """

    def __init__(self, logger: logging.Logger, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.every, self.clock = logger, every, clock
        self._last = -float("inf")
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = self.clock()
        if now - self._last < self.every:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" (and {self._suppressed} more like it since the last report)"
        self.logger.warning(message, *args)
        self._last, self._suppressed = now, 0


def bind_status(context: zmq.Context, host: str, port: int | None) -> zmq.Socket | None:
    """A REP socket answering STATUS with JSON figures; None when no port is configured."""
    if not port:
        return None
    socket = context.socket(zmq.REP)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.MAXMSGSIZE, 1024)
    socket.bind(f"tcp://{host}:{port}")
    return socket


def answer_status(socket: zmq.Socket, figures: Callable[[], dict]) -> None:
    """Answer one pending request (anything but STATUS gets an error object)."""
    try:
        request = socket.recv(zmq.NOBLOCK)
    except zmq.Again:
        return
    reply = figures() if request == STATUS_REQUEST else {"error": "unknown request; send STATUS"}
    socket.send(json.dumps(reply, default=str).encode())


def ask_status(host: str, port: int, timeout: float = 2.0) -> dict:
    """Ask a running daemon for its figures (raises TimeoutError when it does not answer)."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(f"tcp://{host}:{port}")
        socket.send(STATUS_REQUEST)
        if not socket.poll(int(timeout * 1000)):
            raise TimeoutError(f"no answer from tcp://{host}:{port} within {timeout:g} s")
        return json.loads(socket.recv())
    finally:
        socket.close()


def describe_bind_error(endpoint: str, error: zmq.ZMQError) -> str:
    if error.errno == zmq.EADDRINUSE:
        return f"cannot bind {endpoint}: address already in use (is another Zibrato daemon running?)"
    return f"cannot bind {endpoint}: {error.strerror}"
