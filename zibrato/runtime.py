"""Plumbing every daemon shares: logging, stop signals, rate-limited warnings, status replies."""

from __future__ import annotations

import base64
import json
import logging
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable

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
    SECRETS.install()


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

    def __init__(
        self, logger: logging.Logger, every: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger, self.every, self.clock = logger, every, clock
        self._last = -float("inf")
        self._suppressed = 0
        # Threads (an HTTP server's connections) report at once: the first claims the line before
        # logging, else two could both see "nothing logged yet" while one writes. Reentrant: the
        # claim is a few assignments, and a signal handler that logs must not wait on itself.
        self._claim = threading.RLock()

    def warning(self, message: str, *args: object) -> None:
        with self._claim:
            now = self.clock()
            if now - self._last < self.every:
                self._suppressed += 1
                return
            suppressed, self._last, self._suppressed = self._suppressed, now, 0
        if suppressed:
            message += f" (and {suppressed} more like it since the last report)"
        self.logger.warning(message, *args)


def bind_status(context: zmq.Context, host: str, port: int | None) -> zmq.Socket | None:
    """A REP socket answering STATUS with JSON figures; None when no port is configured.

    ``MAXMSGSIZE`` makes libzmq drop a peer that sends a huge frame; junk that is
    not ZMTP never gets past libzmq's handshake. When the bind fails the socket
    is closed before the error propagates: an open socket would make the
    daemon's ``context.term()`` wait forever (a port in use must exit at once).
    """
    if not port:
        return None
    socket = context.socket(zmq.REP)
    try:
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, 1024)
        socket.setsockopt(zmq.SNDTIMEO, 1000)
        socket.bind(f"tcp://{host}:{port}")
    except BaseException:
        socket.close(linger=0)
        raise
    return socket


def answer_status(socket: zmq.Socket, figures: Callable[[], dict]) -> None:
    """Answer one pending request, whatever it is; never raise (any local user can connect).

    A request of several frames, or anything but STATUS, gets an error
    object; a figures() that fails answers its error. The reply passes through
    :data:`SECRETS` so that no credential reaches `zibrato status`.
    """
    try:
        request = socket.recv_multipart(zmq.NOBLOCK)
    except zmq.Again:
        return
    except zmq.ZMQError as error:  # pragma: no cover - libzmq refuses a broken peer first
        logging.getLogger("zibrato").warning("status request failed: %s", error)
        return
    if request == [STATUS_REQUEST]:
        try:
            reply = figures()
        except Exception as error:  # pragma: no cover - a figures() bug must not stop a daemon
            logging.getLogger("zibrato").exception("status figures failed")
            reply = {"error": f"figures failed: {error.__class__.__name__}", "healthy": False}
    else:
        reply = {"error": "unknown request; send the single frame STATUS"}
    try:
        socket.send(SECRETS.redact(json.dumps(reply, default=str)).encode(), zmq.NOBLOCK)
    except zmq.ZMQError:  # the peer went away: nothing to answer
        pass


class StatusServer:
    """Answers `zibrato status` from a thread of its own, so that a busy daemon still answers at once.

    The socket is bound in the constructor (a port in use is a start-up
    error) and used only by the thread from then on.
    """

    def __init__(self, context: zmq.Context, host: str, port: int | None, figures: Callable[[], dict]) -> None:
        self.socket = bind_status(context, host, port)
        self.figures = figures
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.socket is None:
            return
        self._thread = threading.Thread(target=self._serve, name="zibrato-status", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        socket = self.socket
        if socket is None:  # start() runs this thread only with a socket
            return
        try:
            while not self._stop.is_set():
                if socket.poll(100):
                    answer_status(socket, self.figures)
        finally:
            socket.close(linger=0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        elif self.socket is not None:
            self.socket.close(linger=0)


def ask_status(host: str, port: int, timeout: float = 2.0) -> dict:
    """Ask a running daemon for its figures (raises TimeoutError when it does not answer)."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    if not timeout > 0:  # also NaN
        raise ValueError("timeout must be a positive number of seconds")
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


class Secrets:
    """Every form of a credential this process builds, redacted from logs and status replies.

    A token is registered with :meth:`add`; an HTTP Basic credential with
    :meth:`add_basic`, which also registers the ``base64(user:token)`` that goes
    into the Authorization header (a server echoing that header must not leak it).
    :meth:`install` adds a logging filter that redacts every record.
    """

    def __init__(self) -> None:
        self._forms: set[str] = set()

    def add(self, secret: str) -> None:
        if not secret or len(secret) < 4:  # a tiny "secret" would redact ordinary words
            return
        raw = secret.encode("utf-8", "replace")
        self._forms.update(
            {
                secret,
                repr(secret)[1:-1],
                json.dumps(secret)[1:-1],
                urllib.parse.quote(secret, safe=""),
                base64.b64encode(raw).decode(),
            }
        )

    def add_basic(self, user: str, secret: str) -> None:
        self.add(secret)
        pair = f"{user}:{secret}".encode("latin-1", "replace")
        self._forms.add(base64.b64encode(pair).decode())
        self._forms.add(base64.b64encode(f"{user}:{secret}".encode("utf-8", "replace")).decode())

    def redact(self, text: str) -> str:
        for form in sorted(self._forms, key=len, reverse=True):
            if form in text:
                text = text.replace(form, "<redacted>")
        return text

    def install(self) -> None:
        """Redact every log record of this process (message, arguments and traceback)."""
        secrets = self

        class _Redact(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                if secrets._forms:
                    record.msg = secrets.redact(record.getMessage())
                    record.args = None
                    if record.exc_info and not record.exc_text:
                        record.exc_text = logging.Formatter().formatException(record.exc_info)
                    if record.exc_text:
                        record.exc_text = secrets.redact(record.exc_text)
                return True

        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, _Redact) for f in handler.filters):
                handler.addFilter(_Redact())


#: the process's credentials (see :class:`Secrets`)
SECRETS = Secrets()


def printable(text: object, limit: int = 200) -> str:
    """Text from outside (the wire, a server's answer) made safe for one log line.

    Characters that are not printable (newlines, control characters, Unicode
    line separators) are escaped, so ``\\n`` can never forge a line, and the
    result is cut to ``limit`` characters with a marker saying how much was
    left out. The one helper every daemon uses for such text.
    """
    text = str(text)
    cut = len(text) - limit
    head = text[:limit] if cut > 0 else text
    if not head.isprintable():
        head = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in head)[:limit]
    return head + (f"...(+{cut} characters)" if cut > 0 else "")


def printable_repr(text: str, limit: int = 200) -> str:
    return "'" + printable(text, limit).replace("'", "\\'") + "'"
