"""A loopback HTTP server that answers the way an attacker (or a broken proxy) would, for tests.

Each connection's request is read whole (head, then ``Content-Length`` bytes)
and recorded; then the scripted :attr:`HostileServer.answer` writes the
answer with raw socket calls, so it can do what no well-behaved server does:

* :func:`drip`: a status line, then one header byte every ``every`` seconds;
* :func:`redirect`: a 3xx to another URL;
* :func:`huge`: a 200 announcing and sending ``size`` bytes (it counts what
  the client really took: :attr:`HostileServer.bytes_written`);
* :func:`plain`: a normal answer with the given status and body.

Every loop is bounded (a number of bytes or steps) and ends when the server
closes; loopback only.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

Answer = Callable[["HostileServer", socket.socket], None]


class HostileServer:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[dict] = []
        self.bytes_written = 0
        self.closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn:
            try:
                while not self.closing.is_set():
                    request = _read_request(conn)
                    if request is None:
                        return
                    with self._lock:
                        self.requests.append(request)
                    self.answer(self, conn)
            except OSError:
                return

    def wrote(self, n: int) -> None:
        with self._lock:
            self.bytes_written += n


def _read_request(conn: socket.socket) -> dict | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1 << 20:
            return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return {"method": method, "path": path, "headers": headers, "body_length": length}


def plain(status: int = 200, body: bytes = b"", content_type: str = "application/x-protobuf") -> Answer:
    def answer(server: HostileServer, conn: socket.socket) -> None:
        conn.sendall(
            f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    return answer


def redirect(status: int, location: str) -> Answer:
    def answer(server: HostileServer, conn: socket.socket) -> None:
        conn.sendall(f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode())

    return answer


def drip(every: float = 0.5, steps: int = 240) -> Answer:
    """A 200 status line, then a header that never ends: one byte per ``every`` seconds."""

    def answer(server: HostileServer, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        for _ in range(steps):
            if server.closing.wait(every):
                return
            conn.sendall(b"a")

    return answer


def huge(size: int = 100 * 1024 * 1024, chunk: int = 64 * 1024) -> Answer:
    """A 200 whose body is ``size`` bytes; stops when the client stops reading (the write fails)."""

    def answer(server: HostileServer, conn: socket.socket) -> None:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {size}\r\n\r\n".encode())
        block = b"x" * chunk
        sent = 0
        conn.settimeout(10)
        while sent < size and not server.closing.is_set():
            try:
                n = conn.send(block[: size - sent])
            except OSError:
                break
            sent += n
            server.wrote(n)
        time.sleep(0)

    return answer
