"""The real OpenTelemetry instrumentations recording through zibrato.otel to a real console worker.

``opentelemetry-instrumentation-wsgi``, ``-asgi`` and ``-flask``, unchanged, with
``metrics.set_meter_provider(zibrato.otel.MeterProvider(z))`` as the only change to
the application: a real app under a real server (wsgiref, uvicorn, werkzeug),
real HTTP requests, then a real broker and ``zibrato-console`` whose JSON output
must hold exactly as many request durations as requests were made, by route and
status. The API's global provider can be set once per process, so each app runs
in its own subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from expecter import expect

pytest.importorskip("opentelemetry.instrumentation.wsgi")

from support.pipeline import WorkerPipeline, pipelines

REQUESTS = 40


class Console(WorkerPipeline):
    """A broker and one console worker printing JSON lines."""

    def __init__(self, tmp_path, *worker_args, **kwargs):
        super().__init__(tmp_path, "--format", "json", *worker_args, **kwargs)

    def stop_worker(self, signum=signal.SIGTERM):
        super().stop_worker(signum)
        return [s for s in self.worker.json_lines() if s["name"] != "warmup"]


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: Console(tmp_path, *args, **kwargs))


def run_app(tmp_path, pipeline: Console, source: str, semconv: str | None = None) -> int:
    """Run the app script against the pipeline's broker; return how many measurements it sent."""
    script = tmp_path / "app.py"
    script.write_text(PRELUDE + textwrap.dedent(source))
    env = dict(os.environ, ZIBRATO_PORT=str(pipeline.base), REQUESTS=str(REQUESTS))
    env.pop("OTEL_SEMCONV_STABILITY_OPT_IN", None)
    if semconv:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = semconv
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"app failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    sent = int(done.stdout.split()[-1])
    pipeline.wait_measurements(sent)
    return sent


def series(summaries: list[dict], name: str) -> dict[tuple[str, ...], dict]:
    """The timer summaries of ``name``, by a few of their tags."""
    wanted = ("http.route", "http.response.status_code", "http.status_code", "http.request.method", "http.method")
    found = {}
    for summary in summaries:
        if summary["name"] == name:
            key = tuple(sorted(t for t in summary["tags"] if t.split(":", 1)[0] in wanted))
            found[key] = summary
    return found


# Every app script: the one line an instrumented app adds, and a way to say what it sent.
PRELUDE = """
import os, sys, threading, urllib.error, urllib.request
from opentelemetry import metrics
from zibrato import Zibrato
import zibrato.otel

z = Zibrato(linger=2)
metrics.set_meter_provider(zibrato.otel.MeterProvider(z))
REQUESTS = int(os.environ["REQUESTS"])


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def done():
    z.flush(10)
    print(z.sent, flush=True)
"""

WSGI_SCRIPT = """
from wsgiref.simple_server import WSGIRequestHandler, make_server
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, OpenTelemetryMiddleware(app), handler_class=Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
for _ in range(REQUESTS):
    assert get(f"http://127.0.0.1:{server.server_port}/hello") == 200
server.shutdown()
done()
"""


@pytest.mark.parametrize("semconv", [None, "http/dup"], ids=["old-conventions", "old-and-stable"])
def test_the_wsgi_instrumentation_times_every_request_through_zibrato(tmp_path, pipeline, semconv):
    p = pipeline()
    run_app(tmp_path, p, WSGI_SCRIPT, semconv)
    summaries = p.stop_worker()
    old = series(summaries, "http.server.duration")  # ms in the instrumentation: seconds here
    expect(list(old)) == [("http.method:GET", "http.status_code:200")]
    (summary,) = old.values()
    expect((summary["type"], summary["count"])) == ("timer", REQUESTS)
    expect(0 < summary["max"] < 10) == True  # seconds, converted from the instrumentation's ms
    if semconv:
        stable = series(summaries, "http.server.request.duration")
        expect(list(stable)) == [("http.request.method:GET", "http.response.status_code:200")]
        expect(next(iter(stable.values()))["count"]) == REQUESTS
    else:
        expect(series(summaries, "http.server.request.duration")) == {}
    active = [s for s in summaries if s["name"] == "http.server.active_requests"]
    expect(sum(s["value"] for s in active)) == 0  # +1 and -1 per request


FLASK_SCRIPT = """
from flask import Flask
from werkzeug.serving import make_server
from opentelemetry.instrumentation.flask import FlaskInstrumentor

app = Flask(__name__)

@app.route("/users/<int:user>")
def user(user):
    return f"user {user}"

@app.route("/boom")
def boom():
    raise RuntimeError("boom")

FlaskInstrumentor().instrument_app(app)
server = make_server("127.0.0.1", 0, app)
threading.Thread(target=server.serve_forever, daemon=True).start()
base = f"http://127.0.0.1:{server.server_port}"
for i in range(REQUESTS):
    assert get(f"{base}/users/{i}") == 200  # a raw path per request: one route
for _ in range(REQUESTS // 4):
    assert get(f"{base}/boom") == 500
server.shutdown()
done()
"""


def test_the_flask_instrumentation_times_routes_and_failures_through_zibrato(tmp_path, pipeline):
    p = pipeline()
    run_app(tmp_path, p, FLASK_SCRIPT, "http")
    summaries = p.stop_worker()
    stable = series(summaries, "http.server.request.duration")
    expect(sorted(stable)) == [
        ("http.request.method:GET", "http.response.status_code:200", "http.route:/users/<int:user>"),
        ("http.request.method:GET", "http.response.status_code:500", "http.route:/boom"),
    ]
    counts = {key[-1]: summary["count"] for key, summary in stable.items()}
    expect(counts) == {"http.route:/users/<int:user>": REQUESTS, "http.route:/boom": REQUESTS // 4}
    expect(series(summaries, "http.server.duration")) == {}  # the stable conventions only


ASGI_SCRIPT = """
import asyncio, socket, uvicorn
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
port = listener.getsockname()[1]
server = uvicorn.Server(uvicorn.Config(OpenTelemetryMiddleware(app), log_level="warning"))
thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
thread.start()
while not server.started:
    threading.Event().wait(0.01)
for _ in range(REQUESTS):
    assert get(f"http://127.0.0.1:{port}/hello") == 200
for _ in range(REQUESTS // 2):
    assert get(f"http://127.0.0.1:{port}/missing") == 404
server.should_exit = True
thread.join(10)
done()
"""


def test_the_asgi_instrumentation_under_uvicorn_times_every_request_through_zibrato(tmp_path, pipeline):
    pytest.importorskip("uvicorn")
    p = pipeline()
    run_app(tmp_path, p, ASGI_SCRIPT, "http")
    summaries = p.stop_worker()
    stable = series(summaries, "http.server.request.duration")
    counts = {key: summary["count"] for key, summary in stable.items()}
    expect(counts) == {
        ("http.request.method:GET", "http.response.status_code:200"): REQUESTS,
        ("http.request.method:GET", "http.response.status_code:404"): REQUESTS // 2,
    }
    expect({s["type"] for s in stable.values()}) == {"timer"}
