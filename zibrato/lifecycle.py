"""The client's place in its process: fork, multiprocessing children, SIGTERM, interpreter exit.

Forked children (os.fork, gunicorn, uwsgi, multiprocessing's fork) reset
every client; multiprocessing children of every start method (fork, spawn,
forkserver) leave through ``os._exit``, so each client registers its close
with multiprocessing's own exit finalizers, and a SIGTERM from
``terminate()`` (Pool's ``__exit__``) first flushes, then ends the process by
SIGTERM as before. Celery's prefork children also leave through ``os._exit``,
after a signal of Celery's own. At interpreter exit every live client is closed.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import weakref
from typing import TYPE_CHECKING

# pyzmq's collector thread stops from an atexit hook registered when this is imported: imported
# before this module registers its own exit close, so that the close runs first (last-in first-out).
import zmq.utils.garbage  # noqa: F401

if TYPE_CHECKING:
    from .client import Zibrato

__all__: list[str] = []

_live_clients: weakref.WeakSet[Zibrato] = weakref.WeakSet()
_sigterm_hooked_in: int | None = None  # the pid whose SIGTERM flushes first


def _multiprocessing_child() -> bool:
    if "multiprocessing" not in sys.modules:
        return False
    import multiprocessing

    return multiprocessing.parent_process() is not None


def _flush_when_a_multiprocessing_child_ends(client: Zibrato) -> None:
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
        signal.signal(signal.SIGTERM, _close_all_then_die)
    except (ValueError, OSError):  # pragma: no cover - not the main interpreter
        return
    _sigterm_hooked_in = os.getpid()


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
    for client in list(_live_clients):
        client._after_fork_in_child()


def _close_all_at_exit() -> None:
    for client in list(_live_clients):
        with _suppressed():
            client.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)
