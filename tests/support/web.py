"""A real broker and a real zibrato-web subprocess on free ports, and a JSON reader for its endpoints."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from .daemons import wait_until
from .pipeline import WorkerPipeline


class WebPipeline(WorkerPipeline):
    """``zibrato-broker`` + ``zibrato-web --listen 127.0.0.1:0``; :attr:`url` is read from its log."""

    script = "zibrato-web"
    ready_log = "web worker:"

    def __init__(self, tmp_path: Path, *worker_args: object, flush: float = 0.5, **kwargs) -> None:
        super().__init__(tmp_path, "--listen", "127.0.0.1:0", *worker_args, flush=flush, **kwargs)
        self.url = ""

    def start(self) -> WebPipeline:
        super().start()
        self.url = re.search(r"web view at (http://\S+/)", self.worker.stderr).group(1)
        return self

    def get(self, path: str) -> dict:
        return get_json(self.url.rstrip("/") + path)

    def wait_for_series(self, name: str, timeout: float = 10.0, **fields: object) -> list[dict]:
        """Rows of the last interval named ``name`` (and with these fields), once there are some."""

        def rows() -> list[dict]:
            found = self.get("/api/series?limit=1000")["rows"]
            return [r for r in found if r["name"] == name and all(r.get(k) == v for k, v in fields.items())]

        return wait_until(rows, timeout, interval=0.05, message=f"series {name!r} in the web view")


def get_json(url: str) -> dict:
    """GET ``url`` and decode its JSON body (also of an error answer)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        body = json.load(error)
        body["status"] = error.code
        return body
