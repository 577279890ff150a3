"""Real servers recycling their workers mid-test, timed by zibrato.integrations, counted exactly.

Flask and Django under gunicorn (4 workers, ``--max-requests 50``), FastAPI
under uvicorn (2 workers, ``--limit-max-requests``): requests to three routes
(one with a path parameter, one streaming, one raising), then exact counts
per route and status at a real ``zibrato-prometheus`` (and, for Flask, in
the real Prometheus server scraping it). Nothing is lost when a worker is
recycled: every worker's client flushes on its way out.
"""

from __future__ import annotations

import collections
import http.client
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from expecter import expect
from prometheus_client.parser import text_string_to_metric_families

from support.daemons import free_ports, stop_process, wait_until
from support.pipeline import WorkerPipeline, pipelines
from support.prometheus_server import PrometheusServer

TESTS = Path(__file__).parent
BIN = Path(sys.executable).parent
COUNT = "http_server_request_duration_seconds_count"  # a timer is a _seconds family


class PrometheusPipeline(WorkerPipeline):
    """A broker and a real zibrato-prometheus, scraped by the test."""

    script = "zibrato-prometheus"
    ready_log = "prometheus worker"

    def __init__(self, tmp_path, *args, **kwargs):
        self.listen_port = free_ports(1)
        super().__init__(tmp_path, "--listen", f"127.0.0.1:{self.listen_port}", *args, **kwargs)

    def counts(self) -> dict[tuple[str | None, str | None, str], float]:
        """(route, status, error.type or '') -> requests timed so far."""
        connection = http.client.HTTPConnection("127.0.0.1", self.listen_port, timeout=5)
        connection.request("GET", "/metrics")
        body = connection.getresponse().read().decode()
        connection.close()
        found = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                if s.name == COUNT:
                    key = (s.labels.get("http_route"), s.labels.get("http_response_status_code"))
                    found[(*key, s.labels.get("error_type", ""))] = s.value
        return found


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: PrometheusPipeline(tmp_path, *args, **kwargs))


def get(port: int, path: str, attempts: int = 1) -> tuple[int, str | None]:
    """(status, the answering worker's pid when the route names it) of one GET on a new connection.

    With ``attempts`` > 1, a connection closed with no answer is tried again: uvicorn's worker
    that reaches ``--limit-max-requests`` closes the connections it accepted but whose request
    it has not started (those requests never ran, so the counts stay exact).
    """
    for attempt in range(attempts):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            answer.read()
            return answer.status, answer.getheader("X-Worker-Pid")
        except (ConnectionResetError, http.client.RemoteDisconnected):
            if attempt == attempts - 1:
                raise
        finally:
            connection.close()
    raise AssertionError("unreachable")


def hammer(port: int, paths: list[str], threads: int = 4, attempts: int = 1) -> tuple[collections.Counter, set[str]]:
    """Send every path (concurrently); the statuses seen per path kind, and the worker pids seen."""
    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(lambda path: (path, get(port, path, attempts)), paths))
    seen: collections.Counter = collections.Counter()
    pids = set()
    for path, (status, pid) in answers:
        seen[(path.split("/")[1], status)] += 1
        if pid:
            pids.add(pid)
    return seen, pids


def plan(total: int, users: str, stream: str, boom: str) -> list[str]:
    """``total`` paths over the three routes in turn; each user id differs (one template, many paths)."""
    return [(users.format(i), stream, boom)[i % 3] for i in range(total)]


class Server:
    """A real web server as a subprocess of the test, its output in a log file."""

    def __init__(self, tmp_path: Path, argv: list, env: dict) -> None:
        self.port = free_ports(1)
        self.log = tmp_path / "server.log"
        self.argv = [str(a).replace("{port}", str(self.port)) for a in argv]
        self.env = {**os.environ, **env}
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=TESTS, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.argv[0]} exited:\n{self.log.read_text(errors='replace')}")
            try:
                return get(self.port, "/nowhere-yet")[0] == 404
            except OSError:
                return False

        wait_until(answers, timeout=30, interval=0.1, message=f"{Path(self.argv[0]).name} to answer")
        return self

    def stop(self) -> None:
        stop_process(self.process, timeout=20)
        expect((self.process.returncode, self.log.name)) == (0, "server.log")


def wait_counts(p: PrometheusPipeline, expected: dict) -> None:
    last = [None]

    def arrived() -> bool:
        last[0] = p.counts()
        return last[0] == expected

    try:
        wait_until(arrived, timeout=30, interval=0.25, message="every request counted at zibrato-prometheus")
    except AssertionError as error:
        raise AssertionError(f"{error}: expected {expected}, scraped {last[0]}") from None


