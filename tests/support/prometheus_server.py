"""The real Prometheus server (Debian's `prometheus` package) on an ephemeral loopback port, for tests.

It scrapes the given targets every second with a temporary config and
temporary storage; :meth:`PrometheusServer.query` asks its HTTP API what it
stored, and :meth:`PrometheusServer.wait_value` polls until a query answers
the expected value (a scrape is at most a second away), failing with what it
last saw.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from .daemons import free_ports, start_server, stop_process, wait_until

BINARY = shutil.which("prometheus") or "/usr/bin/prometheus"


class PrometheusServer:
    def __init__(
        self, tmp_path: Path, targets: list[str], scrape_interval: str = "1s", flags: tuple[str, ...] = ()
    ) -> None:
        """``flags``: more command-line flags, e.g. ``--enable-feature=native-histograms`` or
        ``--web.enable-remote-write-receiver`` (then ``targets`` may be empty)."""
        self.dir = tmp_path / "prometheus"
        self.dir.mkdir(exist_ok=True)
        self.flags = tuple(flags)
        self.port = free_ports(1)
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(
            "global:\n"
            f"  scrape_interval: {scrape_interval}\n"
            f"  evaluation_interval: {scrape_interval}\n"
            "scrape_configs:\n"
            "  - job_name: zibrato\n"
            f"    scrape_interval: {scrape_interval}\n"
            "    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
        )
        self.log_path = self.dir / "prometheus.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        if not Path(BINARY).exists():
            raise AssertionError("the Prometheus server is missing: run bin/setup --test (apt-get install prometheus)")
        self.process = start_server(
            [
                BINARY,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
                *self.flags,
            ],
            self.log_path,
            self._ready,
            "Prometheus ready",
            timeout=30,
        )
        return self

    def _ready(self) -> bool:
        return answers_ok(self.url + "/-/ready")

    def query(self, expr: str) -> list[dict]:
        """The instant vector for ``expr``: [{"metric": {...}, "value": float}, ...]."""
        return instant_query(self.url, expr)

    def raw(self, expr: str) -> list[dict]:
        """The instant vector as the API answers it (a native histogram has "histogram", not "value")."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return result[0]["value"] if len(result) == 1 else None

    def wait_value(self, expr: str, expected: float, timeout: float = 20.0) -> float:
        last: list = [None]

        def matches() -> bool:
            last[0] = self.query(expr)
            return len(last[0]) == 1 and last[0][0]["value"] == expected

        try:
            wait_until(matches, timeout=timeout, interval=0.25, message=f"{expr} == {expected}")
        except AssertionError as error:
            raise AssertionError(f"{error}; Prometheus last answered {last[0]}") from None
        return expected

    def targets_up(self) -> bool:
        return self.value("up") == 1.0

    def stop(self) -> None:
        stop_process(self.process)


def answers_ok(url: str) -> bool:
    """True when ``url`` answers 200 now (a readiness probe)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def instant_query(base_url: str, expr: str) -> list[dict]:
    """A Prometheus-compatible API's instant vector for ``expr`` (Prometheus, VictoriaMetrics):
    [{"metric": {...}, "value": float}, ...]; a scalar answer is one unlabelled sample."""
    url = f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    data = body["data"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": float(data["result"][1])}]
    return [{"metric": r["metric"], "value": float(r["value"][1])} for r in data["result"]]
