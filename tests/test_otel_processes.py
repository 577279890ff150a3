"""zibrato.otel in the process models applications use: the client's fork tests
(tests/test_client_processes.py) with the MeterProvider in front.

multiprocessing with every start method, gunicorn's pre-fork workers, and a
forked child whose observable instruments' collector thread (which fork does
not copy) restarts at its first measurement. Each scenario is a real subprocess
sending to the real PULL socket of ``broker_pull``; every test counts exactly
what arrived.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import urllib.request

import pytest
from expecter import expect

pytest.importorskip("opentelemetry.metrics")

from test_client_processes import START_METHODS, exactly, run_script

from conftest import select, wait_until
from support.daemons import free_ports

POOL_SCRIPT = """
    import multiprocessing, sys
    from zibrato import Zibrato
    from zibrato.otel import MeterProvider

    provider = MeterProvider(Zibrato(linger=2))
    meter = provider.get_meter("app")
    tasks_done = meter.create_counter("pool.task")
    took = meter.create_histogram("pool.task.duration", unit="ms")

    def task(i):
        tasks_done.add(1, {"parity": i % 2})
        took.record(i % 7, {"parity": i % 2})
        return i

    if __name__ == "__main__":
        method, tasks = sys.argv[1], int(sys.argv[2])
        with multiprocessing.get_context(method).Pool(2) as pool:  # leaving calls terminate()
            assert pool.map(task, range(tasks), chunksize=50) == list(range(tasks))
        print(provider.figures())
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_workers_record_through_the_provider_and_lose_nothing(broker_pull, tmp_path, method):
    tasks = 2_000
    run_script(tmp_path, POOL_SCRIPT, broker_pull.port, method, str(tasks))
    counted = exactly(broker_pull, "pool.task", tasks)
    timed = exactly(broker_pull, "pool.task.duration", tasks)
    expect(sum(r.value for r in counted)) == tasks
    expect(len(select(counted, tags=("parity:1",)))) == tasks // 2
    expect(sorted({r.type for r in timed})) == ["t"]
    expect(sum(r.value for r in timed)) == pytest.approx(sum(i % 7 for i in range(tasks)) / 1000)


FORK_SCRIPT = """
    import os, sys, time
    from opentelemetry.metrics import Observation
    from zibrato import Zibrato
    from zibrato.otel import MeterProvider

    provider = MeterProvider(Zibrato(linger=2), collect_interval=0.05, callback_timeout=5)
    meter = provider.get_meter("app")
    requests = meter.create_counter("fork.requests")
    seen = []

    def observe(options):
        seen.append(1)
        return [Observation(len(seen), {"pid": os.getpid()})]

    meter.create_observable_counter("fork.observed", [observe])
    while not seen:  # the parent's collector runs
        time.sleep(0.01)
    pid = os.fork()
    if pid == 0:
        seen.clear()
        time.sleep(0.3)  # no collector in the child until its first measurement
        before = len(seen)
        requests.add(1, {"who": "child"})  # restarts the collector thread
        while len(seen) < 5:
            time.sleep(0.01)
        provider.client.flush(5)
        print(before, flush=True)
        os._exit(0)
    requests.add(1, {"who": "parent"})
    os.waitpid(pid, 0)
    print(os.getpid(), pid, flush=True)
"""


def test_a_forked_child_restarts_the_collector_at_its_first_measurement(broker_pull, tmp_path):
    before, parent, child = run_script(tmp_path, FORK_SCRIPT, broker_pull.port).split()
    expect(before) == "0"  # nothing was collected in the child before it measured
    requests = exactly(broker_pull, "fork.requests", 2)
    expect(sorted(r.tags for r in requests)) == [("who:child",), ("who:parent",)]
    # the child's own observations, turned into deltas from its own first one (the baseline)
    broker_pull.receive_until(lambda records: select(records, "fork.observed", tags=(f"pid:{child}",)), timeout=10)
    expect(all(r.value == 1 for r in select(broker_pull.records, "fork.observed", tags=(f"pid:{child}",)))) == True


WSGI_APP = """
    from zibrato import Zibrato
    from zibrato.otel import MeterProvider

    meter = MeterProvider(Zibrato(source="web")).get_meter("wsgiapp")
    served = meter.create_counter("gunicorn.otel.request")
    took = meter.create_histogram("gunicorn.otel.duration", unit="s")

    def app(environ, start_response):
        served.add(1, {"path": environ["PATH_INFO"]})
        took.record(0.001, {"path": environ["PATH_INFO"]})
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
"""


@pytest.mark.skipif(
    shutil.which("gunicorn", path=os.path.dirname(sys.executable)) is None, reason="gunicorn is in the test extras"
)
@pytest.mark.parametrize("preload", [False, True], ids=["import-per-worker", "preload-then-fork"])
def test_gunicorn_workers_record_every_request_through_the_provider_exactly_once(broker_pull, tmp_path, preload):
    (tmp_path / "wsgiapp.py").write_text(textwrap.dedent(WSGI_APP))
    http_port = free_ports(1)
    command = [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{http_port}"]
    command += ["--graceful-timeout", "5", *(["--preload"] if preload else []), "wsgiapp:app"]
    server = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=dict(os.environ, ZIBRATO_PORT=str(broker_pull.port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/warm", timeout=1):
                    return True
            except OSError:
                return False

        wait_until(answers, timeout=15, message="gunicorn to answer")
        requests = 200
        for _ in range(requests):
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/r", timeout=5) as answer:
                assert answer.read() == b"ok"
        broker_pull.receive_count(requests, "gunicorn.otel.duration", timeout=10, tags=("path:/r",))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    served = select(broker_pull.records, "gunicorn.otel.request", tags=("path:/r",))
    expect(len(served)) == requests
    expect(len(select(broker_pull.records, "gunicorn.otel.duration", tags=("path:/r",)))) == requests
    expect({r.source for r in served}) == {"web"}
