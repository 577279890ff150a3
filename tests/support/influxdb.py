"""The real InfluxDB 1.x server (Debian's influxdb), run for a test and queried over its HTTP API.

:class:`InfluxDB` writes a temporary config (loopback HTTP and RPC ports,
meta, data and WAL directories under the test's own directory, reporting and
the ``_internal`` monitor off), runs ``influxd run``, and waits until
``GET /ping`` answers 204.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import requests

from .daemons import free_ports, start_server, stop_process, wait_until

INFLUXD = "influxd"


def influxd_missing() -> str | None:
    """Why the InfluxDB tests cannot run here, or None."""
    if shutil.which(INFLUXD) is None:
        return "influxd is not installed (Debian package influxdb; bin/setup --test installs it)"
    return None


class InfluxDB:
    """One influxd on 127.0.0.1; it can be stopped and started again on the same port and data."""

    def __init__(self, root: Path, auth: bool = False) -> None:
        self.root, self.auth = root, auth
        #: (user, password) of the admin made at the first start when ``auth`` is on
        self.admin = ("admin", "admin-password") if auth else None
        base = free_ports(2)
        self.http_port, self.rpc_port = base, base + 1
        self.log_path = root / "influxd.log"
        self.process: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.config = self._write_config()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _write_config(self) -> Path:
        config = self.root / "influxdb.conf"
        config.write_text(f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{self.root}/meta"
[data]
  dir = "{self.root}/data"
  wal-dir = "{self.root}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{self.http_port}"
  log-enabled = false
  auth-enabled = {str(self.auth).lower()}
[logging]
  level = "warn"
  suppress-logo = true
""")
        return config

    def start(self, timeout: float = 20.0) -> InfluxDB:
        assert self.process is None or self.process.poll() is not None, "influxd is running"
        self.process = start_server(
            [INFLUXD, "run", "-config", self.config],
            self.log_path,
            self._ready,
            f"influxd answering /ping at {self.url}",
            timeout,
        )
        if self.auth and not (self.root / "admin-created").exists():
            # with no user yet, InfluxDB lets anyone create the first admin
            user, password = self.admin
            self.query(f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
            (self.root / "admin-created").touch()
        return self

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/ping", timeout=0.5).status_code == 204
        except requests.RequestException:
            return False

    # --- the HTTP API -----------------------------------------------------------------

    def query(self, statement: str, database: str | None = None) -> dict:
        """One InfluxQL statement's result (raises on an error in it); times in ms since the epoch."""
        params = {"q": statement, "epoch": "ms"}
        if database:
            params["db"] = database
        answer = requests.post(f"{self.url}/query", params=params, timeout=10, auth=self.admin)
        answer.raise_for_status()
        result = answer.json()["results"][0]
        if "error" in result:
            raise AssertionError(f"{statement}: {result['error']}")
        return result

    def create_database(self, name: str) -> str:
        self.query(f'CREATE DATABASE "{name}"')
        return name

    def rows(self, database: str, measurement: str, where: str = "") -> list[dict]:
        """Every point of ``measurement`` as a dict of column -> value (tags included)."""
        name = measurement.replace("\\", "\\\\").replace('"', '\\"')
        result = self.query(f'SELECT * FROM "{name}" {where}', database)
        out = []
        for series in result.get("series", []):
            for values in series["values"]:
                out.append(dict(zip(series["columns"], values)))
        return out

    def wait_for_rows(
        self, database: str, measurement: str, count: int = 1, where: str = "", timeout: float = 15.0
    ) -> list[dict]:
        wait_until(
            lambda: len(self.rows(database, measurement, where)) >= count,
            timeout,
            interval=0.1,
            message=f"{count} points of {measurement}",
        )
        return self.rows(database, measurement, where)
