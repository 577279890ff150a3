"""Celery: ``connect(z)`` times every task, its wait in the queue, and counts retries and failures.

::

    from zibrato.integrations.celery import connect
    connect(z)          # in the module that makes the Celery app: the workers and the publishers import it

Recorded through Celery's signals, in the process that runs the task (a
prefork child, a thread, the solo pool):

* ``celery.task.duration`` (timer, seconds), from ``task_prerun`` to
  ``task_postrun``, tagged ``celery.task.name`` and ``celery.task.state``
  (``SUCCESS``, ``FAILURE``, ``RETRY``...; one timing per run, a retried
  task has one ``RETRY`` timing per retry and then its last state);
* ``celery.task.queue_wait`` (timer, seconds, tagged ``celery.task.name``):
  from publishing to the start of the run. ``before_task_publish`` stamps
  the message with a ``zibrato_published_at`` header (wall clock), so the
  wait includes a countdown or ETA; clocks of different hosts may disagree,
  and a negative wait is counted as 0. A message published without the
  header (a publisher that did not call ``connect``) records no wait;
* ``celery.task.retries`` and ``celery.task.failures`` (counters, by
  ``celery.task.name``; failures also by ``error.type``).

A pool child that ends (``--max-tasks-per-child``, a shutdown) leaves by
``os._exit``, which runs no ``atexit``: ``worker_process_shutdown`` flushes
the client first, so a recycled child loses nothing.
"""

from __future__ import annotations

import time
from typing import Any

from celery import signals

from ..client import Zibrato
from ..protocol import TIMER
from ._http import error_type, fit_tag

__all__ = ["connect", "disconnect", "PUBLISHED_HEADER"]

PUBLISHED_HEADER = "zibrato_published_at"
DURATION = "celery.task.duration"
QUEUE_WAIT = "celery.task.queue_wait"
RETRIES = "celery.task.retries"
FAILURES = "celery.task.failures"
_MAX_CACHED = 10_000


class TaskMetrics:
    """The signal receivers of one client (strong references: Celery's signals hold weak ones)."""

    def __init__(self, z: Zibrato, level: str, flush_timeout: float) -> None:
        z.series(level, TIMER, DURATION)  # a bad level raises in connect()
        self.z, self.level, self.flush_timeout = z, level, flush_timeout
        self._started: dict[str, float] = {}  # task id -> perf_counter at prerun
        self._name_tags: dict[str, tuple[str, ...]] = {}
        self._run_tags: dict[tuple[str, str], tuple[str, ...]] = {}
        self._failure_tags: dict[tuple[str, str], tuple[str, ...]] = {}

    def name_tags(self, name: str) -> tuple[str, ...]:
        try:
            return self._name_tags[name]
        except KeyError:
            return _remember(self._name_tags, name, (fit_tag("celery.task.name", name),))

    def before_publish(self, headers: dict[str, Any] | None = None, **extra: Any) -> None:
        if headers is not None:
            headers[PUBLISHED_HEADER] = time.time()

    def prerun(self, task_id: str | None = None, task: Any = None, **extra: Any) -> None:
        if task_id is None or task is None:
            return
        published = getattr(task.request, PUBLISHED_HEADER, None)
        if isinstance(published, (int, float)):
            wait = time.time() - published
            self.z.timing(self.level, QUEUE_WAIT, wait if wait > 0 else 0.0, tags=self.name_tags(task.name))
        if len(self._started) >= _MAX_CACHED:  # runs that never ended (a killed thread pool's): forget them
            self._started.clear()
        self._started[task_id] = time.perf_counter()

    def postrun(self, task_id: str | None = None, task: Any = None, state: str | None = None, **extra: Any) -> None:
        started = self._started.pop(task_id, None) if task_id is not None else None
        if started is None or task is None:
            return
        seconds = time.perf_counter() - started
        key = (task.name, state or "UNKNOWN")
        try:
            tags = self._run_tags[key]
        except KeyError:
            tags = _remember(self._run_tags, key, (*self.name_tags(key[0]), fit_tag("celery.task.state", key[1])))
        self.z.timing(self.level, DURATION, seconds if seconds > 0 else 0.0, tags=tags)

    def retry(self, sender: Any = None, request: Any = None, **extra: Any) -> None:
        name = getattr(sender, "name", None) or getattr(request, "task", None) or "unknown"
        self.z.count(self.level, RETRIES, 1, tags=self.name_tags(name))

    def failure(self, sender: Any = None, exception: BaseException | None = None, **extra: Any) -> None:
        name = getattr(sender, "name", None) or "unknown"
        key = (name, error_type(exception) if exception is not None else "unknown")
        try:
            tags = self._failure_tags[key]
        except KeyError:
            tags = _remember(self._failure_tags, key, (*self.name_tags(name), fit_tag("error.type", key[1])))
        self.z.count(self.level, FAILURES, 1, tags=tags)

    def child_ends(self, **extra: Any) -> None:
        """A pool child is about to ``os._exit``: hand over what it recorded."""
        self.z.flush(self.flush_timeout)


def _remember(cache: dict[Any, tuple[str, ...]], key: Any, tags: tuple[str, ...]) -> tuple[str, ...]:
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    cache[key] = tags
    return tags


_connected: list[TaskMetrics] = []


def connect(z: Zibrato, *, level: str = "info", flush_timeout: float = 2.0) -> TaskMetrics:
    """Record every task's duration, queue wait, retries and failures through ``z``.

    Call it where both the workers and the publishers run it (the module making the Celery
    app): the publishers stamp the messages, the workers time them. ``flush_timeout`` bounds
    how long a pool child that ends waits for its last measurements to leave.
    """
    metrics = TaskMetrics(z, level, flush_timeout)
    signals.before_task_publish.connect(metrics.before_publish, weak=False)
    signals.task_prerun.connect(metrics.prerun, weak=False)
    signals.task_postrun.connect(metrics.postrun, weak=False)
    signals.task_retry.connect(metrics.retry, weak=False)
    signals.task_failure.connect(metrics.failure, weak=False)
    signals.worker_process_shutdown.connect(metrics.child_ends, weak=False)
    _connected.append(metrics)
    return metrics


def disconnect(metrics: TaskMetrics) -> None:
    """Undo :func:`connect` (tests, or a client being replaced)."""
    signals.before_task_publish.disconnect(metrics.before_publish)
    signals.task_prerun.disconnect(metrics.prerun)
    signals.task_postrun.disconnect(metrics.postrun)
    signals.task_retry.disconnect(metrics.retry)
    signals.task_failure.disconnect(metrics.failure)
    signals.worker_process_shutdown.disconnect(metrics.child_ends)
    if metrics in _connected:
        _connected.remove(metrics)
