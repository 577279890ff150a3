"""Flask, Django and FastAPI/Starlette, each real, timed by its zibrato.integrations module in process.

The applications are tests/support/webapps (the same ones the server tests
run under gunicorn and uvicorn); the client is the real one with the
in-memory transport. Each framework: the route is the template (never the
raw path), an exception is timed and reaches the caller unchanged, a
streaming response is recorded only after its last chunk, an unknown
method is _OTHER; for ASGI, WebSocket is timed and lifespan passes through.
"""

from __future__ import annotations

import asyncio

import pytest
from expecter import expect

from zibrato.testing import MemoryZibrato

DURATION = "http.server.request.duration"
# Starlette 1.x prefers httpx2 for its TestClient and warns when it drives httpx (which works)
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def tags_of(z) -> list[tuple[str, ...]]:
    return [m.tags for m in z.measurements.find(name=DURATION, type="timer")]


def tags(method: str, status: int, route: str | None = None, error: str | None = None) -> tuple[str, ...]:
    found = [f"http.request.method:{method}", f"http.response.status_code:{status}"]
    if route:
        found.append(f"http.route:{route}")
    if error:
        found.append(f"error.type:{error}")
    return tuple(sorted(found))


def expect_the_views_own(caught: pytest.ExceptionInfo, module: str) -> None:
    """The exception that reached the caller is the one the view raised: its class, its
    message, and a traceback that still ends in the view (not a wrapper raised by the middleware)."""
    expect(type(caught.value) is ValueError) == True
    expect(str(caught.value)) == "the raising route"
    expect((caught.traceback[-1].path.name, caught.traceback[-1].name)) == (module, "boom")


# --- Flask ------------------------------------------------------------------------------------


@pytest.fixture
def flask_app():
    from support.webapps import flask_app

    z = MemoryZibrato()
    return z, flask_app.make_app(z)


def test_flask_times_each_request_by_its_url_rule(flask_app):
    z, app = flask_app
    client = app.test_client()
    for user_id in (1, 2, 3):
        expect(client.get(f"/users/{user_id}", buffered=True).status_code) == 200
    expect(client.get("/nowhere", buffered=True).status_code) == 404
    expect(client.open("/users/1", method="BREW", buffered=True).status_code) == 405
    expect(tags_of(z)) == [tags("GET", 200, "/users/<int:user_id>")] * 3 + [tags("GET", 404), tags("_OTHER", 405)]


def test_flask_exception_is_tagged_with_its_class_on_the_500_page_and_propagates_when_flask_lets_it(flask_app):
    z, app = flask_app
    expect(app.test_client().get("/boom", buffered=True).status_code) == 500  # production: Flask's own 500 page
    app.testing = True  # PROPAGATE_EXCEPTIONS: Flask re-raises, through the middleware, unchanged
    with pytest.raises(ValueError, match="the raising route") as caught:
        app.test_client().get("/boom")
    expect_the_views_own(caught, "flask_app.py")
    expect(tags_of(z)) == [tags("GET", 500, "/boom", "ValueError"), tags("GET", 500, "/boom", "ValueError")]


def test_flask_streaming_response_is_recorded_after_its_last_chunk(flask_app):
    from support.webapps.flask_app import CHUNKS

    z, app = flask_app
    response = app.test_client().get("/stream", buffered=False)
    chunks = iter(response.response)
    for _ in range(CHUNKS):
        next(chunks)
        expect(tags_of(z)) == []
    response.close()
    expect(tags_of(z)) == [tags("GET", 200, "/stream")]


# --- Django -----------------------------------------------------------------------------------


@pytest.fixture
def django_client():
    from support.webapps import django_app

    z = MemoryZibrato()
    django_app.configure(z)
    from django.test import Client

    return z, Client()


def test_django_times_each_request_by_its_url_pattern(django_client):
    z, client = django_client
    for user_id in (7, 8):
        expect(client.get(f"/users/{user_id}/").status_code) == 200
    expect(client.get("/nowhere/").status_code) == 404
    expect(client.generic("BREW", "/users/9/").status_code) == 200
    expect(tags_of(z)) == [tags("GET", 200, "/users/<int:user_id>/")] * 2 + [
        tags("GET", 404),
        tags("_OTHER", 200, "/users/<int:user_id>/"),
    ]


