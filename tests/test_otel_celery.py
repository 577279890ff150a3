"""zibrato.otel under Celery prefork: a real worker, a real Redis broker, a real console worker.

The app module (tests/support/webapps/celery_otel_app.py) sets
``zibrato.otel.MeterProvider`` as the global provider, as an instrumented
application would, and its task records a Counter and a Histogram through the
OpenTelemetry API; it does not call ``zibrato.integrations.celery.connect``.
``celery worker --pool prefork --concurrency 2 --max-tasks-per-child 25``
recycles its children mid-test: a child leaves by ``os._exit``, and what it
recorded must still arrive, exactly, at zibrato-console. The client's sender
cadence is set longer than the test, so every measurement arrives through a
leaving child's flush: the client's own hook on Celery's
``worker_process_shutdown`` signal.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from expecter import expect

from support.celery_worker import ConsolePipeline, celery_worker
from support.daemons import wait_until
from support.pipeline import pipelines
from support.redis_server import BINARY as REDIS
from support.redis_server import RedisServer

TASKS, MAX_TASKS_PER_CHILD = 300, 25


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: ConsolePipeline(tmp_path, *args, prefix="tasks.", **kwargs))


@pytest.fixture
def redis(tmp_path):
    if not Path(REDIS).exists():
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def test_otel_provider_in_celery_prefork_children_loses_nothing_when_they_are_recycled(pipeline, redis, tmp_path):
    from celery import Celery

    from support.webapps.celery_otel_app import COUNTER, HISTOGRAM, WORK

    p = pipeline(flush=0.5)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {"CELERY_BROKER_URL": redis.url, "ZIBRATO_PORT": str(p.base), "TASK_PID_DIR": str(pids)}
    env["CELERY_APP_SEND_INTERVAL"] = "3600"  # the children's senders never drain on their own: only their exit flush
    half = TASKS // 2
    expected = {
        (COUNTER, ("task.kind:even",)): half,
        (COUNTER, ("task.kind:odd",)): half,
        (HISTOGRAM, ("task.kind:even",)): half,
        (HISTOGRAM, ("task.kind:odd",)): half,
    }
    with celery_worker("support.webapps.celery_otel_app", env, tmp_path / "celery.log", MAX_TASKS_PER_CHILD) as worker:
        sender = Celery(broker=redis.url)
        for i in range(TASKS):
            sender.send_task(WORK, args=(i,))
        sender.close()
        wait_until(
            lambda: worker.log_text().count(" succeeded in ") >= TASKS,
            timeout=120,
            interval=0.5,
            message=f"{TASKS} tasks run by the celery worker",
        )
        # every child recycled so far handed over all it recorded as it left; the 2 live ones
        # (at most MAX_TASKS_PER_CHILD - 1 tasks each) hand over theirs at the warm shutdown below
        least = TASKS - 2 * (MAX_TASKS_PER_CHILD - 1)
        wait_until(
            lambda: sum(n for (name, _), n in p.totals().items() if name == COUNTER) >= least,
            timeout=60,
            interval=0.5,
            message=f"the recycled children's {least}+ tasks at zibrato-console",
        )
        expect(len(list(pids.iterdir())) >= TASKS // MAX_TASKS_PER_CHILD) == True  # children were recycled
    expect(worker.process.returncode) == 0
    last = [None]

    def arrived() -> bool:
        last[0] = dict(p.totals())
        return last[0] == expected

    try:
        wait_until(arrived, timeout=60, interval=0.5, message=f"{TASKS} tasks' measurements at zibrato-console")
    except AssertionError as error:
        raise AssertionError(f"{error}: expected {expected}, got {last[0]}") from None
    p.wait_measurements(0)
    expect(dict(p.totals())) == expected  # nothing more, nothing less once every process left
    histograms = [s for s in p.worker.json_lines() if s["name"] == HISTOGRAM]
    expect({s["type"] for s in histograms}) == {"histogram"}  # unit "By": a histogram, not a timer
