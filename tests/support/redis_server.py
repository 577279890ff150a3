"""The real Redis server (Debian's ``redis-server``) on an ephemeral loopback port, for tests.

No persistence (``--save ""``, ``--appendonly no``), its working directory
a temporary one: a broker for Celery that leaves nothing behind.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from .daemons import free_ports, start_server, stop_process

BINARY = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "redis"
        self.dir.mkdir()
        self.port = free_ports(1)
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if not Path(BINARY).exists():
            raise AssertionError("redis-server is missing: apt-get install redis-server")
        self.process = start_server(
            [BINARY, "--port", self.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", self.dir, "--daemonize", "no", "--loglevel", "warning"],
            self.dir / "redis.log",
            self.ping,
            "redis-server ready",
        )
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process)
