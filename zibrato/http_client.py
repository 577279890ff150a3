"""The one way every HTTP destination posts: a total deadline, a capped answer, no redirects.

A server (or anything in the path) must not be able to stall delivery, fill
the worker's memory or send the data elsewhere; so every request made here:

* has a **total deadline**: connecting, sending and reading the *whole*
  answer (status line, headers, body) must end within ``deadline`` seconds.
  A socket timeout alone bounds each read, so an answer that trickles a byte
  every 2 s would never time out; here a watchdog shuts the socket down when
  the deadline passes, whatever the server does;
* reads at most ``max_answer_bytes`` of the answer's body (the rest is never
  read; the connection is then closed rather than reused);
* **never follows a redirect**: a 3xx raises :class:`~zibrato.delivery.Retryable`
  (``alarm=True``: an operator must fix the URL; the data is kept) naming
  the ``Location``, escaped for the log. Following one would re-send the
  interval, with its headers (tokens), to another host, or turn a POST into a
  bodyless GET that "succeeds".

API (what destinations, including the ones added later, program against)::

    from zibrato.http_client import HttpSession, post

    session = HttpSession(headers={"Content-Type": "application/json"}, verify=True, auth=None)
    answer = post(session, url, data=body, headers=None, params=None,
                  deadline=request_timeout(timeout), max_answer_bytes=DEFAULT_MAX_ANSWER_BYTES)
    answer.status, answer.reason, answer.headers.get("Retry-After"), answer.body, answer.truncated
    answer.text  # the body decoded (utf-8, errors replaced)
    session.close()

* :class:`HttpSession` keeps one keep-alive connection per scheme, host and
  port; ``headers`` (a dict, may be updated) go with every request, ``auth``
  is HTTP Basic, ``verify`` is ``True`` (the system's CAs), a CA file or
  directory, or ``False``. It is not thread-safe: one per delivery thread.
* :func:`post` returns an :class:`Answer` for every 1xx/2xx/4xx/5xx status:
  what the status *means* (retry, reject, partial success) belongs to the
  destination. It raises ``Retryable`` with ``status="timeout"`` when the
  deadline passed, ``status="connection"`` when the server could not be
  reached or the answer was not HTTP, and ``status=<3xx>`` for a redirect.
* Pass ``deadline=request_timeout(timeout)`` (from :mod:`zibrato.delivery`)
  so that a request never runs past the worker's stop deadline.

Standard library only (``http.client``), so that the deadline can reach
the socket; proxies from the environment are not used.
"""

from __future__ import annotations

import base64
import http.client
import os
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from urllib.parse import unquote, urlencode, urlsplit

from .delivery import Retryable
from .runtime import printable, printable_repr

