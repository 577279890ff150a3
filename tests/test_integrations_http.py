"""zibrato.integrations.wsgi and .asgi: what one request records, with the real client in memory.

The WSGI side is driven by the standard library's own server handler
(wsgiref), the ASGI side by the protocol's messages: exceptions propagate
unchanged and are timed, a streaming response is recorded only after its
last chunk, unknown methods become _OTHER, WebSocket is timed per
connection, lifespan passes through.
"""

from __future__ import annotations

import asyncio
import gc
import io
import wsgiref.util
from wsgiref.handlers import SimpleHandler

import pytest
from expecter import expect

from zibrato.integrations import asgi, wsgi
from zibrato.integrations._http import KNOWN_METHODS, fit_tag
from zibrato.testing import MemoryZibrato

DURATION = "http.server.request.duration"


class Boom(Exception):
    pass


def environ(method: str = "GET", path: str = "/users/42") -> dict:
    env: dict = {}
    wsgiref.util.setup_testing_defaults(env)
    env["REQUEST_METHOD"], env["PATH_INFO"] = method, path
    return env


def serve_wsgi(app, env: dict) -> tuple[bytes, BaseException | None]:
    """Run one request through wsgiref's real handler (it calls close(), as PEP 3333 says)."""
    out, errors = io.BytesIO(), io.StringIO()
    handler = SimpleHandler(io.BytesIO(), out, errors, env)
    raised = None
    try:
        handler.run(app)
    except BaseException as error:  # wsgiref logs and answers 500; we only look
        raised = error
    return out.getvalue(), raised


def timers(z) -> list:
    return z.measurements.find(name=DURATION, type="timer")


# --- WSGI -------------------------------------------------------------------------------------


def test_wsgi_records_one_timer_with_method_status_and_the_hooked_route():
    z = MemoryZibrato()

    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"made"]

    routed = wsgi.ZibratoMiddleware(app, z, route=lambda environ: "/users/{id}")
    body, raised = serve_wsgi(routed, environ("POST"))
    expect(raised) == None
    expect(body).contains(b"made")
    (m,) = timers(z)
    expect(m.tags) == ("http.request.method:POST", "http.response.status_code:201", "http.route:/users/{id}")
    expect(m.value >= 0) == True
    expect(m.level) == "info"


def test_wsgi_never_tags_the_raw_path_and_names_unknown_methods_other():
    z = MemoryZibrato()

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    plain = wsgi.ZibratoMiddleware(app, z, level="web")
    for method in ("PROPFIND", "get", "BREW"):
        serve_wsgi(plain, environ(method, path=f"/secret/{method}"))
    found = timers(z)
    expect(len(found)) == 3
    for m in found:
        expect(m.tags) == ("http.request.method:_OTHER", "http.response.status_code:200")
        expect(m.level) == "web"
    expect(KNOWN_METHODS) == {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}


def test_wsgi_exception_from_the_call_propagates_unchanged_and_is_timed():
    z = MemoryZibrato()
    error = Boom("no")

    def app(environ, start_response):
        raise error

    wrapped = wsgi.ZibratoMiddleware(app, z)
    with pytest.raises(Boom) as caught:
        wrapped(environ(), lambda *a: None)
    expect(caught.value is error) == True
    (m,) = timers(z)
    # no response was started: the server answers 500, and that is what is recorded
    expect(m.tags) == ("error.type:Boom", "http.request.method:GET", "http.response.status_code:500")


def test_wsgi_exception_while_streaming_is_timed_once_with_the_status_already_sent():
    z = MemoryZibrato()

    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"first"
        raise Boom("mid-stream")

    body, raised = serve_wsgi(wsgi.ZibratoMiddleware(app, z), environ())
    expect(body).contains(b"first")
    (m,) = timers(z)
    expect(m.tags) == ("error.type:Boom", "http.request.method:GET", "http.response.status_code:200")


def test_wsgi_streaming_response_is_recorded_after_its_last_chunk_at_close():
    z = MemoryZibrato()

    def app(environ, start_response):
        start_response("200 OK", [])
        for i in range(3):
            yield b"chunk%d" % i

    body = wsgi.ZibratoMiddleware(app, z)(environ(), lambda *a: None)
    chunks = iter(body)
    for _ in range(3):
        next(chunks)
        expect(timers(z)) == []  # not at the first byte, nor at any chunk before the end
    with pytest.raises(StopIteration):
        next(chunks)
    expect(timers(z)) == []
    body.close()
    (m,) = timers(z)
    expect(m.tags) == ("http.request.method:GET", "http.response.status_code:200")
    body.close()  # a second close records nothing more
    expect(len(timers(z))) == 1


