"""The page the web view's server sends holds the first page of the table (no script needed):
the same rows, order and paging as /api/series, every wire string escaped; against a real broker
and a real zibrato-web worker, and against the server with a History filled here."""

from __future__ import annotations

import re
import urllib.request

import pytest

from support.daemons import wait_until
from support.web import WebPipeline, get_json, get_page, page_rows, page_tags, sending
from zibrato.web import page
from zibrato.web.server import WebServer
from zibrato.web.view import History, row

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_SOURCE = "<b>bold</b>"
HOSTILE_TAG = "note:<img src=x onerror=window.__pwned=1>"
T0 = 1_800_000_000.0


def gauge(name: str, value: float = 1.0, source: str | None = None, tags: tuple = ()) -> dict:
    return {
        "time": T0,
        "interval": 2.0,
        "type": "gauge",
        "name": name,
        "source": source,
        "tags": list(tags),
        "value": value,
        "min": value,
        "max": value,
        "count": 1,
    }


def served_and_json(url: str, names: set[str]) -> tuple[str, dict]:
    """The page and /api/series of one interval holding ``names`` (retried when a flush fell
    between the two GETs, or an interval held a part of one recording)."""

    def same_version() -> tuple[str, dict] | None:
        html = get_page(url)
        table = get_json(url + "api/series")
        served = re.search(r'<table id="series" data-version="(\d+)"', html)
        if served is None or int(served.group(1)) != table["version"]:
            return None
        return (html, table) if {r["name"] for r in table["rows"]} == names else None

    return wait_until(same_version, message=f"the page and the JSON of one interval with {sorted(names)}")


@pytest.fixture
def web(tmp_path):
    pipeline = WebPipeline(tmp_path).start()
    yield pipeline
    pipeline.close()


def test_a_plain_get_of_the_page_holds_the_rows_of_the_series_sent(web):
    z = web.client

    def record() -> None:
        z.count("info", "signup", 2, source="shop")
        z.timing("info", "checkout", 0.004, tags={"outcome": "ok"})
        z.gauge("info", HOSTILE_NAME, 1, source=HOSTILE_SOURCE, tags={"note": "<img src=x onerror=window.__pwned=1>"})

    with sending(z, record):
        web.wait_for_series(HOSTILE_NAME)
        html, table = served_and_json(web.url, {"signup", "checkout", HOSTILE_NAME})
    rows = page_rows(html)
    # the same rows, in the same order, as the script's first /api/series request gets
    assert [r["id"] for r in rows] == [r["id"] for r in table["rows"]]
    by_name = {r["cells"][1]: r for r in rows}
    assert by_name["signup"]["cells"][:4] == ["counter", "signup", "shop", ""]
    assert by_name["checkout"]["cells"][:4] == ["timer", "checkout", "–", "outcome:ok"]
    assert by_name["checkout"]["class"] == "outcome-ok"
    assert by_name["checkout"]["cells"][4].startswith("count=")
    # hostile input is text: escaped in the HTML, shown verbatim, and no element of its own
    hostile = by_name[HOSTILE_NAME]
    assert hostile["cells"][:4] == ["gauge", HOSTILE_NAME, HOSTILE_SOURCE, HOSTILE_TAG]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "&lt;img src=x onerror=window.__pwned=1&gt;" in html and "<b>bold" not in html
    tags = page_tags(html)
    assert tags.count("script") == 1 and "img" not in tags and "b" not in tags  # web.js only
    assert f'data-matched="{table["matched"]}"' in html and f'data-limit="{table["limit"]}"' in html


def test_the_page_pages_as_the_json_endpoint_does():
    history = History(3)
    server = WebServer("127.0.0.1", 0, history).start()
    try:
        history.add(T0, 2.0, [gauge(f"queue.{i:03d}", i) for i in range(250)])
        html = get_page(server.url)
        table = get_json(server.url + "api/series")
    finally:
        server.stop()
    rows = page_rows(html)
    assert len(rows) == 100 == table["limit"]
    assert [r["id"] for r in rows] == [r["id"] for r in table["rows"]]
    assert [r["cells"][1] for r in rows] == [f"queue.{i:03d}" for i in range(100)]
    assert '<span id="page-info">1–100 of 250</span>' in html
    assert '<button id="prev" type="button" disabled>' in html and '<button id="next" type="button">' in html
    assert '<p id="empty" hidden>' in html
    assert "last flush " in html and " UTC · 2 s interval · 250 series · 1 of 3 intervals held" in html


def test_before_the_first_flush_the_page_says_so_and_has_no_rows():
    history = History(3)
    server = WebServer("127.0.0.1", 0, history).start()
    try:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            headers, html = response.headers, response.read().decode()
        history.add(T0, 2.0, [])
        after_an_empty_flush = get_page(server.url)
    finally:
        server.stop()
    assert page_rows(html) == []
    assert "waiting for the first flush…" in html and '<p id="empty" hidden>' in html
    assert '<button id="next" type="button" disabled>' in html
    assert headers["Cache-Control"] == "no-store"  # the page holds data now: never a stale copy
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert '<p id="empty">' in after_an_empty_flush  # an interval without series says so


def test_a_template_without_a_marker_is_a_clear_error():
    with pytest.raises(ValueError, match="exactly once"):
        page.render(History(1), "<html><body>no table</body></html>")


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        # what web.js's format() writes for the same numbers (Number(x.toPrecision(3)), String(n))
        (None, None, "–"),
        (3, None, "3"),
        (0.5, None, "0.5"),
        (2.5, "By", "2.5 By"),
        (1.125, None, "1.13"),  # toPrecision rounds an exact tie away from zero
        (-1.125, None, "-1.13"),
        (1234.5, None, "1230"),
        (123456789, None, "123000000"),
        (1.5e22, None, "1.5e+22"),
        (0.0000123, None, "0.0000123"),
        (1e-7, None, "1e-7"),
        (0, "s", "0s"),
        (0.0052, "s", "5.2ms"),
        (90, "s", "1.5min"),
        (7200, "s", "2h"),
        (0.000000123, "s", "123ns"),
        (1e-12, "s", "0.001ns"),
    ],
)
def test_numbers_are_written_as_the_script_writes_them(value, unit, shown):
    assert page.format_value(value, unit) == shown


def test_odd_values_from_the_wire_are_text_too():
    odd = {"type": "gauge", "name": 42, "source": ["<u>"], "tags": ["a:<i>", "outcome:<b>"], "value": 1.0}
    html = "<table><tbody>" + page.table_row(row(odd)) + "</tbody></table>"
    [rendered] = page_rows(html)
    assert rendered["cells"][:4] == ["gauge", "42", "['<u>']", "a:<i>outcome:<b>"]
    assert rendered["class"] == "outcome-<b>"
    assert not {"u", "i", "b"} & set(page_tags(html))  # escaped: no element of their own