#: answers are small (a status, an error message): 1 MiB is plenty and bounds memory
DEFAULT_MAX_ANSWER_BYTES = 1 << 20
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """A server's answer: its status, headers and at most ``max_answer_bytes`` of its body."""

    status: int
    reason: str
    headers: Message
    body: bytes
    truncated: bool = False  # the body was longer than the cap: only its start is here

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class HttpSession:
    """Default headers, credentials, TLS verification and one kept-alive connection per origin."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        verify: str | bool = True,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.headers: dict[str, str] = dict(headers or {})
        self.verify = verify
        if auth is not None:
            basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {basic}"
        self._connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}
        self._tls: ssl.SSLContext | None = None

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            if self.verify is False:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif isinstance(self.verify, str):
                is_dir = os.path.isdir(self.verify)
                context = ssl.create_default_context(
                    cafile=None if is_dir else self.verify, capath=self.verify if is_dir else None
                )
            else:
                context = ssl.create_default_context()
            self._tls = context
        return self._tls

    def _connection(self, scheme: str, host: str, port: int, timeout: float) -> http.client.HTTPConnection:
        key = (scheme, host, port)
        connection = self._connections.get(key)
        if connection is not None and connection.sock is not None and _dropped(connection.sock):
            connection.close()  # the server closed the kept-alive connection: reconnect
        if connection is None:
            if scheme == "https":
                connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls_context())
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            self._connections[key] = connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection

    def _discard(self, scheme: str, host: str, port: int) -> None:
        connection = self._connections.pop((scheme, host, port), None)
        if connection is not None:
            connection.close()


def post(
    session: HttpSession,
    url: str,
    *,
    data: bytes,
    deadline: float,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str | None] | None = None,
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
) -> Answer:
    """POST ``data`` to ``url``; the whole exchange ends within ``deadline`` seconds (see the module docstring)."""
    if not deadline > 0 or max_answer_bytes < 0:
        raise ValueError("deadline must be positive, max_answer_bytes not negative")
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname
    if scheme not in ("http", "https") or not host:
        raise ValueError(f"not an http:// or https:// URL: {printable_repr(url)}")
    port = parts.port or (443 if scheme == "https" else 80)
    shown = f"{scheme}://{_netloc(host, parts.port)}{parts.path}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if params:
        query = urlencode({k: v for k, v in params.items() if v is not None})
        target += ("&" if "?" in target else "?") + query
    extra = dict(headers or {})
    if parts.username is not None and "Authorization" not in {**session.headers, **extra}:
        user, password = unquote(parts.username), unquote(parts.password or "")  # as a browser would
        extra["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    connection = session._connection(scheme, host, port, deadline)
    watchdog = _Watchdog(connection, deadline)
    try:
        connection.putrequest("POST", target, skip_accept_encoding=True)
        for name, value in {**session.headers, **extra}.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        response = connection.getresponse()
        body, truncated = _read_capped(response, max_answer_bytes)
        if watchdog.fired:  # the shut-down socket read as an end of answer: it was cut short
            raise TimeoutError
    except (OSError, http.client.HTTPException, ValueError) as error:
        session._discard(scheme, host, port)
        if watchdog.fired:
            raise Retryable(
                f"no whole answer from {shown} within {deadline:g} s (connect, send and answer)", status="timeout"
            ) from None
        raise Retryable(
            f"no answer from {shown}: {error.__class__.__name__}: {printable(error, 300)}", status="connection"
        ) from None
    finally:
        watchdog.cancel()
    if truncated or response.will_close:
        session._discard(scheme, host, port)
    answer = Answer(response.status, response.reason, response.headers, body, truncated)
    if 300 <= answer.status < 400:
        location = answer.headers.get("Location") or ""
        raise Retryable(
            f"{shown} answered {answer.status}, a redirect to {printable_repr(location)}: redirects are "
            "not followed (the data is kept and retried); point the destination at the final URL",
            status=answer.status,
            alarm=True,
        )
    return answer


class _Watchdog:
    """Shuts the connection's socket down when the deadline passes: every blocked read then ends."""

    def __init__(self, connection: http.client.HTTPConnection, deadline: float) -> None:
        self.connection = connection
        self.fired = False
        self._timer = threading.Timer(deadline, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self.connection.sock
        if sock is not None:
            try:  # the plain socket's shutdown: an SSLSocket's would race with its reader
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        self._timer.cancel()


def check_url(url: str, what: str, credentials_from: str, shown: str | None = None) -> str:
    """``url`` if it names an http(s) host and holds no credentials (those come from files or
    the environment, never argv), else a ValueError naming ``what`` and where credentials go.
    ``shown``: the URL as an error may print it (default ``repr(url)``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL, got {shown or repr(url)}")
    if parts.username or parts.password:
        raise ValueError(f"{what} must not hold credentials: {credentials_from}")
    return url


def _read_capped(response: http.client.HTTPResponse, cap: int) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of the body, and whether there was more (then it is left unread)."""
    length = response.length
    if length is not None and length > cap:
        body = response.read(cap) if cap else b""
        return body, True
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read(min(_CHUNK, cap + 1 - size))
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks)[:cap], True


def _dropped(sock: socket.socket) -> bool:
    """An idle kept-alive socket that is readable has been closed by the server (or sent junk)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


__all__ = ["DEFAULT_MAX_ANSWER_BYTES", "Answer", "HttpSession", "check_url", "post"]
