"""zibrato.integrations.celery: a real Celery prefork worker, a real Redis broker, a real console worker.

500 tasks (some fail, some are retried once) through Debian's redis-server
on an ephemeral port, run by ``celery worker --pool prefork --concurrency 2
--max-tasks-per-child 50`` (children recycled mid-test): the durations by
task and state, the queue waits, the retries and the failures arrive exactly
at zibrato-console, nothing lost when a child is recycled.
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
from zibrato.testing import MemoryZibrato

OK_TASKS, FAILING_TASKS, RETRIED_TASKS = 300, 100, 100


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: ConsolePipeline(tmp_path, *args, **kwargs))


@pytest.fixture
def redis(tmp_path):
    if not Path(REDIS).exists():
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def task_tags(name: str, *more: str) -> tuple[str, ...]:
    return tuple(sorted((f"celery.task.name:support.webapps.celery_app.{name}", *more)))


def test_celery_prefork_tasks_are_timed_and_counted_exactly_across_recycled_children(pipeline, redis, tmp_path):
    from celery import Celery

    from support.webapps.celery_app import FAIL, FLAKY, OK
    from zibrato.integrations.celery import connect, disconnect

    p = pipeline(flush=0.5)
    pids = tmp_path / "pids"
    pids.mkdir()
    log = tmp_path / "celery.log"
    env = {"CELERY_BROKER_URL": redis.url, "ZIBRATO_PORT": str(p.base), "TASK_PID_DIR": str(pids)}
    with celery_worker("support.webapps.celery_app", env, log, max_tasks_per_child=50) as worker:
        # the publisher: this process, stamping each message's publish time as connect() does
        publisher = connect(MemoryZibrato())
        try:
            sender = Celery(broker=redis.url)
            for i in range(OK_TASKS + FAILING_TASKS + RETRIED_TASKS):
                name = OK if i < OK_TASKS else FAIL if i < OK_TASKS + FAILING_TASKS else FLAKY
                sender.send_task(name, args=(i,))
            sender.close()
        finally:
            disconnect(publisher)

        runs = OK_TASKS + FAILING_TASKS + 2 * RETRIED_TASKS
        expected = {
            ("celery.task.duration", task_tags("ok", "celery.task.state:SUCCESS")): OK_TASKS,
            ("celery.task.duration", task_tags("fail", "celery.task.state:FAILURE")): FAILING_TASKS,
            ("celery.task.duration", task_tags("flaky", "celery.task.state:RETRY")): RETRIED_TASKS,
            ("celery.task.duration", task_tags("flaky", "celery.task.state:SUCCESS")): RETRIED_TASKS,
            ("celery.task.queue_wait", task_tags("ok")): OK_TASKS,
            ("celery.task.queue_wait", task_tags("fail")): FAILING_TASKS,
            ("celery.task.queue_wait", task_tags("flaky")): 2 * RETRIED_TASKS,  # each retry waits again
            ("celery.task.failures", task_tags("fail", "error.type:ValueError")): FAILING_TASKS,
            ("celery.task.retries", task_tags("flaky")): RETRIED_TASKS,
        }
        last = [None]

        def arrived() -> bool:
            last[0] = dict(p.totals())
            return last[0] == expected

        try:
            wait_until(arrived, timeout=90, interval=0.5, message=f"{runs} task runs counted at zibrato-console")
        except AssertionError as error:
            raise AssertionError(f"{error}: expected {expected}, got {last[0]}") from None
        # children were recycled mid-test: more pids ran tasks than the pool's 2
        expect(len(list(pids.iterdir())) > 2) == True
    expect(worker.process.returncode) == 0
    # each failure reached Celery itself, unchanged: Celery logs it with the task's own exception
    expect(worker.log_text().count("raised unexpected: ValueError('task ")) == FAILING_TASKS
    p.wait_measurements(0)
    expect(dict(p.totals())) == expected  # nothing more, nothing less once every process left


def test_a_failing_task_is_timed_as_failure_and_its_exception_still_reaches_celery():
    from celery import Celery

    from zibrato.integrations.celery import connect, disconnect

    app = Celery("zibrato_eager", broker="memory://")
    error = LookupError("the task's own")

    @app.task(name="eager.fails")
    def fails() -> None:
        raise error

    z = MemoryZibrato()
    metrics = connect(z)
    try:
        result = fails.apply()  # Celery's own tracer, in this process: the signals fire as in a worker
        expect(result.state) == "FAILURE"
        expect(result.result is error) == True  # Celery got the exception itself, not a wrapper
    finally:
        disconnect(metrics)
    tags = ("celery.task.name:eager.fails", "celery.task.state:FAILURE")
    expect([m.tags for m in z.measurements.find(name="celery.task.duration", type="timer")]) == [tags]
    failures = z.measurements.find(name="celery.task.failures", type="counter")
    expect([(m.tags, m.value) for m in failures]) == [(("celery.task.name:eager.fails", "error.type:LookupError"), 1)]


def test_connect_refuses_a_bad_level_and_disconnect_undoes_it():
    from celery import signals

    from zibrato.integrations.celery import connect, disconnect

    with pytest.raises(ValueError, match="level"):
        connect(MemoryZibrato(), level="not a level")
    before = len(signals.task_prerun.receivers)
    metrics = connect(MemoryZibrato())
    expect(len(signals.task_prerun.receivers)) == before + 1
    disconnect(metrics)
    expect(len(signals.task_prerun.receivers)) == before