def test_django_view_exception_is_timed_with_its_class_and_reaches_the_caller_unchanged(django_client):
    z, client = django_client
    with pytest.raises(ValueError, match="the raising route") as caught:  # the test client re-raises the view's own
        client.get("/boom/")
    expect_the_views_own(caught, "django_app.py")
    expect(tags_of(z)) == [tags("GET", 500, "/boom/", "ValueError")]


def test_django_streaming_response_is_recorded_after_its_last_chunk(django_client):
    from support.webapps.django_app import CHUNKS

    z, client = django_client
    response = client.get("/stream/")
    chunks = iter(response.streaming_content)
    for _ in range(CHUNKS):
        next(chunks)
        expect(tags_of(z)) == []
    with pytest.raises(StopIteration):
        next(chunks)
    expect(tags_of(z)) == [tags("GET", 200, "/stream/")]


def test_django_client_can_be_a_dotted_path_and_must_be_a_client(django_client):
    from django.conf import settings

    from zibrato.integrations.django import ZibratoMiddleware

    z, _ = django_client
    settings.ZIBRATO_CLIENT = "support.webapps.django_app.ALLOWED_HOSTS"
    with pytest.raises(TypeError, match="ZIBRATO_CLIENT must be a Zibrato client"):
        ZibratoMiddleware(lambda request: None)


# --- FastAPI / Starlette ----------------------------------------------------------------------


@pytest.fixture
def fastapi_app():
    from support.webapps import fastapi_app

    z = MemoryZibrato()
    return z, fastapi_app.make_app(z, active_requests=True)


def test_fastapi_times_each_request_by_its_route_template_mounts_included(fastapi_app):
    from starlette.testclient import TestClient

    z, app = fastapi_app
    with TestClient(app) as client:  # runs the lifespan through the middleware
        for user_id in (1, 2):
            expect(client.get(f"/users/{user_id}").status_code) == 200
        expect(client.get("/legacy/v1/items/5").text) == "item 5"
        expect(client.get("/nowhere").status_code) == 404
        expect(client.request("BREW", "/users/1").status_code) == 405
    expect(tags_of(z)) == [tags("GET", 200, "/users/{user_id}")] * 2 + [
        tags("GET", 200, "/legacy/v1/items/{item_id:int}"),
        tags("GET", 404),
        tags("_OTHER", 405, "/users/{user_id}"),
    ]
    active = z.measurements.find(name="http.server.active_requests")
    expect((len(active), sum(m.value for m in active))) == (10, 0)  # five up, five down; lifespan not one


def test_fastapi_exception_is_timed_and_reaches_the_caller_unchanged(fastapi_app):
    from starlette.testclient import TestClient

    z, app = fastapi_app
    with pytest.raises(ValueError, match="the raising route") as caught:
        TestClient(app).get("/boom")
    expect_the_views_own(caught, "fastapi_app.py")
    expect(tags_of(z)) == [tags("GET", 500, "/boom", "ValueError")]


def test_fastapi_websocket_is_timed_per_connection(fastapi_app):
    from starlette.testclient import TestClient

    z, app = fastapi_app
    with TestClient(app) as client, client.websocket_connect("/ws/lobby") as ws:
        ws.send_text("hi")
        expect(ws.receive_text()) == "lobby: hi"
    expect(tags_of(z)) == [tags("GET", 101, "/ws/{room}")]


def test_fastapi_streaming_response_is_recorded_after_its_last_chunk(fastapi_app):
    from support.webapps.fastapi_app import CHUNKS

    z, app = fastapi_app
    seen: list[tuple[bool, int]] = []  # (more_body, timers recorded when the server got the chunk)

    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if requests:
            return requests.pop()
        await asyncio.sleep(3600)  # the client stays: StreamingResponse listens for a disconnect meanwhile

    async def send(message):
        if message["type"] == "http.response.body":
            seen.append((message.get("more_body", False), len(tags_of(z))))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/stream",
        "raw_path": b"/stream",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    chunks = [s for s in seen if s[0]]
    expect(len(chunks) >= CHUNKS) == True
    expect(seen[-1]) == (False, 0)  # the final chunk is with the server before the timing is taken
    expect({count for _, count in seen}) == {0}
    expect(tags_of(z)) == [tags("GET", 200, "/stream")]
