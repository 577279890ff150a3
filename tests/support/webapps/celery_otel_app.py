"""A Celery application instrumented through the OpenTelemetry metrics API, nothing else.

As an instrumented application would, the module making the Celery app sets
``zibrato.otel.MeterProvider`` (its own client, from ``$ZIBRATO_PORT``) as the
global provider, and the tasks record through the API: a Counter and a
Histogram per task. No ``zibrato.integrations.celery.connect``: what makes a
recycled prefork child hand over its last measurements must be the provider's
client alone. The worker takes its broker from ``$CELERY_BROKER_URL``, the client's sender
cadence from ``$CELERY_APP_SEND_INTERVAL``.
"""

from __future__ import annotations

import os

from celery import Celery
from opentelemetry import metrics

from zibrato.otel import MeterProvider

WORK = "support.webapps.celery_otel_app.work"
COUNTER, HISTOGRAM = "tasks.done", "tasks.payload.size"

app = Celery("zibrato_otel_tests", broker=os.environ.get("CELERY_BROKER_URL", "memory://"))
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
# $CELERY_APP_SEND_INTERVAL: a sender cadence longer than a child's life, so that what it recorded
# leaves only through the flush as it ends (billiard waits 1 s before os._exit, which a 50 ms cadence
# would use by chance)
metrics.set_meter_provider(MeterProvider(interval=float(os.environ.get("CELERY_APP_SEND_INTERVAL", "0.05"))))
meter = metrics.get_meter("support.webapps.celery_otel_app")
done = meter.create_counter(COUNTER, unit="{task}")
sizes = meter.create_histogram(HISTOGRAM, unit="By")


@app.task(name=WORK)
def work(i: int) -> int:
    pid_dir = os.environ.get("TASK_PID_DIR")
    if pid_dir:  # the test sees which pool children ran tasks (recycled ones included)
        open(os.path.join(pid_dir, str(os.getpid())), "a").close()
    kind = "even" if i % 2 == 0 else "odd"
    done.add(1, {"task.kind": kind})
    sizes.record(100 + i, {"task.kind": kind})
    return i
