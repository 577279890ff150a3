"""The real Prometheus (Debian's 2.42, native histograms enabled) scraping zibrato-prometheus's protobuf exposition."""

from __future__ import annotations

import math
import random

import pytest
from expecter import expect
from test_prometheus import PrometheusPipeline

from support.daemons import wait_until
from support.pipeline import WorkerPipeline, pipelines
from support.prometheus_server import PrometheusServer

NATIVE = "--enable-feature=native-histograms"
SCHEMA_6_BUCKET = 2.0**-6  # one schema-6 bucket, in log2


def send_lognormal(pipeline: WorkerPipeline, name: str, n: int, seed: int = 25, batch: int = 50_000) -> list[float]:
    """``n`` lognormal durations (median ~50 ms) through the real client, in batches the client's queue holds.

    Each batch waits until the worker has it: a worker slowed down (coverage, a
    loaded machine) must not make the broker's PUB socket drop at its high-water mark.
    """
    rng = random.Random(seed)
    values = [rng.lognormvariate(-3.0, 1.0) for _ in range(n)]
    timing = pipeline.client.timing
    first = pipeline.status()["measurements"]
    for start in range(0, n, batch):
        chunk = values[start : start + batch]
        for value in chunk:
            timing("info", name, value)
        assert pipeline.client.flush(timeout=30), "the client could not send its batch"
        wait_until(
            lambda: pipeline.status()["measurements"] >= first + start + len(chunk),
            timeout=60,
            message="the batch at the worker",
        )
    assert pipeline.client.dropped == 0
    return values


def nearest_rank(ordered: list[float], q: float) -> float:
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_quantiles_within_a_schema_6_bucket(server, expr: str, values: list[float]) -> None:
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99):
        got = server.value(f"histogram_quantile({q}, {expr})")
        exact = nearest_rank(ordered, q)
        expect((q, abs(math.log2(got / exact)) <= SCHEMA_6_BUCKET)) == (q, True)


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: PrometheusPipeline(tmp_path, *args, **kwargs))


@pytest.fixture
def native_prometheus(tmp_path):
    started = []

    def start(*targets):
        started.append(PrometheusServer(tmp_path, list(targets), flags=(NATIVE,)).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_the_real_prometheus_scrapes_timers_as_native_histograms(pipeline, native_prometheus):
    # the 1M lognormal values through the real client and broker (~17 s on the shared 2-core machine)
    p = pipeline("--max-native-buckets", "2048", flush=0.5)
    values = send_lognormal(p, "db.query", 1_000_000)
    for i in range(1, 51):
        p.client.count("info", "signup", i)
    for v in (100 * i for i in range(10)):
        p.client.histogram("info", "resp.size", v, unit="bytes")
    p.wait_measurements(len(values) + 60)
    prometheus = native_prometheus(f"127.0.0.1:{p.listen_port}")

    prometheus.wait_value("histogram_count(db_query_seconds)", len(values), timeout=30)
    [stored] = prometheus.raw("db_query_seconds")
    expect("histogram" in stored) == True  # stored as a native histogram, not a float series
    expect(prometheus.value("histogram_sum(db_query_seconds)")) == pytest.approx(math.fsum(values), rel=1e-12)
    assert_quantiles_within_a_schema_6_bucket(prometheus, "db_query_seconds", values)
    prometheus.wait_value("signup_total", 1275)
    # a histogram of sizes: native too, and every observation within its buckets
    prometheus.wait_value("histogram_count(resp_size_bytes)", 10)
    expect(prometheus.value("histogram_sum(resp_size_bytes)")) == 4500
    expect(prometheus.value('up{job="zibrato"}')) == 1
    wait_until(lambda: p.status()["scrapes"] >= 1, message="a protobuf scrape counted")
    p.stop_worker()


def test_the_default_budget_keeps_160_buckets_and_every_count(pipeline, native_prometheus):
    p = pipeline(flush=0.5)
    values = send_lognormal(p, "wide", 20_000, seed=5)
    p.wait_measurements(len(values))
    prometheus = native_prometheus(f"127.0.0.1:{p.listen_port}")

    prometheus.wait_value("histogram_count(wide_seconds)", len(values), timeout=30)
    [stored] = prometheus.raw("wide_seconds")
    buckets = stored["histogram"][1]["buckets"]
    expect(len(buckets)) <= 160
    expect(sum(float(b[3]) for b in buckets)) == len(values)
    expect(p.status()["native_schema_lowered"]) >= 1
    p.stop_worker()


def test_metrics_answers_protobuf_only_to_a_scraper_that_asks_for_it():
    import gzip

    from test_native_histogram import SCRAPER_ACCEPT, families
    from test_prometheus import get

    from support.summaries import counter, timer
    from zibrato.backends.prometheus import PrometheusDestination
    from zibrato.destination import Interval

    served = PrometheusDestination(("127.0.0.1", 0))
    served.connect()
    try:
        host, port = served.address
        served.post(Interval(0, 60, [counter("signup", 3), timer("db.query", [0.002, 0.5])]))
        url = f"http://{host}:{port}/metrics"

        status, headers, body = get(url, accept=SCRAPER_ACCEPT, encoding="gzip")
        expect(status) == 200
        expect(headers["Content-Type"]).contains("application/vnd.google.protobuf")
        got = families(gzip.decompress(body))
        expect(sorted(got)) == ["db_query_seconds", "signup_total"]
        expect(got["db_query_seconds"].metric[0].histogram.sample_count) == 2

        status, headers, body = get(url, accept="text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
        expect(headers["Content-Type"]).contains("text/plain")
        expect(body.decode()).contains("db_query_seconds_count")
    finally:
        served.close()
