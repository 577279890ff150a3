"""A real ``celery worker --pool prefork`` over a real Redis, and a console pipeline that totals what arrived.

Shared by the Celery tests (tests/test_integrations_celery.py, tests/test_otel_celery.py):
the worker runs the given app module with 2 children recycled every
``max_tasks_per_child`` tasks; it leaves by a warm shutdown (SIGTERM), whose
children flush as they go.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from support.daemons import wait_until
from support.pipeline import WorkerPipeline

TESTS = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


class ConsolePipeline(WorkerPipeline):
    def __init__(self, tmp_path, *args, prefix: str = "celery.", **kwargs):
        super().__init__(tmp_path, "--format", "json", *args, **kwargs)
        self.prefix = prefix

    def totals(self) -> collections.Counter:
        """(name, tags) -> observations (timers, histograms) or sum (counters), over every flush so far."""
        found: collections.Counter = collections.Counter()
        for s in self.worker.json_lines():
            if s["name"].startswith(self.prefix):
                found[(s["name"], tuple(s.get("tags") or ()))] += s["value"] if s["type"] == "counter" else s["count"]
        return found


class Worker:
    """The running worker: its log and, once stopped, its exit status."""

    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def celery_worker(app: str, env: dict[str, str], log: Path, max_tasks_per_child: int) -> Iterator[Worker]:
    """Start ``celery -A app worker`` (prefork, 2 children), wait until it is ready; SIGTERM it on the way out."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [BIN / "celery", "-A", app, "worker", "--pool", "prefork"]
            + ["--concurrency", "2", "--max-tasks-per-child", str(max_tasks_per_child), "--loglevel", "info"]
            + ["--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname", "zibrato-test@%h"],
            cwd=TESTS,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    worker = Worker(process, log)
    try:
        wait_until(
            lambda: "ready." in worker.log_text() or process.poll() is not None,
            timeout=60,
            interval=0.1,
            message="the celery worker ready",
        )
        if process.poll() is not None:
            raise AssertionError(f"the celery worker exited:\n{worker.log_text()}")
        yield worker
    finally:
        process.send_signal(signal.SIGTERM)  # warm shutdown: the last children flush as they leave
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
