"""A Celery application timed by ``zibrato.integrations.celery.connect``.

The worker (``celery -A support.webapps.celery_app worker``) takes its broker
from ``$CELERY_BROKER_URL`` and its Zibrato client from ``$ZIBRATO_PORT``.
Three tasks: one that succeeds, one that fails, one that is retried once
before it succeeds.
"""

from __future__ import annotations

import os

from celery import Celery

from zibrato import Zibrato
from zibrato.integrations.celery import connect

OK, FAIL, FLAKY = "support.webapps.celery_app.ok", "support.webapps.celery_app.fail", "support.webapps.celery_app.flaky"

app = Celery("zibrato_tests", broker=os.environ.get("CELERY_BROKER_URL", "memory://"))
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
connect(Zibrato())


@app.task(name=OK)
def ok(i: int) -> int:
    pid_dir = os.environ.get("TASK_PID_DIR")
    if pid_dir:  # the test sees which pool children ran tasks (recycled ones included)
        open(os.path.join(pid_dir, str(os.getpid())), "a").close()
    return i


@app.task(name=FAIL)
def fail(i: int) -> int:
    raise ValueError(f"task {i} fails")


@app.task(name=FLAKY, bind=True, max_retries=3)
def flaky(self, i: int) -> int:
    if self.request.retries < 1:
        raise self.retry(countdown=0)
    return i
