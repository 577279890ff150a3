"""The l2met HTTP drain: logplex and log-shuttle POST octet-counted RFC5424 frames to /logs.

Authentication is a token compared in constant time, given as the drain
URL's user-info (which drains send as HTTP Basic) or as a bearer header. The
body is handed to the listener, which parses it under its lock; everything
else (bad paths, missing tokens, oversized bodies) is answered and counted
here, and never logged with its credentials.
"""

from __future__ import annotations

import base64
import hmac
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from .servers import Listener

log = logging.getLogger("zibrato.listen")


def drain_server(listener: Listener, host: str, port: int) -> ThreadingHTTPServer:
    """A bound drain server for ``listener`` (serve it in a thread); RuntimeError if it cannot bind."""
    handler = type("BoundDrainHandler", (DrainHandler,), {"listener": listener})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as error:
        raise RuntimeError(f"cannot bind --l2met {host}:{port}: {error.strerror}") from None
    server.daemon_threads = True
    return server


class DrainHandler(BaseHTTPRequestHandler):
    """POST /logs with octet-counted RFC5424 frames; a token in the URL's user-info or a bearer header."""

    listener: Listener
    protocol_version = "HTTP/1.1"
    server_version = "zibrato-listen"

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/logs":
            return self._answer(404)
        if not self._authorised():
            self.listener.count("drain_refused")
            return self._answer(401, {"WWW-Authenticate": 'Basic realm="zibrato-listen"'})
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._answer(411)
        if int(length) > self.listener.config.max_body:
            return self._answer(413)
        body = self.rfile.read(int(length))
        query = parse_qs(url.query)
        self.listener.feed_drain(body, _first(query, "prefix"), _first(query, "source-prefix"))
        self._answer(200)

    def do_GET(self) -> None:
        self._answer(405, {"Allow": "POST"})

    def _authorised(self) -> bool:
        """Constant-time comparison with the token, from Basic (user or password) or Bearer."""
        token = (self.listener.config.l2met_token or "").encode()
        if not token:
            return False
        header = self.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        candidates: list[bytes] = []
        if scheme.lower() == "bearer":
            candidates.append(credentials.strip().encode())
        elif scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(credentials.strip(), validate=True).partition(b":")
            except ValueError:
                return False
            candidates += [password, user] if password else [user]
        ok = False
        for candidate in candidates:
            ok |= hmac.compare_digest(candidate, token)
        return ok

    def _answer(self, code: int, headers: dict | None = None) -> None:
        """Answer with no body; after a refusal the unread body would poison the connection: close it."""
        if code != 200:
            self.close_connection = True
            headers = {**(headers or {}), "Connection": "close"}
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # never the Authorization header
        log.debug("drain %s: %s", self.address_string(), format % args)


def _first(query: dict, key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None
