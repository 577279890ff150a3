"""The l2met HTTP drain: logplex and log-shuttle POST octet-counted RFC5424 frames to /logs.

Authentication is a token compared in constant time, given as the drain
URL's user-info (which drains send as HTTP Basic) or as a bearer header. The
body is handed to the listener's :class:`~.inbox.Inbox`, which parses it under its lock; everything
else (bad paths, missing tokens, oversized bodies) is answered and counted
here, and never logged with its credentials.
"""

from __future__ import annotations

import base64
import hmac
import logging
from urllib.parse import parse_qs, urlsplit

from ..http_server import GuardedHandler, GuardedHTTPServer
from ..runtime import RateLimitedLog
from .config import ListenConfig
from .inbox import Inbox

log = logging.getLogger("zibrato.listen")
_refusals = RateLimitedLog(log, 10.0)


def drain_server(inbox: Inbox, host: str, port: int) -> GuardedHTTPServer:
    """A bound drain server feeding ``inbox`` (serve it in a thread); RuntimeError if it cannot bind."""
    handler = type("BoundDrainHandler", (DrainHandler,), {"inbox": inbox, "config": inbox.config})
    try:
        return GuardedHTTPServer((host, port), handler, limits=inbox.config.http_limits, log=log)
    except OSError as error:
        raise RuntimeError(f"cannot bind --l2met {host}:{port}: {error.strerror}") from None


class DrainHandler(GuardedHandler):
    """POST /logs with octet-counted RFC5424 frames; a token in the URL's user-info or a bearer header."""

    inbox: Inbox
    config: ListenConfig
    protocol_version = "HTTP/1.1"
    server_version = "zibrato-listen"

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/logs":
            return self._refuse(404, "no such path")
        if not self._authorised():
            return self._refuse(401, "no valid token", {"WWW-Authenticate": 'Basic realm="zibrato-listen"'})
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._refuse(411, "no Content-Length")
        if int(length) > self.config.max_body:
            return self._refuse(413, f"a body of {length} bytes (over --max-body)")
        body = self.rfile.read(int(length))
        query = parse_qs(url.query)
        self.inbox.feed_drain(body, _first(query, "prefix"), _first(query, "source-prefix"))
        self._answer(200)

    def do_GET(self) -> None:
        self._refuse(405, "a GET", {"Allow": "POST"})

    def _refuse(self, code: int, why: str, headers: dict | None = None) -> None:
        """Answer ``code``; count it and log it, rate-limited, never with credentials.

        A request without a valid token counts in ``drain_refused``, any other
        refusal (path, method, length) in ``drain_invalid``.
        """
        self.inbox.count("drain_refused" if code == 401 else "drain_invalid")
        _refusals.warning("refused a drain request from %s with %d: %s", self.client_address[0], code, why)
        self._answer(code, headers)

    def _authorised(self) -> bool:
        """Constant-time comparison with the token, from Basic (user or password) or Bearer."""
        token = (self.config.l2met_token or "").encode()
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
