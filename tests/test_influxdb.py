"""zibrato-influxdb: the line-protocol mapping, then the real InfluxDB 1.x and its HTTP query API.

The mapping tests need no socket. The delivery tests run Debian's influxd
(tests/support/influxdb.py) and query back exactly what it stored; the
answers InfluxDB 1.6 cannot be made to give (429, 503, the 2.x write API)
come from a small recording HTTP server.
"""

from __future__ import annotations

import base64
import http.server
import threading
import time

import pytest
import requests
from expecter import expect
from test_graphite import a_set, counter, gauge, timer

from support.daemons import run_script, wait_until
from support.influxdb import InfluxDB, influxd_missing
from support.pipeline import DAY, WorkerPipeline, pipelines
from support.rig import deliver_now
from zibrato.backends.influxdb import (
    InfluxDBDestination,
    InfluxMapping,
    escape_key,
    escape_measurement,
    without_credentials,
)
from zibrato.delivery import Rejected, Retryable
from zibrato.destination import Interval

needs_influxd = pytest.mark.skipif(influxd_missing() is not None, reason=influxd_missing() or "")

END = 1_700_000_010.0
TOKEN = "s3cr3t-t0ken-never-logged"


def lines(*summaries, prefix="") -> list[str]:
    return InfluxMapping(prefix).lines(Interval(END - 10, END, list(summaries)))


# --- mapping (no sockets) -------------------------------------------------------------


def test_one_point_per_series_with_statistics_as_float_fields():
    summary = counter(source="web-1", tags=["env:prod"])
    summary["level"] = "info"
    expect(lines(summary, gauge(), a_set())) == [
        "hits,env=prod,level=info,source=web-1 value=3.0,count=2.0,rate=0.3 1700000010000",
        "temperature value=-2.5,count=2.0,min=-2.5,max=4.0,sum=1.5 1700000010000",
        "users value=7.0 1700000010000",
    ]


def test_timers_and_histograms_carry_every_statistic_and_idle_ones_count_zero():
    t = timer(values=(0.5, 0.25, 1.5))
    fields = lines(t)[0].split(" ")[1].split(",")
    expect([f.split("=")[0] for f in fields]) == [
        "count",
        "sum",
        "sum_squares",
        "min",
        "max",
        "mean",
        "median",
        "stddev",
        "p50",
        "p99_9",
    ]
    expect(lines(timer(values=()))) == ["db.query count=0.0 1700000010000"]
    expect(
        lines(timer(name="size", values=(5.0,), kind="histogram", unit="bytes"))[0].startswith(
            "size,unit=bytes count=1.0,"
        )
    ) == True


@pytest.mark.parametrize(
    "name, escaped",
    [
        ("a,b c", r"a\,b\ c"),
        ('say "hi"', r'say\ "hi"'),
        ("x=y", "x=y"),
        ("#hash", "_#hash"),
        ("end\\", "end_"),
        ("a\\,b", r"a_\,b"),
        ("a\\b", "a\\b"),
        ("née", "née"),
    ],
)
def test_measurement_escaping(name, escaped):
    expect(escape_measurement(name)) == escaped


@pytest.mark.parametrize(
    "text, escaped",
    [
        ("a,b c=d", r"a\,b\ c\=d"),
        ('"q"', '"q"'),
        ("end\\", "end_"),
        ("a\\=b", r"a_\=b"),
        ("a\\b", "a\\b"),
    ],
)
def test_tag_escaping(text, escaped):
    expect(escape_key(text)) == escaped


def test_tags_are_sorted_deduplicated_and_never_empty_or_reserved(caplog):
    summary = counter(tags=["z:1", "a:first", "a:second", "empty:", "bare", "time:x"])
    expect(lines(summary)[0].split(" ")[0]) == "hits,a=second,bare=true,time_=x,z=1"
    expect(lines(counter(name="x"), prefix="app.")[0].startswith("app.x ")) == True


