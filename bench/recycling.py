"""Request counts under gunicorn's worker recycling: prometheus_client (both modes) against Zibrato.

    .venv/bin/python bench/recycling.py [--requests 2000] [--max-requests 50] [--workers 4]

Runs the same three-route Flask application (a path parameter, a stream, a
route that raises) under real gunicorn with ``--max-requests`` three times:

* prometheus_client's default registry, ``/metrics`` served by the workers:
  each scrape sees one worker's counts, since that worker last started;
* prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
  ``mark_process_dead`` in gunicorn's ``child_exit``), as its docs set it up;
* ``zibrato.integrations.flask.init_app`` into a real broker and
  ``zibrato-prometheus``.

For each it prints what a scrape reports against the requests answered, the
files left in the multiprocess directory, and how long a scrape takes. Uses
the test virtualenv (Flask, gunicorn, prometheus_client are in the ``test``
extra); loopback only; about a minute.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))

from support.daemons import free_ports, wait_until  # noqa: E402 - after the path above

PROMETHEUS_APP = """
    import os
    import time

    from flask import Flask, g, request
    from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess, REGISTRY

    app = Flask(__name__)
    DURATION = Histogram(
        "http_server_request_duration_seconds", "Request duration", ["http_route", "http_response_status_code"]
    )

    @app.before_request
    def start():
        g.start = time.perf_counter()

    @app.after_request
    def record(response):
        if request.path != "/metrics" and request.url_rule is not None:
            DURATION.labels(request.url_rule.rule, str(response.status_code)).observe(time.perf_counter() - g.start)
        return response

    @app.get("/users/<int:user_id>")
    def user(user_id):
        return f"user {user_id}"

    @app.get("/stream")
    def stream():
        return app.response_class((f"chunk {i}" for i in range(3)), mimetype="text/plain")

    @app.get("/boom")
    def boom():
        raise ValueError("the raising route")

    @app.get("/metrics")
    def metrics():
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = REGISTRY
        return generate_latest(registry), 200, {"Content-Type": "text/plain; version=0.0.4"}
"""

GUNICORN_CONFIG = """
    from prometheus_client import multiprocess

    def child_exit(server, worker):
        multiprocess.mark_process_dead(worker.pid)
"""

ZIBRATO_APP = """
    from support.webapps.flask_app import create
"""


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def load(port: int, total: int) -> int:
    paths = [(f"/users/{i}", "/stream", "/boom")[i % 3] for i in range(total)]
    with ThreadPoolExecutor(4) as pool:
        return sum(1 for status, _ in pool.map(lambda path: get(port, path), paths) if status in (200, 500))


def counted(body: bytes, name: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("http_route"):
                total += sample.value
    return total


def scrape_seconds(port: int, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        get(port, "/metrics")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gunicorn(directory: Path, app: str, port: int, args, env: dict, config: Path | None = None) -> subprocess.Popen:
    command = [BIN / "gunicorn", "-w", args.workers, "--max-requests", args.max_requests, "-b", f"127.0.0.1:{port}"]
    if config:
        command += ["-c", config]
    process = subprocess.Popen(
        [str(c) for c in [*command, app]],
        cwd=directory,
        env={**os.environ, **env, "PYTHONPATH": f"{directory}:{ROOT / 'tests'}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            return get(port, "/users/0")[0] == 200
        except OSError:
            return False

    wait_until(answers, timeout=30, interval=0.1, message="gunicorn")
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(30)


def run_prometheus_client(args, multiprocess_mode: bool) -> dict:
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        (directory / "promapp.py").write_text(textwrap.dedent(PROMETHEUS_APP))
        env, config = {}, None
        if multiprocess_mode:
            (directory / "metrics").mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(directory / "metrics")
            config = directory / "gunicorn_config.py"
            config.write_text(textwrap.dedent(GUNICORN_CONFIG))
        port = free_ports(1)
        server = gunicorn(directory, "promapp:app", port, args, env, config)
        try:
            answered = load(port, args.requests) + 1  # and the readiness probe
            scrapes = [
                counted(get(port, "/metrics")[1], "http_server_request_duration_seconds_count") for _ in range(8)
            ]
            seconds = scrape_seconds(port)
            files = len(list((directory / "metrics").iterdir())) if multiprocess_mode else 0
        finally:
            stop(server)
    return {"answered": answered, "scrapes": scrapes, "scrape_s": seconds, "files": files}


def run_zibrato(args) -> dict:
    base = free_ports(4)
    listen = free_ports(1)
    daemons = [
        subprocess.Popen([str(BIN / "zibrato-broker"), "--port", str(base)], stderr=subprocess.DEVNULL),
        subprocess.Popen(
            [str(BIN / "zibrato-prometheus"), "--port", str(base + 1), "--flush", "0.5"]
            + ["--listen", f"127.0.0.1:{listen}", "--no-self-metrics"],
            stderr=subprocess.DEVNULL,
        ),
    ]
    time.sleep(1.0)  # a benchmark, not a test: the subscription settles before the load
    try:
        with tempfile.TemporaryDirectory() as temp:
            port = free_ports(1)
            server = gunicorn(Path(temp), "support.webapps.flask_app:create()", port, args, {"ZIBRATO_PORT": str(base)})
            try:
                answered = load(port, args.requests) + 1
            finally:
                stop(server)
        deadline, scrapes = time.monotonic() + 30, []
        while time.monotonic() < deadline:
            status, body = get(listen, "/metrics")
            scrapes = [counted(body, "http_server_request_duration_count")]
            if scrapes[0] >= answered:
                break
            time.sleep(0.5)
        seconds = scrape_seconds(listen)
    finally:
        for daemon in daemons:
            stop(daemon)
    return {"answered": answered, "scrapes": scrapes, "scrape_s": seconds, "files": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--max-requests", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    print(f"{args.requests} requests, gunicorn -w {args.workers} --max-requests {args.max_requests}\n")
    print("| exporter | requests answered | counted by a scrape | files left | scrape |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name, run in (
        ("prometheus_client, default registry", lambda: run_prometheus_client(args, False)),
        ("prometheus_client, multiprocess mode", lambda: run_prometheus_client(args, True)),
        ("Zibrato (flask init_app -> zibrato-prometheus)", lambda: run_zibrato(args)),
    ):
        r = run()
        low, high = int(min(r["scrapes"])), int(max(r["scrapes"]))
        seen = f"{low}" if low == high else f"{low} to {high} (8 scrapes)"
        print(f"| {name} | {r['answered']} | {seen} | {r['files']} | {r['scrape_s'] * 1000:.1f} ms |", flush=True)


if __name__ == "__main__":
    main()
