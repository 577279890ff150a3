"""The web view's HTTP server: standard library only (ThreadingHTTPServer in a thread).

Routes (stable; docs/WEB.md describes every key):

* ``GET /``: the page, with the first page of the table rendered in it (page.py);
  ``GET /static/web.js``, ``/static/web.css``: its assets,
  read from the installed package (nothing is fetched from elsewhere);
* ``GET /api/summary``: the last interval and the history held;
* ``GET /api/series?q=&type=&offset=&limit=``: one page of the last interval's
  table, filtered on the server (so 10,000 series cost the browser 100 rows);
* ``GET /api/chart?id=``: a series and its outcome siblings over the held intervals;
* ``GET /api/events``: server-sent events, one ``flush`` event per interval.

Wire data reaches the page as JSON, which the script writes with
``textContent``, or, in the first table page of ``GET /``, through
``html.escape``; a Content-Security-Policy allowing only this server's own
script is a second wall. A loopback server answers only requests whose
``Host`` is a loopback name, so a web page elsewhere cannot read it through
DNS rebinding.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from ..http_server import (
    LOOPBACK_NAMES,
    GuardedHandler,
    GuardedHTTPServer,
    HttpLimits,
    host_allowed,
    is_loopback,
)
from . import page
from .view import History

log = logging.getLogger("zibrato.web")

#: files the page needs: name -> content type (nothing else under static/ is served)
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "web.js": "text/javascript; charset=utf-8",
    "web.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
KEEPALIVE_SECONDS = 15.0
DEFAULT_MAX_EVENT_STREAMS = 32  # a few pages per operator; each stream holds a thread and a connection
__all__ = ["LOOPBACK_NAMES", "WebServer", "is_loopback", "parse_listen"]


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:8080' -> ('127.0.0.1', 8080); '[::1]:8080' -> ('::1', 8080). ValueError if not."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"--listen wants HOST:PORT (e.g. 127.0.0.1:8080), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--listen port must be a number, got {port!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"--listen port must be 0-65535, got {number}")
    return host, number


class _HTTPServer(GuardedHTTPServer):
    def __init__(
        self,
        address: tuple[str, int],
        history: History,
        *,
        limits: HttpLimits | None = None,
        allowed_hosts: tuple[str, ...] = (),
        max_event_streams: int = DEFAULT_MAX_EVENT_STREAMS,
    ) -> None:
        self.history = history
        self.stopping = threading.Event()
        self.loopback_only = is_loopback(address[0])
        self.allowed_hosts = allowed_hosts
        self.max_event_streams = max_event_streams
        self.event_streams = 0
        self.event_streams_refused = 0
        self.requests = 0
        self.streams_lock = threading.Lock()
        super().__init__(address, _Handler, limits=limits, log=log)


class WebServer:
    """Bind at construction (so a port in use is an error at once), serve in a thread."""

    def __init__(
        self,
        host: str,
        port: int,
        history: History,
        *,
        limits: HttpLimits | None = None,
        allowed_hosts: tuple[str, ...] = (),
        max_event_streams: int = DEFAULT_MAX_EVENT_STREAMS,
    ) -> None:
        self._server = _HTTPServer(
            (host, port), history, limits=limits, allowed_hosts=allowed_hosts, max_event_streams=max_event_streams
        )
        self.host = host
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> WebServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="zibrato-web-http", daemon=True
        )
        self._thread.start()
        return self

    def figures(self) -> dict:
        server = self._server
        return {
            "url": self.url,
            "requests": server.requests,
            "event_streams": server.event_streams,
            "max_event_streams": server.max_event_streams,
            "event_streams_refused": server.event_streams_refused,
            **server.figures(),
        }

    def stop(self) -> None:
        """Stop accepting, end the event streams, close the socket (once; later calls do nothing)."""
        if self._server.stopping.is_set():
            return
        self._server.stopping.set()
        self._server.history.wake_all()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


class _Handler(GuardedHandler):
    server: _HTTPServer
    server_version = "zibrato-web"
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # http.server's naming
        self.server.requests += 1
        if not host_allowed(self.headers.get("Host"), self.server.loopback_only, self.server.allowed_hosts):
            self._json({"error": "this server answers only loopback host names"}, HTTPStatus.FORBIDDEN)
            return
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        route = _ROUTES.get(url.path)
        if route is not None:
            try:
                route(self, query)
            except ValueError as error:
                self._json({"error": str(error)}, HTTPStatus.BAD_REQUEST)
        elif url.path.startswith("/static/") and url.path[len("/static/") :] in STATIC:
            self._static(url.path[len("/static/") :])
        else:
            self._json({"error": f"no such page: {url.path}"}, HTTPStatus.NOT_FOUND)

    # --- routes ------------------------------------------------------------

    def _index(self, query: dict) -> None:
        """The page with the first table page in it (page.py), so that it shows data without script."""
        data = page.render(self.server.history).encode("utf-8")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", STATIC["index.html"])
        self.send_header("Cache-Control", "no-store")
        self._send_body(data)

    def _favicon(self, query: dict) -> None:
        self.send_response(HTTPStatus.NO_CONTENT)  # no icon, and no 404 in the browser's console
        self._send_body(b"")

    def _summary(self, query: dict) -> None:
        self._json(self.server.history.summary())

    def _series(self, query: dict) -> None:
        self._json(
            self.server.history.table(
                query=query.get("q", ""),
                type=query.get("type", ""),
                offset=_integer(query, "offset", 0),
                limit=_integer(query, "limit", 100),
            )
        )

    def _chart(self, query: dict) -> None:
        chart = self.server.history.chart(query.get("id", ""))
        if chart is None:
            self._json({"error": "no such series in the held intervals"}, HTTPStatus.NOT_FOUND)
        else:
            self._json(chart)

    def _events(self, query: dict) -> None:
        """One ``flush`` event per interval (and at once, with the current state); comments keep it alive."""
        history, server = self.server.history, self.server
        with server.streams_lock:
            full = server.event_streams >= server.max_event_streams
            if full:
                server.event_streams_refused += 1
            else:
                server.event_streams += 1
        if full:
            server.count_refusal("refused an event stream: %d open (--max-event-streams)", server.max_event_streams)
            self.close_connection = True
            self._json({"error": "too many event streams open; try again later"}, HTTPStatus.SERVICE_UNAVAILABLE)
            return
        try:
            self._stream_events(history, server)
        finally:
            with server.streams_lock:
                server.event_streams -= 1

    def _stream_events(self, history: History, server: _HTTPServer) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self._security_headers()
        self.end_headers()
        try:
            self.wfile.write(b"retry: 2000\n\n")
            seen = -1
            while not server.stopping.is_set():
                version = history.wait_for_change(seen, KEEPALIVE_SECONDS)
                if server.stopping.is_set():
                    break
                if version == seen:
                    self.wfile.write(b": keepalive\n\n")
                else:
                    data = json.dumps(history.summary(), separators=(",", ":"))
                    self.wfile.write(f"event: flush\nid: {version}\ndata: {data}\n\n".encode())
                    seen = version
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the page went away

    # --- answers -----------------------------------------------------------

    def _json(self, body: object, status: HTTPStatus = HTTPStatus.OK) -> None:
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self._send_body(data)

    def _static(self, name: str) -> None:
        data = resources.files(__package__).joinpath("static").joinpath(name).read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", STATIC[name])
        self.send_header("Cache-Control", "no-cache")
        self._send_body(data)

    def _send_body(self, data: bytes) -> None:
        self.send_header("Content-Length", str(len(data)))
        self._security_headers()
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _security_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _integer(query: dict, key: str, default: int) -> int:
    text = query.get(key)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{key} must be a whole number, got {text!r}") from None


_ROUTES = {
    "/": _Handler._index,
    "/index.html": _Handler._index,
    "/api/summary": _Handler._summary,
    "/api/series": _Handler._series,
    "/api/chart": _Handler._chart,
    "/api/events": _Handler._events,
    "/favicon.ico": _Handler._favicon,
}