def test_a_changed_name_is_counted_and_logged_once(caplog):
    mapping = InfluxMapping()
    for _ in range(3):
        mapping.lines(Interval(0, 10, [counter(name="#odd\\")]))
    expect(mapping.changed) == 1  # once per series: its key is built once
    logged = [r.getMessage() for r in caplog.records if "odd" in r.getMessage()]
    expect(len(logged)) == 1
    expect(logged[0]).contains("name '#odd\\' does not fit InfluxDB's rules")
    expect(logged[0]).contains("sent as '_#odd_'")


def test_the_token_goes_in_a_header_as_token_or_basic_for_1x_user_password():
    v1 = InfluxDBDestination("http://db:8086/", database="metrics", token="user:pass")
    expect(v1.write_url) == "http://db:8086/write"
    expect(v1.params) == {"db": "metrics", "precision": "ms"}
    expect(v1.headers["Authorization"]) == "Basic " + base64.b64encode(b"user:pass").decode()
    v2 = InfluxDBDestination("http://db:8086", org="acme", bucket="metrics", token=TOKEN)
    expect(v2.write_url) == "http://db:8086/api/v2/write"
    expect(v2.params) == {"org": "acme", "bucket": "metrics", "precision": "ms"}
    expect(v2.headers["Authorization"]) == f"Token {TOKEN}"
    expect("Authorization" in InfluxDBDestination(database="m").headers) == False


def test_credentials_in_the_url_never_reach_the_logs_or_the_status(caplog):
    caplog.set_level("INFO")
    destination = InfluxDBDestination("http://ops:hunter2@db.example:8086/", database="m")
    expect(destination.target) == "http://db.example:8086 (database 'm')"
    destination.connect()
    destination.close()
    expect("hunter2" in caplog.text) == False
    expect("hunter2" in str(destination.figures())) == False
    expect(without_credentials("https://u@[::1]:8086/x")) == "https://[::1]:8086/x"
    expect(without_credentials("http://db:8086")) == "http://db:8086"


@pytest.mark.parametrize("kwargs", [{}, {"database": "a", "bucket": "b", "org": "o"}, {"bucket": "b"}])
def test_database_or_org_and_bucket_exactly(kwargs):
    with pytest.raises(ValueError):
        InfluxDBDestination(**kwargs)


def test_cli_usage_errors_and_no_token_option():
    expect(run_script("zibrato-influxdb").returncode) == 2
    expect(run_script("zibrato-influxdb", "--bucket", "b").stderr).contains("--bucket needs --org")
    result = run_script("zibrato-influxdb", "--database", "m", "--token", "x")
    expect(result.returncode) == 2
    expect(result.stderr).contains("No such option '--token'")


# --- answers InfluxDB 1.6 cannot be made to give: a recording server ---------------------


