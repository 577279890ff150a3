"""The web view in a real browser: headless Debian chromium driven by selenium, against a real
broker and a real zibrato-web fed by a real Zibrato client.

Skipped (with the reason) only when chromium, chromium-driver or selenium is absent;
bin/setup --test installs them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from support import browser
from support.daemons import wait_until
from support.web import WebPipeline, get_page, page_rows, sending
from zibrato.web.server import WebServer
from zibrato.web.view import History, series_id

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_TAG = {"note": "<img src=x onerror=window.__pwned=1>"}
HOSTILE_SOURCE = "<b>bold</b>"


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Iterator[WebPipeline]:
    pipeline = WebPipeline(tmp_path_factory.mktemp("web")).start()
    yield pipeline
    pipeline.close()


@pytest.fixture(scope="module")
def page(web):
    with browser.chromium() as driver:
        driver.get(web.url)
        yield driver


def table_names(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#series tbody td.name')].map(td => td.textContent)"
    )


def search(driver, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    # typed as a user types (clear() fires no input event)
    box = driver.find_element("id", "search")
    box.send_keys(Keys.CONTROL + "a")
    box.send_keys(Keys.BACKSPACE)
    if text:
        box.send_keys(text)
    wait_until(
        lambda: driver.execute_script(
            "const s = window.zibratoWeb.shown; return s !== null && s.query === arguments[0]", text
        ),
        message=f"the table filtered by {text!r}",
    )


def select_series(driver, sid: str) -> dict:
    """Open the charts of series ``sid`` (by its row when shown, else by URL) and return the chart state."""
    driver.execute_script("window.location.hash = '#series=' + arguments[0]", sid)
    return wait_until(
        lambda: driver.execute_script(
            "const c = window.zibratoWeb.chart; return c && c.id === arguments[0] && "
            "document.querySelectorAll('#variants circle.point').length ? c : null",
            sid,
        ),
        message=f"the charts of {sid}",
    )


def test_the_table_lists_the_series_sent(web, page):
    z = web.client
    page.execute_script("window.__same_page = true")  # gone if the page reloaded

    def record() -> None:
        z.count("info", "signup", 1, source="shop")
        z.gauge("warn", "queue.depth", 12)
        z.timing("debug", "db.query", 0.004)

    with sending(z, record):
        wait_until(
            lambda: {"signup", "queue.depth", "db.query"} <= set(table_names(page)),
            message="the three series in the table",
        )
        rows = page.execute_script(
            "return [...document.querySelectorAll('#series tbody tr')].map(tr => "
            "[...tr.cells].slice(0, 3).map(td => td.textContent))"
        )
    assert ["counter", "signup", "shop"] in rows
    assert ["gauge", "queue.depth", "–"] in rows
    assert ["timer", "db.query", "–"] in rows
    # they arrived after the page was loaded: updated in place, by the server-sent events
    assert page.execute_script("return window.__same_page === true && window.zibratoWeb.transport") == "events"


def test_without_event_source_the_page_polls(web):
    z = web.client
    with browser.chromium() as driver:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.EventSource"})
        driver.get(web.url)
        with sending(z, lambda: z.count("info", "polled")):
            wait_until(lambda: "polled" in table_names(driver), message="a row by polling")
        assert driver.execute_script("return window.zibratoWeb.transport") == "polling"


def test_a_chart_shows_the_summaries_of_what_was_sent(web, page):
    z = web.client
    rng = random.Random(18)
    ok_values = [0.001 * k for k in range(1, 101)]
    error_values = [0.01 * k for k in range(1, 21)]
    rng.shuffle(ok_values)
    for value in ok_values:  # one flush: one message, so one interval holds them all
        z.timing("info", "checkout", value, tags={"outcome": "ok"})
    for value in error_values:
        z.timing("info", "checkout", value, tags={"outcome": "error", "error": "KeyError"})
    z.flush()
    ok = {"type": "timer", "name": "checkout", "source": None, "tags": ["outcome:ok"]}
    sid = series_id(ok)
    web_chart = wait_until(
        lambda: web.get(f"/api/chart?id={sid}").get("series"), message="the checkout chart at the server"
    )
    assert [s["outcome"] for s in web_chart] == ["ok", "error"]
    shown = select_series(page, sid)
    circles = page.execute_script(
        "return [...document.querySelectorAll('#variants figure')].map(f => ({"
        "  title: f.querySelector('.variant-title').textContent,"
        "  points: [...f.querySelectorAll('circle.point')].map(c => ["
        "    c.dataset.field, Number(c.dataset.time), Number(c.dataset.value)])}))"
    )
    # the page shows outcome:ok and outcome:error side by side
    assert [c["title"] for c in circles] == ["outcome: ok", "outcome: error"]
    expected = {"ok": ok_values, "error": error_values}
    json_chart = web.get(f"/api/chart?id={sid}")
    for figure, served, in_state in zip(circles, json_chart["series"], shown["series"]):
        values = sorted(expected[served["outcome"]])
        n = len(values)
        [summary] = served["points"]
        # what the server computed is what was sent, by nearest rank
        assert {k: summary[k] for k in ("p50", "p90", "p99", "max")} == {
            "p50": values[-(-50 * n // 100) - 1],
            "p90": values[-(-90 * n // 100) - 1],
            "p99": values[-(-99 * n // 100) - 1],
            "max": values[-1],
        }
        # and the page draws exactly those points, in its state and in the SVG
        assert in_state["points"] == served["points"]
        assert sorted(figure["points"]) == sorted(
            [field, summary["time"], summary[field]] for field in ("p50", "p90", "p99", "max")
        )


def test_a_hostile_series_name_is_displayed_as_text(web, page):
    z = web.client
    with sending(z, lambda: z.gauge("info", HOSTILE_NAME, 1, source=HOSTILE_SOURCE, tags=HOSTILE_TAG)):
        wait_until(lambda: HOSTILE_NAME in table_names(page), message="the hostile name in the table")
        cells = page.execute_script(
            "const tr = [...document.querySelectorAll('#series tbody tr')]"
            "  .find(tr => tr.cells[1].textContent === arguments[0]);"
            "return {name: tr.cells[1].textContent, source: tr.cells[2].textContent,"
            "        tag: tr.cells[3].textContent, children: tr.cells[1].children.length,"
            "        injected: document.querySelectorAll('tbody script, tbody img, tbody b').length}",
            HOSTILE_NAME,
        )
    assert cells == {
        "name": HOSTILE_NAME,
        "source": HOSTILE_SOURCE,
        "tag": "note:<img src=x onerror=window.__pwned=1>",
        "children": 0,
        "injected": 0,
    }
    sid = series_id(
        {
            "type": "gauge",
            "name": HOSTILE_NAME,
            "source": HOSTILE_SOURCE,
            "tags": ["note:<img src=x onerror=window.__pwned=1>"],
        }
    )
    select_series(page, sid)
    assert page.find_element("id", "chart-title").text == HOSTILE_NAME + ": last value of each interval"
    assert page.execute_script("return document.querySelectorAll('script').length") == 1  # web.js only
    assert page.execute_script("return window.__pwned === undefined")
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        page.switch_to.alert.text  # noqa: B018 (no alert ran)


def test_ten_thousand_series_are_paged_and_filtered_by_the_server(page, tmp_path):
    # Its own worker, flushing every 3 s: the table shows the last interval, and a loop of
    # 10,000 calls can outlast the module's 0.5 s intervals (under coverage it takes about a
    # second), which would leave no interval holding all of them. In 3 s intervals at least one
    # whole loop always falls inside each interval.
    bulk = WebPipeline(tmp_path, flush=3.0).start()
    z = bulk.client

    def record() -> None:
        for i in range(10_000):
            z.count("bulk", f"bulk.{i:05d}")

    try:
        with sending(z, record, every=0.3):
            page.get(bulk.url)
            search(page, "bulk.")
            wait_until(
                lambda: page.execute_script("return window.zibratoWeb.table.matched") == 10_000,
                timeout=30,
                message="10,000 bulk series in the table",
            )
            assert len(table_names(page)) == 100  # one page of rows in the DOM, not 10,000
            assert "of 10,000" in page.find_element("id", "page-info").text
            search(page, "bulk.09876")
            wait_until(lambda: table_names(page) == ["bulk.09876"], message="the filtered row")
            search(page, "")
    finally:
        bulk.close()


def test_a_screenshot_of_the_live_page(web, page, tmp_path):
    z = web.client

    def record() -> None:
        z.timing("info", "web.request", random.expovariate(200), tags={"outcome": "ok"})
        z.count("info", "signup")

    with sending(z, record):
        sid = series_id({"type": "timer", "name": "web.request", "source": None, "tags": ["outcome:ok"]})
        # the last interval holds only these two now (the earlier tests' series are gone)
        wait_until(
            lambda: {r["name"] for r in web.get("/api/series")["rows"]} == {"web.request", "signup"},
            message="an interval of web.request and signup only",
        )
        page.get(web.url)
        # a first visit opens the charts of a timer with outcomes by itself
        wait_until(
            lambda: page.execute_script("return window.zibratoWeb.chart && window.zibratoWeb.chart.id") == sid,
            message="the web.request charts opened without a click",
        )
        assert page.current_url.endswith(f"#series={sid}")
        shot = tmp_path / "web.png"
        assert page.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_with_javascript_off_the_page_shows_the_rows(web):
    z = web.client

    def record() -> None:
        z.count("info", "noscript.visits", source="shop")
        z.gauge("info", HOSTILE_NAME, 1, source=HOSTILE_SOURCE, tags=HOSTILE_TAG)

    with sending(z, record), browser.chromium(javascript=False) as driver:

        def rows_shown() -> list[list[str]] | None:
            driver.get(web.url)
            rows = [
                [td.text for td in tr.find_elements("tag name", "td")[:4]]
                for tr in driver.find_elements("css selector", "#series tbody tr")
            ]
            return rows if {"noscript.visits", HOSTILE_NAME} <= {r[1] for r in rows} else None

        rows = wait_until(rows_shown, message="the series sent, in the page as served")
        status = driver.find_element("id", "status").text
        injected = driver.find_elements("css selector", "tbody script, tbody img, tbody b")
        scripts = len(driver.find_elements("tag name", "script"))
    assert ["counter", "noscript.visits", "shop", ""] in rows
    assert ["gauge", HOSTILE_NAME, HOSTILE_SOURCE, "note:<img src=x onerror=window.__pwned=1>"] in rows
    assert injected == [] and scripts == 1  # the hostile strings are text, web.js the only script
    assert "UTC" in status and "live" not in status  # the server's status line: no script ran


SHOWN_ROWS = (
    "return [...document.querySelectorAll('#series tbody tr')].map(tr => ({id: tr.dataset.id,"
    " class: [...tr.classList].filter(c => c !== 'selected').join(' ') || null,"  # the auto-selected chart's row
    " cells: [...tr.cells].map(td => td.textContent)}))"
)


def test_the_script_replaces_the_served_rows_in_place_with_the_same_rows():
    history = History(5)
    stats = {"count": 3, "sum": 1.5, "min": 0.0000004, "max": 1.125, "mean": 0.5, "p50": 0.0052, "p90": 90.0}
    history.add(
        1_800_000_000.0,
        2.0,
        [
            {"type": "timer", "name": "pay", "source": None, "tags": ["outcome:ok"], **stats, "p99": None},
            {"type": "timer", "name": "pay", "source": None, "tags": ["error:KeyError", "outcome:error"], **stats},
            {"type": "counter", "name": "hits", "source": "web-1", "tags": [], "value": 12345.6, "rate": 6172.8},
            {"type": "gauge", "name": HOSTILE_NAME, "source": HOSTILE_SOURCE, "tags": ["n:<i>"], "value": -1e-7},
            {"type": "histogram", "name": "size", "source": None, "tags": [], "unit": "By", "count": 2, "p50": 1.5e22},
            {"type": "set", "name": "users", "source": None, "tags": [], "value": 7},
        ],
    )
    server = WebServer("127.0.0.1", 0, history).start()
    try:
        served = page_rows(get_page(server.url))
        with browser.chromium() as driver:
            driver.get(server.url)
            wait_until(
                lambda: driver.execute_script("return window.zibratoWeb.table !== null"), message="the first update"
            )
            shown = driver.execute_script(SHOWN_ROWS)
            state = driver.execute_script(
                "const s = window.zibratoWeb; return {served: s.served, ids: s.table.rows.map(r => r.id),"
                " renders: s.renders, injected: document.querySelectorAll('tbody script, tbody b, tbody i').length}"
            )
    finally:
        server.stop()
    assert len(served) == 6
    # the script's rows are the server's: the same ids, order, classes and text, once each
    assert shown == served
    assert [r["id"] for r in shown] == state["ids"] and len(set(state["ids"])) == 6
    assert state["renders"] >= 1 and state["injected"] == 0
    assert state["served"] == {"version": 1, "offset": 0, "limit": 100, "matched": 6, "total": 6}
