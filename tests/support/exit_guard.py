"""A pytest plugin: the test process ends after the session, even when a thread would keep it.

A failing test can leave a non-daemon thread behind (a server loop its
tear-down never reached, a client thread waiting on a socket), and Python
then waits for it at exit forever: the run has printed its summary but never
returns, and CI waits until its own limit. Once pytest is done
(``pytest_unconfigure``), a daemon thread gives the interpreter
``ZIBRATO_TEST_EXIT_GRACE`` seconds (30 by default) to end on its own. If it
has not, it names the threads still alive, prints each one's stack, saves
coverage's data (coverage.py writes it at exit, which never comes) and ends
the process with the session's exit status, or 1 if the session passed: a
leftover thread is a bug to find, not a pass.

Registered by ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import os
import sys
import threading
import traceback

import pytest

#: seconds the interpreter has to end after the session before the guard ends it
GRACE = float(os.environ.get("ZIBRATO_TEST_EXIT_GRACE", "30"))

_status: dict[str, int] = {"exit": 0}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _status["exit"] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    # In pytest-xdist's workers too: execnet ends a stuck worker after a while, but says nothing of why.
    threading.Thread(target=_end_if_stuck, args=(GRACE,), name="zibrato-test-exit-guard", daemon=True).start()


def _end_if_stuck(grace: float) -> None:
    ended = threading.Event()
    if ended.wait(grace):  # pragma: no cover - never set: the interpreter ends this daemon thread first
        return
    alive = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    names = ", ".join(f"{t.name!r}" for t in alive) or "none (the main thread itself)"
    print(
        f"\ntests: the process did not end {grace:g} s after the session; threads still alive: {names}. "
        "Their stacks follow; ending the process (a leftover thread is a test's bug).",
        file=sys.stderr,
        flush=True,
    )
    frames = sys._current_frames()
    for thread in alive:
        frame = frames.get(thread.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (no stack)\n"
        print(f"thread {thread.name!r}, most recent call last:\n{stack}", file=sys.stderr, flush=True)
    _save_coverage()
    os._exit(_status["exit"] or 1)


def _save_coverage() -> None:
    """Write coverage.py's data now: os._exit skips the atexit hook that would."""
    try:
        import coverage
    except ImportError:  # pragma: no cover - the gate always runs under coverage
        return
    current = coverage.Coverage.current()
    if current is None:
        return
    try:
        current.stop()
        current.save()
    except Exception as error:  # pragma: no cover - best effort: the exit status still says it failed
        print(f"tests: could not save coverage data: {error}", file=sys.stderr, flush=True)
