"""The real VictoriaMetrics (Debian's `victoria-metrics`, single node) on an ephemeral loopback port, for tests.

Temporary storage; ``-search.latencyOffset=0s`` so that a point is queryable at
once (by default points newer than 30 s are hidden). It takes remote write on
``/api/v1/write`` and answers Prometheus' query API on ``/api/v1/query``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .daemons import free_ports, start_server, stop_process, wait_until
from .prometheus_server import answers_ok, instant_query

BINARY = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


class VictoriaMetrics:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "victoria-metrics"
        self.dir.mkdir(exist_ok=True)
        self.port = free_ports(1)
        self.log_path = self.dir / "victoria-metrics.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> VictoriaMetrics:
        if not Path(BINARY).exists():
            raise AssertionError("VictoriaMetrics is missing: run bin/setup --test (apt-get install victoria-metrics)")
        self.process = start_server(
            [
                BINARY,
                f"-storageDataPath={self.dir / 'data'}",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                "-search.latencyOffset=0s",
                "-loggerLevel=WARN",
            ],
            self.log_path,
            self._ready,
            "VictoriaMetrics ready",
            timeout=30,
        )
        return self

    def _ready(self) -> bool:
        return answers_ok(self.url + "/health")

    def query(self, expr: str) -> list[dict]:
        return instant_query(self.url, expr)

    def wait_value(self, expr: str, expected: float, timeout: float = 20.0) -> None:
        last: list = [None]

        def matches() -> bool:
            last[0] = self.query(expr)
            return len(last[0]) == 1 and last[0][0]["value"] == expected

        try:
            wait_until(matches, timeout=timeout, interval=0.25, message=f"{expr} == {expected}")
        except AssertionError as error:
            raise AssertionError(f"{error}; VictoriaMetrics last answered {last[0]}") from None

    def stop(self) -> None:
        stop_process(self.process)
