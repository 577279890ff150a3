"""The web view without a browser: the summary -> JSON mapping, the history, the HTTP endpoints,
the zibrato-web CLI and `zibrato demo --web`, against real sockets and real subprocesses."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from importlib import resources
from pathlib import Path

import pytest

from support.daemons import Daemon, free_ports, run_script, wait_until
from support.web import WebPipeline, get_json
from zibrato.web.page import render as render_page
from zibrato.web.server import WebServer, parse_listen
from zibrato.web.view import History, point, row, series_id

T0 = 1_800_000_000.0
ROOT = Path(__file__).resolve().parent.parent


def counter(name="signup", value=6.0, interval=2.0, **extra):
    return {
        "time": T0,
        "interval": interval,
        "type": "counter",
        "name": name,
        "source": "web-1",
        "tags": [],
        "value": value,
        "count": 3,
        "rate": value / interval,
        **extra,
    }


def timer(name="web.request", tags=(), **stats):
    base = {
        "time": T0,
        "interval": 2.0,
        "type": "timer",
        "name": name,
        "source": None,
        "tags": list(tags),
        "count": 4,
        "sum": 1.0,
        "min": 0.1,
        "max": 0.4,
        "mean": 0.25,
        "median": 0.25,
        "stddev": 0.1,
        "p50": 0.2,
        "p90": 0.4,
        "p95": 0.4,
        "p99": 0.4,
    }
    base.update(stats)
    return base


# --- the pure mapping ----------------------------------------------------------


def test_rows_carry_identity_and_the_main_statistics_of_each_type():
    gauge = {
        "type": "gauge",
        "name": "depth",
        "source": None,
        "tags": ["env:prod"],
        "value": 3,
        "count": 2,
        "min": 1,
        "max": 3,
        "sum": 4,
    }
    histogram = {**timer(), "type": "histogram", "unit": "bytes"}
    a_set = {"type": "set", "name": "users", "source": None, "tags": [], "value": 17, "exact": True}
    assert row(counter())["stats"] == {"value": 6.0, "rate": 3.0, "count": 3}
    assert row(gauge) == {
        "id": series_id(gauge),
        "type": "gauge",
        "name": "depth",
        "source": None,
        "tags": ["env:prod"],
        "outcome": None,
        "unit": None,
        "stats": {"value": 3, "min": 1, "max": 3, "count": 2},
    }
    assert row(timer())["stats"] == {"count": 4, "mean": 0.25, "p50": 0.2, "p90": 0.4, "p99": 0.4, "max": 0.4}
    assert row(timer())["unit"] == "s" and row(histogram)["unit"] == "bytes"
    assert row(a_set)["stats"] == {"value": 17}


def test_charted_points_are_rate_value_or_p50_p90_p99_max():
    assert point(counter()) == (3.0,)
    assert point({"type": "gauge", "value": -2.5}) == (-2.5,)
    assert point(timer()) == (0.2, 0.4, 0.4, 0.4)
    assert point({**timer(), "type": "histogram"}) == (0.2, 0.4, 0.4, 0.4)
    assert point({"type": "set", "value": 9}) == (9,)
    # an idle timer (count 0) has no percentiles: gaps, not zeros
    assert point({"type": "timer", "count": 0}) == (None, None, None, None)


def test_what_json_cannot_carry_becomes_null():
    odd = timer(p50=math.nan, p90="fast", max=math.inf, mean=True)
    assert point(odd) == (None, None, 0.4, None)
    assert row(odd)["stats"]["mean"] is None
    json.dumps(row(odd), allow_nan=False)


def test_series_ids_are_stable_and_tell_series_apart():
    assert series_id(counter()) == series_id(counter(value=99))
    assert series_id(counter()) != series_id(counter(name="signups"))
    assert series_id(timer(tags=["outcome:ok"])) != series_id(timer(tags=["outcome:error"]))
    assert re.fullmatch(r"[0-9a-f]{16}", series_id(counter()))


# --- the history ---------------------------------------------------------------


def test_the_table_is_the_last_interval_sorted_with_outcomes_side_by_side():
    history = History(5)
    history.add(T0, 2.0, [timer(tags=["outcome:ok"])])
    history.add(
        T0 + 2,
        2.0,
        [timer("a"), timer(tags=["error:KeyError", "outcome:error"]), timer(tags=["outcome:ok"]), counter()],
    )
    table = history.table()
    assert [(r["type"], r["name"], r["outcome"]) for r in table["rows"]] == [
        ("counter", "signup", None),
        ("timer", "a", None),
        ("timer", "web.request", "ok"),
        ("timer", "web.request", "error"),
    ]
    assert (table["time"], table["interval"], table["total"], table["matched"]) == (T0 + 2, 2.0, 4, 4)
    assert history.summary() == {
        "version": 2,
        "time": T0 + 2,
        "interval": 2.0,
        "series": 4,
        "intervals": 2,
        "history": 5,
    }


def test_the_filter_matches_every_word_in_type_name_source_and_tags_and_pages():
    history = History()
    history.add(
        T0,
        1.0,
        [counter(f"requests.{i}", tags=[f"shard:{i % 3}"]) for i in range(250)]
        + [timer("requests.slow", tags=["shard:1"])],
    )
    assert history.table("SHARD:1 requests.2")["matched"] == len(
        [i for i in range(250) if i % 3 == 1 and "requests.2" in f"requests.{i}"]
    )
    assert history.table("", type="timer")["rows"][0]["name"] == "requests.slow"
    assert history.table("web-1 counter")["matched"] == 250  # the source and the type are words too
    page = history.table(offset=200, limit=100)
    assert (page["matched"], page["offset"], len(page["rows"])) == (251, 200, 51)
    assert len(history.table(limit=10**6)["rows"]) == 251  # capped at 1000 per page
    assert history.table(limit=10**6)["limit"] == 1000
    assert history.table("no such thing")["rows"] == []


def test_a_chart_holds_the_last_n_intervals_of_a_series_and_its_outcome_siblings():
    history = History(3)
    ok, error = ["outcome:ok"], ["error:KeyError", "outcome:error"]
    for i in range(5):
        summaries = [timer(tags=ok, p50=i, p90=i + 1, p99=i + 2, max=i + 3)]
        if i % 2:
            summaries.append(timer(tags=error, p50=10 * i, p90=10 * i, p99=10 * i, max=10 * i))
        history.add(T0 + i, 1.0, summaries)
    chart = history.chart(series_id(timer(tags=error)))
    assert chart["fields"] == ["p50", "p90", "p99", "max"] and chart["unit"] == "s"
    assert chart["times"] == [T0 + 2, T0 + 3, T0 + 4]
    assert [s["outcome"] for s in chart["series"]] == ["ok", "error"]
    assert chart["series"][0]["points"] == [
        {"time": T0 + i, "interval": 1.0, "p50": i, "p90": i + 1, "p99": i + 2, "max": i + 3} for i in (2, 3, 4)
    ]
    assert [p["time"] for p in chart["series"][1]["points"]] == [T0 + 3]  # gaps stay gaps


def test_a_series_gone_from_every_held_interval_is_forgotten():
    history = History(2)
    history.add(T0, 1.0, [counter("old"), counter("kept")])
    history.add(T0 + 1, 1.0, [counter("kept")])
    assert history.chart(series_id(counter("old"))) is not None
    history.add(T0 + 2, 1.0, [counter("kept")])
    assert history.chart(series_id(counter("old"))) is None
    assert len(history.chart(series_id(counter("kept")))["series"][0]["points"]) == 2


def test_ten_thousand_series_are_served_a_page_at_a_time():
    history = History()
    history.add(T0, 1.0, [counter(f"s.{i:05d}") for i in range(10_000)])
    page = history.table()
    assert (page["total"], page["matched"], len(page["rows"])) == (10_000, 10_000, 100)
    assert [r["name"] for r in history.table("s.09999")["rows"]] == ["s.09999"]
    assert len(json.dumps(page)) < 30_000  # what the browser receives, whatever the number of series


def test_history_wakes_waiters_at_each_interval():
    history = History()
    versions = []
    waiter = threading.Thread(target=lambda: versions.append(history.wait_for_change(0, 5)))
    waiter.start()
    history.add(T0, 1.0, [])
    waiter.join(5)
    assert versions == [1]


# --- the HTTP server ------------------------------------------------------------


@pytest.fixture
def served():
    history = History(10)
    server = WebServer("127.0.0.1", 0, history).start()
    yield history, server
    server.stop()


def fetch(url: str, host: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_endpoints_answer_the_documented_json(served):
    history, server = served
    history.add(T0, 2.0, [counter(), timer(tags=["outcome:ok"])])
    assert get_json(server.url + "api/summary") == history.summary()
    table = get_json(server.url + "api/series?q=signup&limit=5")
    assert table["rows"] == [row(counter())] and table["limit"] == 5
    chart = get_json(server.url + f"api/chart?id={series_id(counter())}")
    assert chart["series"][0]["points"] == [{"time": T0, "interval": 2.0, "rate": 3.0}]


def test_bad_requests_are_clear_json_errors(served):
    _, server = served
    assert fetch(server.url + "api/series?offset=first")[0] == 400
    status, _, body = fetch(server.url + "api/chart?id=0000")
    assert status == 404 and "no such series" in json.loads(body)["error"]
    for path in ("nothing", "static/../../setup.py", "static/view.py", "api"):
        assert fetch(server.url + path)[0] == 404, path


def test_the_page_and_its_assets_come_from_the_package_with_a_strict_policy(served):
    history, server = served
    for path, kind in (("", "text/html"), ("static/web.js", "text/javascript"), ("static/web.css", "text/css")):
        status, headers, body = fetch(server.url + path)
        assert status == 200 and headers["Content-Type"].startswith(kind)
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        name = path.rpartition("/")[2] or "index.html"
        template = resources.files("zibrato.web").joinpath("static", name).read_bytes()
        # the page is the packaged index.html with the first table page filled in (tests/test_web_page.py)
        assert body == (render_page(history, template.decode()).encode() if name == "index.html" else template)
    page = fetch(server.url)[2].decode()
    assert not re.search(r"https?://", page)  # nothing fetched from elsewhere
    script = fetch(server.url + "static/web.js")[2].decode()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script


def test_a_loopback_server_refuses_other_host_names(served):
    _, server = served
    assert fetch(server.url + "api/summary", host="attacker.example:8080")[0] == 403
    assert fetch(server.url + "api/summary", host=f"localhost:{server.port}")[0] == 200


def test_server_sent_events_announce_each_flush(served):
    history, server = served
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.0 200")
        events = []

        def next_event() -> dict:
            while True:
                line = reader.readline()
                if line.startswith(b"data: "):
                    return json.loads(line[6:])

        events.append(next_event())  # the current state, at once
        history.add(T0, 2.0, [counter()])
        events.append(next_event())
    assert [(e["version"], e["series"]) for e in events] == [(0, 0), (1, 1)]


def test_an_ipv6_loopback_server_answers():
    try:
        server = WebServer("::1", 0, History()).start()
    except OSError as error:
        pytest.skip(f"no IPv6 loopback here: {error}")
    try:
        assert server.url == f"http://[::1]:{server.port}/"
        assert get_json(server.url + "api/summary")["version"] == 0
    finally:
        server.stop()


def test_listen_addresses():
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("8080", ":8080", "localhost:http", "127.0.0.1:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


# --- the CLI and the worker ------------------------------------------------------


def test_a_bad_listen_flag_is_a_usage_error():
    result = run_script("zibrato-web", "--listen", "nowhere")
    assert result.returncode == 2 and "--listen wants HOST:PORT" in result.stderr


def test_a_port_in_use_exits_with_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_script("zibrato-web", "--listen", f"127.0.0.1:{port}", "--port", free_ports(1), timeout=20)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_binding_beyond_loopback_logs_a_warning(tmp_path):
    worker = Daemon(
        tmp_path, "zibrato-web", "--listen", "0.0.0.0:0", "--port", free_ports(1), "--no-self-metrics"
    ).start()
    try:
        worker.wait_for_log("web worker:")
        assert re.search(r"WARNING listening on 0\.0\.0\.0, not loopback", worker.stderr)
    finally:
        worker.stop()
    loopback = Daemon(
        tmp_path,
        "zibrato-web",
        "--listen",
        "127.0.0.1:0",
        "--broker",
        f"127.0.0.1:{free_ports(1)}",
        "--no-self-metrics",
    ).start()
    try:
        loopback.wait_for_log("web worker:")
        assert "WARNING" not in loopback.stderr
    finally:
        loopback.stop()


@pytest.fixture
def web(tmp_path):
    pipeline = WebPipeline(tmp_path).start()
    yield pipeline
    pipeline.close()


def test_the_worker_serves_what_a_client_sent(web):
    z = web.client
    z.count("info", "orders", 5, tags={"shop": "<b>"})
    values = [0.001 * k for k in range(1, 101)]
    for value in values:
        z.timing("debug", "checkout", value, source="api")
    z.flush()
    checkout = {"type": "timer", "name": "checkout", "source": "api", "tags": []}
    chart = wait_until(
        lambda: web.get(f"/api/chart?id={series_id(checkout)}").get("series"), message="the checkout chart"
    )
    [points] = [s["points"] for s in chart]
    assert [{k: p[k] for k in ("p50", "p90", "p99", "max")} for p in points] == [
        {"p50": values[49], "p90": values[89], "p99": values[98], "max": values[99]}
    ]
    orders = {"type": "counter", "name": "orders", "source": None, "tags": ["shop:<b>"]}
    [series] = web.get(f"/api/chart?id={series_id(orders)}")["series"]
    assert sum(p["rate"] * p["interval"] for p in series["points"]) == pytest.approx(5)
    status = web.status()
    assert status["url"] == web.url and status["history"] == 60 and status["intervals_held"] >= 1


def test_demo_web_starts_the_web_view_and_prints_its_url(tmp_path):
    base, web_port = free_ports(3), free_ports(1)
    demo = Daemon(
        tmp_path,
        "zibrato",
        "demo",
        "--port",
        base,
        "--flush",
        "0.5",
        "--web",
        "--web-listen",
        f"127.0.0.1:{web_port}",
        "--duration",
        "30",
    ).start()
    url = f"http://127.0.0.1:{web_port}/"
    try:
        demo.wait_for_log(f"live charts at {url}")

        def requests_shown() -> list:
            try:
                rows = get_json(url + "api/series?q=web.request")["rows"]
            except OSError:
                return []
            return sorted(r["outcome"] for r in rows)

        assert "ok" in wait_until(requests_shown, timeout=20, message="web.request in the web view")
    finally:
        demo.signal()
        assert demo.wait(20) == 0


def test_demo_web_names_the_web_worker_when_its_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_script(
            "zibrato",
            "demo",
            "--port",
            free_ports(3),
            "--web",
            "--web-listen",
            f"127.0.0.1:{port}",
            "--duration",
            "60",
            timeout=30,
        )
    assert result.returncode == 1
    assert "the web worker exited with status 1" in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_an_installed_package_carries_the_page(tmp_path):
    """A non-editable install serves the page too: setuptools copies static/* (package_data)."""
    result = subprocess.run(
        [sys.executable, "setup.py", "--quiet", "build_py", "--build-lib", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in ("index.html", "web.js", "web.css"):
        assert (tmp_path / "zibrato" / "web" / "static" / name).read_bytes() == resources.files("zibrato.web").joinpath(
            "static", name
        ).read_bytes()
