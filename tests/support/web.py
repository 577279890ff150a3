"""A real broker and a real zibrato-web subprocess on free ports, and a JSON reader for its endpoints."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
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


class _RowReader(HTMLParser):
    """The rows of ``#series tbody`` in an HTML page: each ``{"id", "class", "cells"}`` (cell texts)."""

    def __init__(self) -> None:
        super().__init__()  # convert_charrefs: &lt; reads as <, as a browser shows it
        self.rows: list[dict] = []
        self.tbody = False
        self.cell: list[str] | None = None
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        attributes = dict(attrs)
        if tag == "tbody":
            self.tbody = True
        elif self.tbody and tag == "tr":
            self.rows.append({"id": attributes.get("data-id"), "class": attributes.get("class"), "cells": []})
        elif self.tbody and tag == "td":
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self.tbody = False
        elif tag == "td" and self.cell is not None:
            self.rows[-1]["cells"].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def page_rows(html: str) -> list[dict]:
    """The table rows the server rendered into ``html``, as text (what a browser without script shows)."""
    reader = _RowReader()
    reader.feed(html)
    reader.close()
    return reader.rows


def page_tags(html: str) -> list[str]:
    """Every start tag of ``html``, in order (to count ``script`` elements, say)."""
    reader = _RowReader()
    reader.feed(html)
    reader.close()
    return reader.tags


def get_page(url: str) -> str:
    """GET the page at ``url`` as text."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode("utf-8")


@contextlib.contextmanager
def sending(client, record: Callable[[], None], every: float = 0.1) -> Iterator[None]:
    """Keep recording (the table shows the last interval's series, as a live application would)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            record()
            client.flush()
            stop.wait(every)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
