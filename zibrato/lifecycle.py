"""The client's place in its process: fork, multiprocessing children, signals, interpreter exit.

Forked children (os.fork, gunicorn, uwsgi, multiprocessing's fork) reset
every client; multiprocessing children of every start method (fork, spawn,
forkserver) leave through ``os._exit``, so each client registers its close
with multiprocessing's own exit finalizers, and a SIGTERM from
``terminate()`` (Pool's ``__exit__``) first flushes, then ends the process by
SIGTERM as before. Celery's prefork children also leave through ``os._exit``,
after a signal of Celery's own. At interpreter exit every live client is closed.
The sender thread blocks the application's signals, so that they reach a
thread that can act on them.

This module knows the client only through :class:`_Client` (what the hooks
call), so that it does not import :mod:`zibrato.client`, which imports it.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import weakref
from typing import Any, Protocol

# pyzmq's collector thread stops from an atexit hook registered when this is imported: imported
# before this module registers its own exit close, so that the close runs first (last-in first-out).
import zmq.utils.garbage  # noqa: F401

from .buffer import Tally

__all__ = ["track", "forget", "sender_started"]


class _Client(Protocol):
    """What these hooks use of a :class:`zibrato.client.Zibrato` (its private recording state)."""

    linger: float
    _closed: bool
    _sender: Any
    _transport: Any
    _buffer: Any
    _tally: Tally
    _publisher: Any
    _start_lock: threading.Lock
    _publish_lock: threading.Lock

    def close(self, timeout: float | None = None) -> None: ...

    def flush(self, timeout: float = 1.0) -> bool: ...

    def _use(self, recorder: Any) -> None: ...

    def _drop(self, item: Any) -> None: ...

    def _start_sender_and_record(self, item: Any) -> None: ...

    def _stop(self, sender: Any, timeout: float) -> None: ...


_live_clients: weakref.WeakSet[_Client] = weakref.WeakSet()


def track(client: _Client) -> None:
    """A new client: closed at interpreter exit, reset in a forked child, flushed by SIGTERM's hook."""
    _live_clients.add(client)


def forget(client: _Client) -> None:
    """A closed client: nothing left to do for it."""
    _live_clients.discard(client)


def sender_started(client: _Client) -> None:
    """The client's sender runs: in a multiprocessing or Celery pool child, flush it before the child ends."""
    _flush_when_a_multiprocessing_child_ends(client)
    _flush_when_a_celery_pool_child_ends()


_sigterm_hooked_in: int | None = None  # the pid whose SIGTERM flushes first


def _multiprocessing_child() -> bool:
    if "multiprocessing" not in sys.modules:
        return False
    import multiprocessing

    return multiprocessing.parent_process() is not None


def _flush_when_a_multiprocessing_child_ends(client: _Client) -> None:
    if not _multiprocessing_child():
        return
    from multiprocessing import util

    util.Finalize(client, client.close, exitpriority=100)
    _flush_on_sigterm()


def _flush_when_a_celery_pool_child_ends() -> None:
    """Celery's prefork children (billiard's pool) leave by ``os._exit`` right after Celery's
    ``worker_process_shutdown`` signal: no atexit hook, no multiprocessing finalizer runs. Where
    Celery is already imported, that signal flushes every client (once per process, whichever
    client started first), so a recycled child loses nothing, whatever records through the client
    (``z.count``, ``zibrato.otel``'s instruments) and with or without ``integrations.celery``."""
    signals = sys.modules.get("celery.signals")
    if signals is None:
        return
    with _suppressed():
        signals.worker_process_shutdown.connect(_flush_all_as_a_celery_child_ends, weak=False, dispatch_uid=__name__)


_CELERY_CHILD_FLUSH_TIMEOUT = 2.0  # seconds each client may take to hand over a leaving child's measurements


def _flush_all_as_a_celery_child_ends(**extra: object) -> None:
    for client in list(_live_clients):
        with _suppressed():
            client.flush(_CELERY_CHILD_FLUSH_TIMEOUT)


def _flush_on_sigterm() -> None:
    """terminate() sends SIGTERM, whose default ends the process at once: flush, then end so."""
    global _sigterm_hooked_in
    if _sigterm_hooked_in == os.getpid() or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # the application's own handler: leave it alone
        if signal.getsignal(signal.SIGTERM) is not _close_all_then_die:  # (inherited through fork: ours)
            signal.signal(signal.SIGTERM, _close_all_then_die)
    except (ValueError, OSError):  # pragma: no cover - not the main interpreter
        return
    _sigterm_hooked_in = os.getpid()
    _MainThreadKick.start_here()


