"""zibrato-prometheus: its HTTP answers, l2met's read API, and the real Prometheus server scraping it."""

from __future__ import annotations

import gzip
import json
import socket
import urllib.error
import urllib.request

import click
import pytest
from expecter import expect
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from support.daemons import free_ports, run_script, wait_until
from support.pipeline import WorkerPipeline, pipelines
from support.prometheus_server import PrometheusServer
from support.summaries import counter, gauge, timer
from zibrato.backends.prometheus import PrometheusDestination, parse_listen
from zibrato.destination import Interval

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def get(url: str, accept: str | None = None, encoding: str | None = None):
    """(status, headers, body) of a GET, 4xx included."""
    request = urllib.request.Request(url)
    if accept:
        request.add_header("Accept", accept)
    if encoding:
        request.add_header("Accept-Encoding", encoding)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture
def served():
    destination = PrometheusDestination(("127.0.0.1", 0))
    destination.connect()
    host, port = destination.address
    destination.base = f"http://{host}:{port}"
    yield destination
    destination.close()


def post(destination, *summaries, end=1_800_000_060.0):
    destination.post(Interval(start=end - 60, end=end, summaries=list(summaries)))


def test_metrics_in_the_text_format_by_default_and_openmetrics_when_asked(served):
    post(served, counter("signup", 3, source="web"), timer("db.query", [0.002, 0.5]))

    status, headers, body = get(served.base + "/metrics")
    expect(status) == 200
    expect(headers["Content-Type"]).contains("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }
    expect(samples[("signup_total", (("source", "web"),))]) == 3
    expect(samples[("db_query_seconds_count", ())]) == 2

    status, headers, body = get(served.base + "/metrics", accept=OPENMETRICS)
    expect(headers["Content-Type"]).contains("application/openmetrics-text")
    expect({f.name: f.type for f in parse_openmetrics(body.decode())}) == {
        "signup": "counter",
        "db_query_seconds": "histogram",
    }


def test_a_large_scrape_is_gzipped_when_accepted(served):
    post(served, *[counter("hits", i, tags=[f"shard:{i}"]) for i in range(100)])

    status, headers, body = get(served.base + "/metrics", encoding="gzip")

    expect(headers["Content-Encoding"]) == "gzip"
    expect(gzip.decompress(body).decode()).contains('hits_total{shard="99"} 99.0')


def test_a_rendering_is_reused_until_the_next_interval_and_made_again_after_it(served):
    post(served, counter("signup", 3))
    first = get(served.base + "/metrics")[2]
    again = get(served.base + "/metrics")[2]
    expect((again, served.figures()["renders"], served.figures()["scrapes"])) == (first, 1, 2)

    post(served, counter("signup", 4), end=1_800_000_120.0)  # rendered again, in the background
    wait_until(lambda: served.figures()["renders"] == 2, message="the rendering after the interval")

    expect(get(served.base + "/metrics")[2].decode()).contains("signup_total 7.0")
    expect(served.figures()["renders"]) == 2


def test_series_answers_the_summary_of_the_nth_last_interval(served):
    post(served, timer("db.query", [0.5], source="api"), end=1_800_000_000.0)
    expect(get(served.base + "/series/db.query?source=api")[0]) == 200  # from now on it keeps 10
    for i, values in enumerate([[0.1, 0.3], [0.2], [0.4, 0.4, 0.4]]):
        post(served, timer("db.query", values, source="api"), end=1_800_000_060.0 + 60 * i)

    status, _, body = get(served.base + "/series/db.query?source=api")
    last = json.loads(body)
    expect((status, last["count"], last["name"], last["source"])) == (200, 3, "db.query", "api")
    expect(json.loads(get(served.base + "/series/db.query?source=api&offset=2")[2])["count"]) == 1
    expect(json.loads(get(served.base + "/series/db.query?source=api&offset=4")[2])["count"]) == 1
    expect(get(served.base + "/series/db.query?source=api&offset=5")[0]) == 404
    expect(get(served.base + "/series/db.query?source=other")[0]) == 404
    expect(get(served.base + "/series/db.query?source=api&offset=0")[0]) == 400


@pytest.mark.parametrize(
    "query, status",
    [
        ("count=3", 200),
        ("count=2", 404),
        ("count=2&tol=1", 200),
        ("mean=0.4&tol=1e-9", 200),
        ("mean=0.5&tol=0.05", 404),
        ("sum=1.2&tol=0.000001", 200),
        ("count=3&sum=9", 404),
        ("offset=2&count=1", 200),
    ],
)
def test_metric_assertions_answer_200_when_they_hold_and_404_when_not(served, query, status):
    post(served, timer("db.query", [0.5], source="api"), end=1_800_000_000.0)
    get(served.base + "/series/db.query?source=api")  # watched: keeps its history from now on
    post(served, timer("db.query", [0.5], source="api"), end=1_800_000_030.0)
    post(served, timer("db.query", [0.4, 0.4, 0.4], source="api"))

    got, _, body = get(served.base + f"/series/db.query?source=api&{query}")

    expect(got) == status
    expect(json.loads(body)["ok"]) == (status == 200)


def test_assertions_on_counters_use_their_sum(served):
    post(served, counter("signup", 12, count=4))

    expect(get(served.base + "/series/signup?sum=12")[0]) == 200
    expect(get(served.base + "/series/signup?count=4")[0]) == 200
    expect(get(served.base + "/series/signup?mean=3")[0]) == 200


def test_ambiguous_series_ask_for_tags_or_type(served):
    post(served, counter("hits", 1, tags=["a:1"]), counter("hits", 2, tags=["a:2"]), gauge("hits", 5))

    status, _, body = get(served.base + "/series/hits")
    expect(status) == 409
    expect(len(json.loads(body)["matches"])) == 3
    expect(json.loads(get(served.base + "/series/hits?tags=a:2")[2])["value"]) == 2
    expect(json.loads(get(served.base + "/series/hits?type=gauge")[2])["value"]) == 5


def test_unknown_paths_and_bad_parameters(served):
    expect(get(served.base + "/nothing")[0]) == 404
    expect(get(served.base + "/series/x?count=many")[0]) == 400


def test_a_port_in_use_is_a_clear_error_at_start():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bad = run_script("zibrato-prometheus", "--listen", f"127.0.0.1:{port}")

    expect(bad.returncode) == 1
    expect(bad.stderr).contains(f"cannot listen on 127.0.0.1:{port}")


def test_an_ipv6_loopback_listen_address():
    destination = PrometheusDestination(("::1", 0))
    try:
        destination.connect()
    except OSError as error:
        pytest.skip(f"no IPv6 loopback here: {error}")
    try:
        host, port = destination.address
        expect(get(f"http://[::1]:{port}/metrics")[0]) == 200
    finally:
        destination.close()


def test_listen_parsing():
    expect(parse_listen("0.0.0.0:9464")) == ("0.0.0.0", 9464)
    expect(parse_listen(":9000")) == ("127.0.0.1", 9000)
    expect(parse_listen("[::1]:9000")) == ("::1", 9000)
    with pytest.raises(ValueError):
        parse_listen("localhost")


def test_bad_flags_are_usage_errors():
    for args in (["--listen", "nowhere"], ["--buckets", "0.1,slow"], ["--expire", "-1"]):
        bad = run_script("zibrato-prometheus", *args)
        expect((args, bad.returncode)) == (args, 2)


# --- the real console script scraped by the real Prometheus server ---------------------------


class PrometheusPipeline(WorkerPipeline):
    script = "zibrato-prometheus"
    ready_log = "prometheus worker"

    def __init__(self, tmp_path, *args, **kwargs):
        self.listen_port = free_ports(1)
        super().__init__(tmp_path, "--listen", f"127.0.0.1:{self.listen_port}", *args, **kwargs)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def scrape(self) -> dict:
        body = get(self.base_url + "/metrics")[2].decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body)
            for s in f.samples
        }


