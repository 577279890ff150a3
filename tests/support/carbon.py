"""The real Graphite carbon-cache (Debian's graphite-carbon), run for a test and read back with whisper.

:class:`Carbon` writes a temporary ``carbon.conf`` and ``storage-schemas.conf``
(every series kept at 1-second resolution for an hour, whisper files under the
test's own directory, loopback listeners on free ports), runs ``carbon-cache
--nodaemon`` in the foreground, and waits until its line receiver accepts
connections. Carbon writes whisper files asynchronously, so tests read them
with :meth:`Carbon.wait_for_points`, which polls until the expected points are there.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .daemons import free_ports, start_server, stop_process, wait_until

CARBON_CACHE = "carbon-cache"
RETENTION = "1s:1h"


def carbon_missing() -> str | None:
    """Why the carbon tests cannot run here, or None."""
    if shutil.which(CARBON_CACHE) is None:
        return "carbon-cache is not installed (Debian package graphite-carbon; bin/setup --test installs it)"
    try:
        import whisper  # noqa: F401
    except ImportError:
        return "the whisper module is not installed (bin/setup --test installs it)"
    return None


class Carbon:
    """One carbon-cache on 127.0.0.1; it can be stopped and started again on the same port and files."""

    def __init__(self, root: Path, tags: bool = False) -> None:
        self.root = root
        self.storage = root / "storage"
        self.whisper_dir = self.storage / "whisper"
        self.log_path = root / "carbon.log"
        self.port = free_ports(1)
        self.tags = tags
        self.process: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.config = self._write_config()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        (self.root / "storage-schemas.conf").write_text(f"[everything]\npattern = .*\nretentions = {RETENTION}\n")
        config = self.root / "carbon.conf"
        config.write_text(f"""[cache]
STORAGE_DIR = {self.storage}/
LOCAL_DATA_DIR = {self.whisper_dir}/
CONF_DIR = {self.root}/
LOG_DIR = {self.storage}/log/
PID_DIR = {self.storage}/
USER =
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = inf
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {self.port}
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = 0
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = 0
LOG_LISTENER_CONN_SUCCESS = False
ENABLE_TAGS = {self.tags}
TAG_HASH_FILENAMES = True
GRAPHITE_URL = http://127.0.0.1:1
""")
        return config

    def start(self, timeout: float = 20.0) -> Carbon:
        assert self.process is None or self.process.poll() is not None, "carbon is running"
        self.process = start_server(
            [
                CARBON_CACHE,
                f"--config={self.config}",
                f"--pidfile={self.storage}/carbon.pid",
                f"--logdir={self.storage}/log",
                "--nodaemon",
                "start",
            ],
            self.log_path,
            self._accepting,
            f"carbon-cache listening on {self.address}",
            timeout,
        )
        return self

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    # --- reading what carbon stored -----------------------------------------------

    def whisper_file(self, metric: str) -> Path:
        """Where carbon keeps ``metric`` (tagged series under _tagged/, by the hash of their path)."""
        if ";" in metric:
            name, *tags = metric.split(";")
            normalised = ";".join([name, *sorted(tags)])
            digest = hashlib.sha256(normalised.encode("utf-8")).hexdigest()
            return self.whisper_dir / "_tagged" / digest[:3] / digest[3:6] / f"{digest}.wsp"
        return self.whisper_dir.joinpath(*metric.split(".")).with_suffix(".wsp")

    def points(self, metric: str) -> dict[int, float]:
        """Every point stored for ``metric``: {timestamp: value} (empty if no file yet)."""
        import whisper

        path = self.whisper_file(metric)
        if not path.exists():
            return {}
        now = int(time.time())
        try:
            (start, _end, step), values = whisper.fetch(str(path), now - 3500, now + 60)
        except (whisper.WhisperException, OSError, ValueError):  # carbon is still creating it
            return {}
        return {start + i * step: v for i, v in enumerate(values) if v is not None}

    def wait_for_points(self, metric: str, count: int = 1, timeout: float = 15.0) -> dict[int, float]:
        """Poll until ``metric`` has at least ``count`` points; return them."""
        try:
            wait_until(
                lambda: len(self.points(metric)) >= count,
                timeout,
                interval=0.1,
                message=f"{count} points of {metric} in whisper",
            )
        except AssertionError as error:
            raise AssertionError(
                f"{error}; metrics so far: {self.metrics()}; carbon's log ends:\n{self.log[-2000:]}"
            ) from None
        return self.points(metric)

    def metrics(self) -> list[str]:
        """Every untagged metric path carbon has created so far."""
        return sorted(
            ".".join(p.relative_to(self.whisper_dir).with_suffix("").parts)
            for p in self.whisper_dir.rglob("*.wsp")
            if "_tagged" not in p.parts
        )