def test_wsgi_client_gone_mid_stream_is_still_recorded_when_the_server_closes():
    z = MemoryZibrato()
    closed = []

    class Body:
        """An iterator with close(), as werkzeug's ClosingIterator is."""

        def __init__(self):
            self.chunks = [b"a", b"b"]

        def __iter__(self):
            return self

        def __next__(self):
            if not self.chunks:
                raise StopIteration
            return self.chunks.pop(0)

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    body = wsgi.ZibratoMiddleware(app, z)(environ(), lambda *a: None)
    chunks = iter(body)
    next(chunks)  # the server wrote one chunk, then the socket broke
    body.close()
    expect(closed) == [True]  # the application's own close() runs
    expect(len(timers(z))) == 1
    del chunks  # the server drops the half-read iterator
    gc.collect()
    expect(closed) == [True]  # and not a second time


def test_wsgi_5xx_without_exception_gets_its_status_as_error_type_and_handled_errors_their_class():
    z = MemoryZibrato()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/handled":
            environ[wsgi.ERROR_KEY] = "ValueError"  # what the Flask integration leaves
            environ[wsgi.ROUTE_KEY] = "/handled"
        start_response("503 Service Unavailable", [])
        return [b""]

    wrapped = wsgi.ZibratoMiddleware(app, z)
    serve_wsgi(wrapped, environ(path="/down"))
    serve_wsgi(wrapped, environ(path="/handled"))
    first, second = timers(z)
    expect(first.tags) == ("error.type:503", "http.request.method:GET", "http.response.status_code:503")
    expect(second.tags) == (
        "error.type:ValueError",
        "http.request.method:GET",
        "http.response.status_code:503",
        "http.route:/handled",
    )


def test_wsgi_route_hook_that_raises_costs_the_route_not_the_request(caplog):
    z = MemoryZibrato()

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    def broken(environ):
        raise KeyError("route")

    wrapped = wsgi.ZibratoMiddleware(app, z, route=broken)
    serve_wsgi(wrapped, environ())
    serve_wsgi(wrapped, environ())
    expect([m.tags for m in timers(z)]) == [("http.request.method:GET", "http.response.status_code:200")] * 2
    expect(sum("route= hook raised" in r.message for r in caplog.records)) == 1  # logged once


def test_wsgi_active_requests_go_up_while_running_and_back_down():
    z = MemoryZibrato()
    seen = []

    def app(environ, start_response):
        seen.append(sum(m.value for m in z.measurements.find(name="http.server.active_requests")))
        start_response("200 OK", [])
        return [b""]

    serve_wsgi(wsgi.ZibratoMiddleware(app, z, active_requests=True), environ("DELETE"))
    expect(seen) == [1]
    active = z.measurements.find(name="http.server.active_requests", type="counter")
    expect([m.value for m in active]) == [1, -1]
    expect({m.tags for m in active}) == {("http.request.method:DELETE",)}


def test_a_bad_level_raises_when_the_middleware_is_made():
    with pytest.raises(ValueError, match="level"):
        wsgi.ZibratoMiddleware(lambda e, s: [], MemoryZibrato(), level="no spaces")


def test_route_tags_keep_their_characters_within_the_clients_tag_rule():
    expect(fit_tag("http.route", "/users/<int:id>")) == "http.route:/users/<int:id>"
    expect(fit_tag("http.route", "/a\nb")) == "http.route:/a_b"
    expect(len(fit_tag("http.route", "/x" * 300))) == 255
    z = MemoryZibrato()

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    serve_wsgi(wsgi.ZibratoMiddleware(app, z, route=lambda e: "/r/" + "x" * 400), environ())
    (m,) = timers(z)
    expect(max(len(t) for t in m.tags)) == 255


# --- ASGI -------------------------------------------------------------------------------------


def run_asgi(app, scope: dict, incoming: list[dict] | None = None) -> tuple[list[dict], BaseException | None]:
    sent: list[dict] = []
    queue = list(incoming or [{"type": "http.request", "body": b"", "more_body": False}])

    async def receive():
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    async def main():
        try:
            await app(scope, receive, send)
        except BaseException as error:
            return error
        return None

    return sent, asyncio.run(main())


def http_scope(method: str = "GET", path: str = "/items/7") -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "method": method, "path": path, "headers": [], "scheme": "http"}