class Recorder(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, dict, bytes]] = []
    requests: list[tuple[str, dict, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append((self.path, dict(self.headers), body))
        status, headers, payload = self.answers.pop(0) if self.answers else (204, {}, b"")
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder():
    Recorder.answers, Recorder.requests = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_v2_writes_go_to_the_v2_api_with_the_token_header(recorder):
    _, url = recorder
    destination = InfluxDBDestination(url, org="acme", bucket="metrics", token=TOKEN)
    destination.post(Interval(END - 10, END, [counter()]))
    path, headers, body = Recorder.requests[0]
    expect(path) == "/api/v2/write?org=acme&bucket=metrics&precision=ms"
    expect(headers["Authorization"]) == f"Token {TOKEN}"
    expect(body) == b"hits value=3.0,count=2.0,rate=0.3 1700000010000"


@pytest.mark.parametrize(
    "status, retryable", [(429, True), (500, True), (503, True), (400, False), (401, False), (413, False)]
)
def test_429_and_5xx_are_retried_other_4xx_are_not_and_carry_the_server_message(recorder, status, retryable):
    _, url = recorder
    Recorder.answers = [
        (status, {"Retry-After": "7", "Content-Type": "application/json"}, b'{"error":"the server says why"}')
    ]
    destination = InfluxDBDestination(url, database="m")
    with pytest.raises(Retryable if retryable else Rejected, match=f"{status}: the server says why") as caught:
        destination.post(Interval(END - 10, END, [counter()]))
    if retryable:
        expect(caught.value.retry_after) == 7.0


def test_connection_refused_is_retryable(unused_port):
    destination = InfluxDBDestination(f"http://127.0.0.1:{unused_port}", database="m", timeout=1)
    with pytest.raises(Retryable, match="unreachable"):
        destination.post(Interval(END - 10, END, [counter()]))
    expect(destination.figures()["connection_errors"]) == 1


# --- the real InfluxDB ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def influxdb(tmp_path_factory):
    if influxd_missing():
        pytest.skip(influxd_missing())
    server = InfluxDB(tmp_path_factory.mktemp("influxdb")).start()
    yield server
    server.stop()


_databases = iter(range(1, 10_000))


@pytest.fixture
def database(influxdb):
    return influxdb.create_database(f"test{next(_databases)}")


def now_interval(*summaries) -> Interval:
    end = round(time.time(), 3)
    return Interval(end - 10, end, list(summaries))


@needs_influxd
def test_influxdb_stores_exactly_what_each_type_sends(influxdb, database):
    destination = InfluxDBDestination(influxdb.url, database=database)
    t = timer(values=(0.125, 0.5, 2.0))
    interval = now_interval(
        counter(value=1234.5, rate=123.45, source="api", tags=["env:prod"]),
        gauge(value=-1e-3),
        t,
        a_set(value=42),
        timer(name="size", values=(512.0, 2048.0), kind="histogram", unit="bytes"),
    )
    destination.post(interval)
    stamp = round(interval.end * 1000)
    expect(influxdb.rows(database, "hits")) == [
        {"time": stamp, "value": 1234.5, "count": 2, "rate": 123.45, "env": "prod", "source": "api"}
    ]
    expect(influxdb.rows(database, "temperature")[0]["value"]) == -1e-3
    stored = influxdb.rows(database, "db.query")[0]
    for key in ("count", "sum", "sum_squares", "min", "max", "mean", "median", "stddev", "p50", "p99_9"):
        expect(stored[key]) == t[key]
    expect(influxdb.rows(database, "users")[0]["value"]) == 42
    expect(influxdb.rows(database, "size")[0]["unit"]) == "bytes"
    expect(destination.figures()["points_sent"]) == 5


@needs_influxd
def test_hard_names_and_tags_round_trip_through_the_real_server(influxdb, database):
    hard = ["a,b c", 'say "hi"', "x=y", "back\\slash", "née", "tab\there"]
    summaries = [counter(name=name, tags=[f"{name}:{name}", "k:v=w,x y"]) for name in hard]
    summaries.append(counter(name="#comment", tags=["end:trailing\\"]))
    InfluxDBDestination(influxdb.url, database=database).post(now_interval(*summaries))
    measurements = {row[0] for row in influxdb.query("SHOW MEASUREMENTS", database)["series"][0]["values"]}
    expect(measurements) == {*hard, "_#comment"}
    for name in hard:
        row = influxdb.rows(database, name)[0]
        expect((row[name], row["k"], row["value"])) == (name, "v=w,x y", 3.0)
    expect(influxdb.rows(database, "_#comment")[0]["end"]) == "trailing_"


@needs_influxd
def test_batches_split_an_interval_into_requests(influxdb, database):
    destination = InfluxDBDestination(influxdb.url, database=database, batch_size=2)
    destination.post(now_interval(*[counter(name=f"c{i}") for i in range(5)]))
    expect(destination.figures()["requests"]) == 3
    expect(sum(len(influxdb.rows(database, f"c{i}")) for i in range(5))) == 5


@needs_influxd
def test_a_missing_database_is_rejected_with_influxdbs_message(influxdb):
    destination = InfluxDBDestination(influxdb.url, database="nowhere", batch_size=2)
    with pytest.raises(Rejected, match='404: database not found: "nowhere"'):
        destination.post(now_interval(*[counter(name=f"c{i}") for i in range(5)]))
    expect(destination.figures()["rejected_points"]) == 5  # the failed batch and those not sent
    expect(destination.figures()["requests"]) == 1


class RefuseSecondOnce(http.server.BaseHTTPRequestHandler):
    """A proxy in front of the real influxd: answers the 2nd write 503 itself, forwards every other."""

    target = ""
    writes: list[int] = []  # the status of each write the proxy saw

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.writes.append(0)
        if len(self.writes) == 2:
            status, payload = 503, b'{"error":"busy"}'
        else:
            answer = requests.post(
                self.target + self.path, data=body, headers={"Content-Type": "text/plain"}, timeout=10
            )
            status, payload = answer.status_code, answer.content
        self.writes[-1] = status
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


def write_stats(influxdb) -> dict:
    """influxd's own HTTP write counters (writeReq, pointsWrittenOK): what it received, not what it kept."""
    [httpd] = [series for series in influxdb.query("SHOW STATS")["series"] if series["name"] == "httpd"]
    return dict(zip(httpd["columns"], httpd["values"][0]))


@needs_influxd
def test_a_batch_refused_once_is_sent_again_alone_never_the_batches_already_written(influxdb, database):
    RefuseSecondOnce.target, RefuseSecondOnce.writes = influxdb.url, []
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RefuseSecondOnce)
    threading.Thread(target=proxy.serve_forever, args=(0.05,), daemon=True).start()
    try:
        destination = InfluxDBDestination(
            f"http://127.0.0.1:{proxy.server_address[1]}", database=database, batch_size=2
        )
        before = write_stats(influxdb)
        queue = deliver_now(destination, now_interval(*[counter(name=f"c{i}") for i in range(5)]))
        after = write_stats(influxdb)
    finally:
        proxy.shutdown()
        proxy.server_close()
    expect(RefuseSecondOnce.writes) == [204, 503, 204, 204]  # three batches, the refused one twice
    expect(after["writeReq"] - before["writeReq"]) == 3  # influxd received each batch once
    expect(after["pointsWrittenOK"] - before["pointsWrittenOK"]) == 5
    expect(sum(len(influxdb.rows(database, f"c{i}")) for i in range(5))) == 5
    c = queue.counts
    expect((c["delivered_intervals"], c["parts_delivered"], c["parts_retried"])) == (1, 3, 1)
    expect(destination.figures()["points_sent"]) == 5


@pytest.fixture(scope="module")
def secured_influxdb(tmp_path_factory):
    if influxd_missing():
        pytest.skip(influxd_missing())
    server = InfluxDB(tmp_path_factory.mktemp("influxdb-auth"), auth=True).start()
    yield server
    server.stop()


@needs_influxd
def test_with_authentication_on_a_user_password_token_writes_and_a_wrong_one_is_rejected(secured_influxdb):
    server = secured_influxdb
    database = server.create_database("secured")
    user, password = server.admin
    good = InfluxDBDestination(server.url, database=database, token=f"{user}:{password}")
    good.post(now_interval(counter(value=5)))
    expect([row["value"] for row in server.rows(database, "hits")]) == [5.0]
    bad = InfluxDBDestination(server.url, database=database, token=f"{user}:wrong")
    with pytest.raises(Rejected, match="401: authorization failed"):
        bad.post(now_interval(counter(value=6)))
    nobody = InfluxDBDestination(server.url, database=database)
    with pytest.raises(Rejected, match="401: unable to parse authentication credentials"):
        nobody.post(now_interval(counter(value=7)))
    expect([row["value"] for row in server.rows(database, "hits")]) == [5.0]


def test_the_token_comes_from_the_file_or_the_environment_never_both(tmp_path):
    import click

    from zibrato.backends.influxdb_spec import read_token

    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    expect(read_token(token_file)) == TOKEN
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(click.UsageError, match="is empty"):
        read_token(tmp_path / "empty")
    (tmp_path / "bom").write_bytes(b"\xef\xbb\xbf" + TOKEN.encode() + b"\r\n")
    expect(read_token(tmp_path / "bom")) == TOKEN
    (tmp_path / "two-lines").write_text(f"{TOKEN}\nsecond line\n")
    with pytest.raises(click.UsageError, match="holds spaces, control or non-ASCII") as caught:
        read_token(tmp_path / "two-lines")
    expect(TOKEN in str(caught.value)) == False
    result = run_script(
        "zibrato-influxdb", "--database", "m", "--token-file", token_file, env={"INFLUXDB_TOKEN": TOKEN}
    )
    expect(result.returncode) == 2
    expect(result.stderr).contains("give the token once")
    expect(TOKEN in result.stderr) == False


class InfluxPipeline(WorkerPipeline):
    """A broker and a zibrato-influxdb worker (fast retries) writing to a real influxd."""

    script, ready_log = "zibrato-influxdb", "influxdb worker"

    def __init__(self, tmp_path, influxdb, database, *worker_args, flush=0.5, env=None):
        super().__init__(
            tmp_path,
            "--url",
            influxdb.url,
            "--database",
            database,
            "--retry-delay",
            "0.1",
            "--max-retry-delay",
            "0.5",
            "--timeout",
            "2",
            *worker_args,
            flush=flush,
            env=env,
        )


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: InfluxPipeline(tmp_path, *args, **kwargs))