INFO = (("level", "info"),)  # every series carries its level as a label


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: PrometheusPipeline(tmp_path, *args, **kwargs))


@pytest.fixture
def prometheus_for(tmp_path):
    started = []

    def start(*targets):
        started.append(PrometheusServer(tmp_path, list(targets)).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_the_real_prometheus_stores_exact_totals_gauges_and_buckets(pipeline, prometheus_for):
    p = pipeline(flush=0.5)
    prometheus = prometheus_for(f"127.0.0.1:{p.listen_port}")
    timings = [0.001] * 10 + [0.003] * 20 + [0.05] * 5 + [1.5]  # median 0.003
    for i in range(1, 51):
        p.client.count("info", "signup", i, tags={"plan": "pro"})
    for g in (5, -3, 12, 7):
        p.client.gauge("info", "queue.depth", g, source="worker-1")
    for v in timings:
        p.client.timing("info", "db.query", v)
    p.wait_measurements(50 + 4 + len(timings))
    wait_until(
        lambda: p.scrape().get(("db_query_seconds_count", INFO)) == len(timings),
        timeout=10,
        message="the worker's flush",
    )

    prometheus.wait_value('signup_total{plan="pro", level="info", job="zibrato"}', 1275)
    prometheus.wait_value('queue_depth{source="worker-1"}', 7)
    prometheus.wait_value("db_query_seconds_count", len(timings))
    expect(prometheus.value("db_query_seconds_sum")) == pytest.approx(sum(timings))
    for le, expected in (
        ("0.0009765625", 0),
        ("0.001953125", 10),
        ("0.00390625", 30),
        ("0.0625", 35),
        ("1.0", 35),
        ("2.0", 36),
        ("+Inf", 36),
    ):
        expect((le, prometheus.value(f'db_query_seconds_bucket{{le="{le}"}}'))) == (le, expected)
    median = prometheus.value("histogram_quantile(0.5, db_query_seconds_bucket)")
    expect(0.001953125 < median <= 0.00390625) == True  # the bucket holding 0.003
    p99 = prometheus.value("histogram_quantile(0.99, db_query_seconds_bucket)")
    expect(1.0 < p99 <= 2.0) == True

    # every scrape was clean: Prometheus's own counters of what it refused stayed at 0
    own = get(prometheus.url + "/metrics")[2].decode()
    for refused in (
        "prometheus_target_scrapes_sample_duplicate_timestamp_total",
        "prometheus_target_scrapes_sample_out_of_order_total",
        "prometheus_target_scrapes_sample_out_of_bounds_total",
    ):
        expect(own).contains(f"{refused} 0\n")
    expect(prometheus.value('up{job="zibrato"}')) == 1

    # more of the same counter: Prometheus sees the running total, not the last interval
    p.client.count("info", "signup", 25, tags={"plan": "pro"})
    p.wait_measurements(50 + 4 + len(timings) + 1)
    prometheus.wait_value('signup_total{plan="pro"}', 1300)
    p.stop_worker()


@pytest.mark.parametrize(
    "args, exposition",
    [
        ([], {"counter": 0.0}),  # the shared --expire's default 0: the exposition's own 300 s
        (["--expire", "1"], {"counter": 1.0}),  # the former double meaning still works
        (["--series-expire", "600"], {"counter": 600.0}),
        (["--expire", "1", "--series-expire", "600,gauge=60"], {"counter": 600.0, "gauge": 60.0}),
    ],
)
def test_the_series_expiry_has_its_own_flag_and_expire_still_sets_it(args, exposition):
    from zibrato.backends.prometheus_spec import SPEC
    from zibrato.components.builder import build_command, flag_given
    from zibrato.components.fields import build_config
    from zibrato.components.worker_flags import worker_config

    command = build_command(SPEC)
    ctx = command.make_context("zibrato-prometheus", list(args))  # click consumes the list it parses
    with ctx:
        config, shared = SPEC.resolve(build_config(SPEC.config, ctx.params), worker_config(ctx.params, []), flag_given)
    for kind, seconds in exposition.items():
        expect((kind, config.expire[kind])) == (kind, seconds)
    expect(shared.expire["counter"]) == (1.0 if "--expire" in args else 0.0)  # the aggregator's own expiry
    help_text = command.get_help(click.Context(command, info_name="zibrato-prometheus"))
    expect(help_text).contains("--series-expire")


def test_an_idle_series_leaves_metrics_after_expire(pipeline):
    p = pipeline("--expire", "1", flush=0.5)
    p.client.count("info", "once", 3)
    p.wait_measurements(1)
    wait_until(lambda: p.scrape().get(("once_total", INFO)) == 3, message="the counter in /metrics")

    wait_until(lambda: ("once_total", INFO) not in p.scrape(), timeout=10, message="the idle counter expiring")
    expect(p.status()["series_expired"]) >= 1
    p.stop_worker()