def test_asgi_records_after_the_final_body_with_status_and_scope_route():
    z = MemoryZibrato()
    order = []

    class Route:
        path = "/items/{item_id}"

    async def app(scope, receive, send):
        scope["route"] = Route()  # what Starlette's and FastAPI's routers leave
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            order.append(len(timers(z)))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        order.append(len(timers(z)))

    sent, error = run_asgi(asgi.ZibratoMiddleware(app, z), http_scope())
    expect(error) == None
    expect(order) == [0, 0, 0, 1]  # nothing while streaming, recorded right after the last chunk
    (m,) = timers(z)
    expect(m.tags) == ("http.request.method:GET", "http.response.status_code:200", "http.route:/items/{item_id}")
    expect(len(sent)) == 5


def test_asgi_exception_propagates_unchanged_and_is_timed_with_or_without_a_status():
    z = MemoryZibrato()
    error = Boom("down")

    async def before(scope, receive, send):
        raise error

    async def after(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        raise error

    _, raised = run_asgi(asgi.ZibratoMiddleware(before, z), http_scope())
    expect(raised is error) == True
    _, raised = run_asgi(asgi.ZibratoMiddleware(after, z), http_scope("PATCH"))
    expect(raised is error) == True
    first, second = timers(z)
    expect(first.tags) == ("error.type:Boom", "http.request.method:GET", "http.response.status_code:500")
    expect(second.tags) == ("error.type:Boom", "http.request.method:PATCH", "http.response.status_code:200")


def test_asgi_cancellation_is_timed_and_propagates():
    z = MemoryZibrato()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise asyncio.CancelledError()

    _, raised = run_asgi(asgi.ZibratoMiddleware(app, z), http_scope())
    expect(type(raised)) == asyncio.CancelledError
    (m,) = timers(z)
    expect(m.tags) == ("error.type:CancelledError", "http.request.method:GET", "http.response.status_code:200")


def test_asgi_client_disconnect_before_the_end_is_recorded_when_the_app_returns():
    z = MemoryZibrato()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        message = await receive()
        if message["type"] == "http.disconnect":
            return  # the client went away: stop streaming

    _, raised = run_asgi(asgi.ZibratoMiddleware(app, z), http_scope(), [{"type": "http.disconnect"}])
    expect(raised) == None
    (m,) = timers(z)
    expect(m.tags) == ("http.request.method:GET", "http.response.status_code:200")


def test_asgi_unknown_method_is_other_and_the_route_hook_wins():
    z = MemoryZibrato()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = asgi.ZibratoMiddleware(app, z, route=lambda scope: "/hooked")
    run_asgi(wrapped, http_scope("FROB"))
    (m,) = timers(z)
    expect(m.tags) == ("http.request.method:_OTHER", "http.response.status_code:404", "http.route:/hooked")


def test_asgi_websocket_is_timed_per_connection_and_lifespan_passes_through():
    z = MemoryZibrato()
    lifespan_seen = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            message = await receive()
            lifespan_seen.append(message["type"])
            await send({"type": "lifespan.startup.complete"})
            return
        await receive()  # websocket.connect
        if scope["path"] == "/refused":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "hello"})
        await send({"type": "websocket.close", "code": 1000})

    wrapped = asgi.ZibratoMiddleware(app, z, active_requests=True)
    sent, error = run_asgi(wrapped, {"type": "lifespan", "asgi": {"version": "3.0"}}, [{"type": "lifespan.startup"}])
    expect((lifespan_seen, sent, error)) == (["lifespan.startup"], [{"type": "lifespan.startup.complete"}], None)
    expect(z.measurements) == []  # lifespan is not a request

    ws = {"type": "websocket", "path": "/ws", "headers": [], "scheme": "ws"}
    sent, error = run_asgi(wrapped, ws, [{"type": "websocket.connect"}])
    expect([m["type"] for m in sent]) == ["websocket.accept", "websocket.send", "websocket.close"]
    run_asgi(wrapped, {**ws, "path": "/refused"}, [{"type": "websocket.connect"}])
    accepted, refused = timers(z)
    expect(accepted.tags) == ("http.request.method:GET", "http.response.status_code:101")
    expect(refused.tags) == ("http.request.method:GET", "http.response.status_code:403")
    active = z.measurements.find(name="http.server.active_requests")
    expect(sum(m.value for m in active)) == 0
    expect(len(active)) == 4


def test_no_framework_is_imported_by_the_client_or_the_plain_middleware():
    """Each framework module is an optional import: the client and the WSGI/ASGI middleware need none."""
    import subprocess
    import sys

    code = (
        "import sys, zibrato, zibrato.integrations.wsgi, zibrato.integrations.asgi\n"
        "print(sorted({'flask', 'django', 'starlette', 'fastapi', 'celery'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    expect((done.returncode, done.stdout.strip())) == (0, "[]")