def influx_total(server: InfluxDB, database: str, measurement: str, field: str = "value") -> float:
    try:
        result = server.query(f'SELECT SUM("{field}") FROM "{measurement}"', database)
    except Exception:  # the server is down: nothing to count yet
        return -1
    series = result.get("series")
    return series[0]["values"][0][1] if series else 0


@needs_influxd
def test_the_stop_signal_delivers_the_final_partial_interval(pipeline, influxdb, tmp_path):
    database = influxdb.create_database("final")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    p = pipeline(influxdb, database, "--token-file", token_file, flush=DAY)
    for i in range(1, 201):
        p.client.timing("info", "db.query", i / 1000, source="api", tags={"env": "prod"})
    p.wait_measurements(200)
    p.stop_worker()
    row = influxdb.wait_for_rows(database, "db.query")[0]
    expect((row["count"], row["min"], row["max"], row["p50"], row["source"], row["env"])) == (
        200,
        0.001,
        0.2,
        0.1,
        "api",
        "prod",
    )
    expect(round(row["sum"], 9)) == 20.1
    expect(p.worker.stderr).contains("with a token")
    expect(TOKEN in p.worker.stderr) == False


@needs_influxd
def test_a_rejected_write_is_logged_with_influxdbs_message_dropped_and_not_retried(pipeline, influxdb):
    p = pipeline(influxdb, "never_created", flush=DAY)
    p.client.count("info", "jobs", 1)
    p.wait_measurements(1)
    p.stop_worker()
    expect(p.worker.stderr).contains('InfluxDB answered 404: database not found: "never_created"')
    expect(p.worker.stderr).contains("dropped the interval at")
    expect(p.worker.stderr).does_not_contain("attempt 1 failed")