class _MainThreadKick(threading.Thread):
    """Makes sure a SIGTERM that CPython noted but the main thread never looked at still runs its handler.

    A Python signal handler runs when the main thread next checks for
    signals. A SIGTERM that lands while the main thread is between its last
    check and a blocking call that only an interrupting signal ends (a pool
    worker about to wait on its task queue's lock, ``sem_wait``) is noted and
    never handled: the process outlives ``Pool.terminate()``, whose join then
    waits forever. Without a handler the kernel would have ended the process,
    so the handler must not leave it alive. CPython writes each noted signal
    to the wakeup fd (``signal.set_wakeup_fd``); this thread reads it and,
    while the handler has not started (it sets SIGTERM back to the default
    first thing), sends SIGTERM to the main thread itself, which interrupts
    the blocking call. Only where nothing else owns the wakeup fd.
    """

    running: _MainThreadKick | None = None

    def __init__(self, read_fd: int, write_fd: int) -> None:
        super().__init__(name="zibrato-sigterm", daemon=True)
        self.read_fd, self.write_fd = read_fd, write_fd
        self.main = threading.main_thread().ident

    @classmethod
    def start_here(cls) -> None:
        """Own the wakeup fd and start the thread (called in the main thread, once per process)."""
        if cls.running is not None:
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except (ValueError, OSError):  # pragma: no cover - not the main thread or interpreter
            previous = -2
        if previous != -1:  # someone else's (asyncio's...): give it back, do without
            if previous >= 0:
                signal.set_wakeup_fd(previous)
            os.close(read_fd)
            os.close(write_fd)
            return
        cls.running = kick = cls(read_fd, write_fd)
        kick.start()

    def run(self) -> None:
        _leave_signals_to_the_main_thread()
        try:
            while True:
                noted = os.read(self.read_fd, 64)
                if not noted:  # pragma: no cover - the write end closed
                    return
                if signal.SIGTERM in noted:
                    self._until_handled()
        except OSError:  # pragma: no cover - the pipe closed under us (fork, exit)
            return

    def _until_handled(self) -> None:
        for _ in range(KICKS):
            time.sleep(KICK_AFTER)
            if signal.getsignal(signal.SIGTERM) is not _close_all_then_die or self.main is None:
                return  # the handler has started (or the application took SIGTERM over)
            signal.pthread_kill(self.main, signal.SIGTERM)

    @classmethod
    def forget_in_child(cls) -> None:
        """After fork: the parent's pipe is not this process's (a child's SIGTERM must not kick the parent)."""
        kick = cls.running
        if kick is None:
            return
        cls.running = None
        with _suppressed():
            previous = signal.set_wakeup_fd(-1)
            if previous != kick.write_fd:  # pragma: no cover - someone else's since: theirs again
                signal.set_wakeup_fd(previous)
        with _suppressed():  # whatever the wakeup fd is now, the inherited write end goes nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, kick.write_fd)
            os.close(devnull)
        with _suppressed():
            os.close(kick.read_fd)


#: how long the main thread has to start the SIGTERM handler before it is sent SIGTERM itself, and how often
KICK_AFTER, KICKS = 0.1, 50


def _close_all_then_die(signum: int, frame: object) -> None:
    """The SIGTERM handler: runs on top of whatever line the main thread was at, close()
    and flush() included, so it takes no lock that line may hold (Sender.stop takes none)."""
    signal.signal(signum, signal.SIG_DFL)
    for client in list(_live_clients):
        with _suppressed():  # the main thread may be inside close(): stop the same sender
            client._closed = True
            client._use(client._drop)
            client._stop(client._sender, client.linger + 0.5)
    os.kill(os.getpid(), signum)


class _suppressed:
    """Never fail an exit path."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> bool:
        return True


def _after_fork_in_child() -> None:
    global _sigterm_hooked_in
    _sigterm_hooked_in = None
    _MainThreadKick.forget_in_child()
    for client in list(_live_clients):
        _reset_in_child(client)


def _reset_in_child(client: _Client) -> None:
    """The child inherits a copy of the parent's queue and no sender thread.

    The parent still sends its own queue, so the child forgets it (no double
    counting) and starts its own sender and sockets at its first measurement.
    Nothing here may log or take the inherited locks.
    """
    client._buffer.reset()
    client._tally = Tally()
    client._start_lock = threading.Lock()
    client._publish_lock = threading.Lock()
    client._sender = client._publisher = None
    client._transport = client._transport.fork_child()
    if not client._closed:
        client._use(client._start_sender_and_record)


def _close_all_at_exit() -> None:
    for client in list(_live_clients):
        with _suppressed():
            client.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)


#: Asynchronous signals an application may handle (or die of) in its main thread.
_APPLICATION_SIGNALS = frozenset(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGWINCH")
    if hasattr(signal, name)
)


def _leave_signals_to_the_main_thread() -> None:
    """Block the application's signals in the sender thread (called by it, first thing).

    The kernel delivers a process-directed signal to any thread that does not
    block it. Landing on the sender, a SIGTERM would only set CPython's flag,
    and a main thread asleep in ``time.sleep(60)`` would run its handler a
    minute late (``Pool.terminate()`` then hangs on a busy child). Blocked
    here, every such signal goes to a thread that can act on it.
    """
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, _APPLICATION_SIGNALS)
    except (AttributeError, OSError, ValueError):  # pragma: no cover - no pthread_sigmask (Windows)
        pass
