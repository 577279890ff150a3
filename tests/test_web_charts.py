"""The web view's charts say what they show, use the panel's width, and keep p99 visible when it equals the max.

Headless Debian chromium against a real broker and zibrato-web (skipped with the reason when absent).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import browser
from support.daemons import wait_until
from support.web import WebPipeline
from zibrato.web.view import series_id

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Iterator[WebPipeline]:
    pipeline = WebPipeline(tmp_path_factory.mktemp("webcharts")).start()
    yield pipeline
    pipeline.close()


def open_chart(driver, sid: str) -> None:
    driver.execute_script("window.location.hash = '#series=' + arguments[0]", sid)
    wait_until(
        lambda: driver.execute_script(
            "const c = window.zibratoWeb.chart; return c && c.id === arguments[0] && "
            "document.querySelectorAll('#variants path.line').length > 0",
            sid,
        ),
        message=f"the chart of {sid}",
    )


def test_a_timer_chart_is_titled_full_width_and_p99_at_the_max_stays_visible(web):
    z = web.client
    for _ in range(3):  # 3 values: p99 is the max
        z.timing("info", "pay", 0.002)
    z.timing("info", "pay", 0.009)
    z.count("info", "hits", 5)
    z.flush()
    timer = series_id({"type": "timer", "name": "pay", "source": None, "tags": []})
    counter = series_id({"type": "counter", "name": "hits", "source": None, "tags": []})
    wait_until(lambda: web.get(f"/api/chart?id={timer}").get("series"), message="the pay chart at the server")
    wait_until(lambda: web.get(f"/api/chart?id={counter}").get("series"), message="the hits chart at the server")
    with browser.chromium() as driver:
        driver.set_window_size(1400, 900)
        driver.get(web.url)
        open_chart(driver, timer)
        shown = driver.execute_script(
            "const fig = document.querySelector('#variants figure'), svg = fig.querySelector('svg');"
            "const lines = [...svg.querySelectorAll('path.line')].map(p => p.dataset.field);"
            "const max = svg.querySelector('path.line[data-field=max]');"
            "return {title: document.getElementById('chart-title').textContent, lines: lines,"
            " dash: getComputedStyle(max).strokeDasharray,"
            " svg: svg.getBoundingClientRect().width, figure: fig.clientWidth}"
        )
        assert shown["title"] == "pay: p50, p90, p99 and max of each interval (seconds)"
        # drawn later is on top: p99 after max
        assert shown["lines"].index("p99") > shown["lines"].index("max")
        assert shown["dash"] not in ("", "none")
        assert shown["svg"] > 600 and shown["svg"] >= shown["figure"] - 30  # the panel's width, not 520 px
        open_chart(driver, counter)
        title = driver.execute_script("return document.getElementById('chart-title').textContent")
        legend = driver.execute_script("return document.querySelector('#variants .legend').textContent")
        assert title == "hits: per second, in each interval" and "per second" in legend