@needs_influxd
def test_the_console_script_delivers_exact_totals_through_an_outage(pipeline, tmp_path):
    server = InfluxDB(tmp_path / "influxdb").start()
    try:
        database = server.create_database("outage")
        p = pipeline(server, database, env={"INFLUXDB_TOKEN": TOKEN})
        for i in range(1, 11):
            p.client.count("info", "jobs", i, source="api")
            p.client.timing("info", "work", i / 100)
        p.wait_measurements(20)
        wait_until(lambda: influx_total(server, database, "jobs") == 55, timeout=15, message="55 jobs")
        wait_until(lambda: influx_total(server, database, "work", "count") == 10, timeout=15, message="10 timings")

        server.stop()
        for i in range(1, 6):
            p.client.count("info", "jobs", 100 * i, source="api")
        p.wait_measurements(25)
        wait_until(lambda: p.status()["retries"] >= 2, timeout=15, message="failed deliveries")
        expect(" ".join(p.status()["problems"])).contains("influxdb delivery failing")

        server.start()
        wait_until(
            lambda: influx_total(server, database, "jobs") == 1555, timeout=20, message="every job after the outage"
        )
        expect(p.status()["dropped_intervals"]) == 0
        p.stop_worker()
        expect(p.worker.stderr).contains(f"InfluxDB at {server.url} unreachable: no answer from")
        expect(TOKEN in p.worker.stderr) == False
        expect(TOKEN in " ".join(map(str, p.worker.argv))) == False
    finally:
        server.stop()