def expected_counts(seen: collections.Counter, routes: dict[str, str], errors: dict[str, str]) -> dict:
    """What the client saw, as (route template, status, error.type) -> count."""
    return {
        (routes[kind], str(status), errors.get(kind, "")): n for (kind, status), n in seen.items() if kind in routes
    }


needs_gunicorn = pytest.mark.skipif(not (BIN / "gunicorn").exists(), reason="gunicorn is in the test extras")


@needs_gunicorn
def test_flask_under_gunicorn_recycling_workers_is_counted_exactly_at_prometheus(pipeline, tmp_path):
    p = pipeline(flush=0.5)
    prometheus = PrometheusServer(tmp_path, [f"127.0.0.1:{p.listen_port}"]).start()
    server = Server(
        tmp_path,
        [BIN / "gunicorn", "-w", "4", "--max-requests", "50", "-b", "127.0.0.1:{port}", "--preload"]
        + ["--graceful-timeout", "10", "support.webapps.flask_app:create()"],
        {"ZIBRATO_PORT": str(p.base)},
    ).start()
    try:
        seen, pids = hammer(server.port, plan(2000, "/users/{}", "/stream", "/boom"))
        expect(sum(seen.values())) == 2000  # every request answered, recycling or not
        expect(seen[("boom", 500)]) == 666
        expect(len(pids) > 4) == True  # workers were recycled mid-test (50 requests each)
        routes = {"users": "/users/<int:user_id>", "stream": "/stream", "boom": "/boom"}
        expected = expected_counts(seen, routes, {"boom": "ValueError"})
        expected[(None, "404", "")] = 1  # the readiness probe: no route
        wait_counts(p, expected)
        # the real Prometheus server stores the same per-route, per-status totals
        for (route, status, error), n in expected.items():
            labels = f'http_route="{route}", ' if route else 'http_route="", '
            labels += f'http_response_status_code="{status}", error_type="{error}"'
            prometheus.wait_value(f"sum({COUNT}{{{labels}}})", n)
        expect(prometheus.value("count(count by (http_route) (http_server_request_duration_seconds_count))")) == 4
    finally:
        server.stop()
        prometheus.stop()
    wait_counts(p, expected)  # and nothing more arrived when the last workers left


@needs_gunicorn
def test_django_under_gunicorn_recycling_workers_is_counted_exactly(pipeline, tmp_path):
    p = pipeline(flush=0.5)
    server = Server(
        tmp_path,
        [BIN / "gunicorn", "-w", "4", "--max-requests", "50", "-b", "127.0.0.1:{port}", "--preload"]
        + ["--graceful-timeout", "10", "support.webapps.django_app:application"],
        {"ZIBRATO_PORT": str(p.base), "DJANGO_SETTINGS_MODULE": "support.webapps.django_app"},
    ).start()
    try:
        seen, pids = hammer(server.port, plan(2000, "/users/{}/", "/stream/", "/boom/"))
        expect(sum(seen.values())) == 2000
        expect(len(pids) > 4) == True
        routes = {"users": "/users/<int:user_id>/", "stream": "/stream/", "boom": "/boom/"}
        expected = expected_counts(seen, routes, {"boom": "ValueError"})
        expected[(None, "404", "")] = 1
        wait_counts(p, expected)
    finally:
        server.stop()
    wait_counts(p, expected)


@pytest.mark.skipif(not (BIN / "uvicorn").exists(), reason="uvicorn is in the test extras")
def test_fastapi_under_uvicorn_with_two_recycling_workers_is_counted_exactly(pipeline, tmp_path):
    p = pipeline(flush=0.5)
    server = Server(
        tmp_path,
        [BIN / "uvicorn", "--factory", "support.webapps.fastapi_app:create", "--workers", "2"]
        + ["--host", "127.0.0.1", "--port", "{port}", "--limit-max-requests", "600", "--log-level", "warning"],
        {"ZIBRATO_PORT": str(p.base)},
    ).start()
    try:
        seen, pids = hammer(server.port, plan(2000, "/users/{}", "/stream", "/boom"), attempts=3)
        expect(sum(seen.values())) == 2000
        expect(len(pids) > 2) == True  # uvicorn replaced the workers that reached their limit
        routes = {"users": "/users/{user_id}", "stream": "/stream", "boom": "/boom"}
        expected = expected_counts(seen, routes, {"boom": "ValueError"})
        expected[(None, "404", "")] = 1
        wait_counts(p, expected)
    finally:
        server.stop()
    wait_counts(p, expected)
