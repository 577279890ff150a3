"""The two test lanes: which tests start processes (the ``daemon`` marker), derived, and a guard.

``bin/test --fast`` runs ``-m "not daemon"``: the tests that start no process, real server or
fork, in under a minute. Nobody lists those tests by hand, so the lane cannot drift:

* :class:`SpawnReader` reads a test's code (its function, every fixture it uses, and, transitively,
  every function, class and module of ``tests/`` they name) for a way to start a process:
  ``subprocess``, ``os.fork``/``posix_spawn``/``system``, ``multiprocessing``, a process pool,
  asyncio's subprocesses, or any helper of ``tests/support`` built on them (``Daemon``,
  ``start_server``, ``run_script``, the pipelines...), or declared with :func:`starts_process`
  (a library starts the process). ``conftest.py`` marks each such test ``daemon``. The
  reading is conservative: a test that merely names ``subprocess.run`` is marked.
* :func:`examples` gives a property test (hypothesis) its number of examples: all of them in
  the gate, a fifth in the fast lane, which ``bin/test --fast`` announces through
  ``ZIBRATO_FAST_LANE=1``.
* :class:`SpawnGuard` catches what reading missed (a process started inside ``zibrato`` or a
  library): while a test that is not marked ``daemon`` runs, starting a process fails it with
  a message that says how to mark it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import multiprocessing
import multiprocessing.process
import os
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

TESTS = Path(__file__).resolve().parent.parent

#: module -> the names whose use starts a process
_SPAWNING_ATTRIBUTES: dict[types.ModuleType, frozenset[str]] = {
    subprocess: frozenset({"Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}),
    os: frozenset(
        {"fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "popen"}
        | {name for name in dir(os) if name.startswith("spawn")}
    ),
    multiprocessing: frozenset({"Process", "Pool", "get_context", "set_start_method"}),
    concurrent.futures: frozenset({"ProcessPoolExecutor"}),
    asyncio: frozenset({"create_subprocess_exec", "create_subprocess_shell"}),
}
#: the same callables imported by name (``from subprocess import Popen``); compared by equality,
#: since ``multiprocessing.Pool`` and ``get_context`` are bound methods made anew at each lookup
_SPAWNING_OBJECTS = [
    getattr(module, name) for module, names in _SPAWNING_ATTRIBUTES.items() for name in names if hasattr(module, name)
]
#: audit events (PEP 578) raised when a process starts
SPAWN_EVENTS = frozenset({"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.system"})

HOW_TO_MARK = (
    "start it through a fixture or helper of tests/ (the `daemon` marker is derived from the code a test uses), "
    "or mark the test @pytest.mark.daemon"
)


#: set by ``bin/test --fast``; the gate (``bin/test``, CI) never sets it
FAST_LANE = os.environ.get("ZIBRATO_FAST_LANE") == "1"


def examples(full: int) -> int:
    """How many examples a property test tries: ``full`` in the gate, which hunts rare cases, a
    fifth (at least 20) in the fast lane, which answers quickly while you work. Both run every
    property and assert the same; only the gate's search is as deep as the test asks."""
    return max(20, full // 5) if FAST_LANE else full


def starts_process(helper: F) -> F:
    """Declares a helper of tests/ that starts a process through a library the reading does not
    follow (selenium starting chromedriver): every test that uses the helper is marked ``daemon``."""
    helper.__starts_process__ = True  # type: ignore[attr-defined]
    return helper


def _in_tests(obj: object) -> bool:
    """Defined in a file under tests/: code the reading follows (zibrato's own code it does not)."""
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    return isinstance(name, str) and _module_in_tests(name)


@functools.cache
def _module_in_tests(name: str) -> bool:
    path = getattr(sys.modules.get(name), "__file__", None)
    return path is not None and Path(path).resolve().is_relative_to(TESTS)


class SpawnReader:
    """Answers "can running this code start a process?" by reading bytecode names; cached."""

    def __init__(self) -> None:
        self._verdicts: dict[int, bool] = {}
        self._keep: list[object] = []  # keeps the ids in _verdicts meaningful

    def spawns(self, functions: Iterable[object]) -> bool:
        return any(self._object(function) for function in functions)

    def _object(self, obj: object) -> bool:
        key = id(obj)
        if key in self._verdicts:
            return self._verdicts[key]
        self._verdicts[key] = False  # a cycle (recursion, mutual references) adds nothing
        self._keep.append(obj)
        verdict = self._read(obj)
        self._verdicts[key] = verdict
        return verdict

    def _read(self, obj: object) -> bool:
        if getattr(obj, "__starts_process__", False) is True:
            return True
        bound = isinstance(obj, types.MethodType)
        if any(obj is spawner or (bound and obj == spawner) for spawner in _SPAWNING_OBJECTS):
            return True
        if isinstance(obj, (staticmethod, classmethod)):
            return self._object(obj.__func__)
        if isinstance(obj, property):
            return any(self._object(f) for f in (obj.fget, obj.fset) if f is not None)
        wrapped = getattr(obj, "__wrapped__", None)  # functools.wraps, pytest's fixture wrapper
        if wrapped is not None and self._object(wrapped):
            return True
        if isinstance(obj, types.FunctionType):
            return _in_tests(obj) and self._code(obj.__code__, obj.__globals__)
        if isinstance(obj, type):
            return _in_tests(obj) and any(
                self._object(member)
                for klass in obj.__mro__
                if _in_tests(klass)
                for member in vars(klass).values()
                if not isinstance(member, (str, int, float, bytes, tuple, frozenset, type(None)))
            )
        return False

    def _code(self, code: types.CodeType, namespace: dict) -> bool:
        names = set(code.co_names)
        for name in names:
            # a global, or a module imported inside the function (``import subprocess`` there
            # leaves a local variable, but the module's dotted name in co_names)
            target = namespace.get(name, sys.modules.get(name))
            if target is None:
                continue
            if isinstance(target, types.ModuleType):
                if names & _SPAWNING_ATTRIBUTES.get(target, frozenset()):
                    return True
                if _in_tests(target) and any(self._object(getattr(target, n)) for n in names if hasattr(target, n)):
                    return True
            elif self._object(target):
                return True
        return any(self._code(const, namespace) for const in code.co_consts if isinstance(const, types.CodeType))


class SpawnGuard:
    """Fails a test not marked ``daemon`` that starts a process anyway (an audit hook, PEP 578).

    :meth:`watch` arms it for one test; a process started meanwhile, from any thread, raises
    :class:`ProcessInFastLane` where it starts and is remembered, so :meth:`release` reports it
    even when the thread that tried swallowed the error.
    """

    def __init__(self) -> None:
        self.test: str | None = None
        self.caught: list[str] = []
        self._lock = threading.Lock()
        sys.addaudithook(self._audit)  # cannot be removed: it does nothing while no test is watched
        start = multiprocessing.process.BaseProcess.start  # spawn/forkserver start without os.fork

        def guarded_start(process: multiprocessing.process.BaseProcess) -> None:
            self._audit("multiprocessing.Process.start", (process.name,))
            start(process)

        multiprocessing.process.BaseProcess.start = guarded_start  # type: ignore[method-assign]

    def watch(self, test: str) -> None:
        with self._lock:
            self.test, self.caught = test, []

    def release(self) -> list[str]:
        """Stop watching; what the test started that it should not have."""
        with self._lock:
            caught, self.test, self.caught = self.caught, None, []
        return caught

    def _audit(self, event: str, args: tuple) -> None:
        if self.test is None or (event not in SPAWN_EVENTS and not event.startswith("multiprocessing.")):
            return
        what = f"{event} {_describe(args)}".strip()
        with self._lock:
            if self.test is None:
                return
            self.caught.append(what)
            test = self.test
        raise ProcessInFastLane(message(test, [what]))


class ProcessInFastLane(RuntimeError):
    """A test outside the ``daemon`` lane tried to start a process."""


def message(test: str, caught: list[str]) -> str:
    return (
        f"{test} started a process ({'; '.join(caught)}) but is not marked `daemon`, "
        f"so the fast lane (bin/test --fast) would run it: {HOW_TO_MARK}"
    )


def _describe(args: tuple) -> str:
    if len(args) >= 2 and isinstance(args[1], (list, tuple)):  # subprocess.Popen(executable, args, ...)
        return " ".join(os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args[1])[:120]
    if args and isinstance(args[0], (str, bytes)):
        return str(args[0])[:120]
    return ""
