"""docs/SCALING.md's hand-off paths, as an operator runs them: each host hands its intervals to a
shared engine instead of a forwarder tier.

* OTLP: two hosts' ``zibrato-otlp`` export to one OTLP/HTTP receiver standing in for an
  OpenTelemetry Collector gateway; the gateway's view sums both hosts exactly and their
  exponential histograms merge to the buckets of one sketch of all the data.
* Prometheus: two hosts' ``zibrato-prometheus`` scraped by a real Prometheus server; PromQL
  sums the hosts.
"""

from __future__ import annotations

import random
import shutil

import pytest

from support.daemons import free_ports, wait_until
from support.fake_otlp import FakeOtlp
from support.pipeline import WorkerPipeline, pipelines
from zibrato import Zibrato
from zibrato.sketch import Sketch

pytestmark = pytest.mark.timeout(90)


class OtlpHost(WorkerPipeline):
    """A host: its broker and ``zibrato-otlp``; its client's source is the host's name, so each
    host's series are their own streams (the stand-in gateway tells streams apart by attributes)."""

    script = "zibrato-otlp"
    ready_log = "otlp worker"

    def __init__(self, tmp_path, *args, source: str, **kwargs):
        super().__init__(tmp_path, *args, **kwargs)
        self.client.close(timeout=0)
        self.client = Zibrato(port=self.base, source=source)


class PrometheusHost(WorkerPipeline):
    script = "zibrato-prometheus"
    ready_log = "prometheus worker"

    def __init__(self, tmp_path, *args, **kwargs):
        self.listen_port = free_ports(1)
        super().__init__(tmp_path, "--listen", f"127.0.0.1:{self.listen_port}", *args, **kwargs)


@pytest.fixture
def hosts(tmp_path):
    yield from pipelines(lambda cls, *args, **kwargs: cls(tmp_path, *args, **kwargs))


def produce(hosts: list, rng: random.Random) -> list[float]:
    """Each host counts 'requests' (100 each) and times 'db.query' (500 values each), its name as source."""
    everything = []
    for i, host in enumerate(hosts):
        values = [rng.lognormvariate(-5, 1) for _ in range(500)]
        everything += values
        for v in values:
            host.client.timing("info", "db.query", v, source=f"host{i}")
        for _ in range(100):
            host.client.count("info", "requests", source=f"host{i}")
        host.wait_measurements(600)
    return everything


def sketch_of(point) -> Sketch:
    """An OTLP exponential histogram data point as a zibrato sketch (the same bucket scheme)."""
    return Sketch.from_dict(
        {
            "scale": point.scale,
            "zero_count": point.zero_count,
            "positive": {"offset": point.positive.offset, "counts": list(point.positive.bucket_counts)},
            "negative": {"offset": point.negative.offset, "counts": list(point.negative.bucket_counts)},
            "count": point.count,
            "sum": point.sum,
            "min": point.min,
            "max": point.max,
        }
    )


def test_hosts_hand_off_to_an_otlp_gateway_that_merges_them_exactly(hosts):
    with FakeOtlp() as gateway:
        both = [
            hosts(
                OtlpHost,
                "--endpoint",
                gateway.endpoint,
                "--service-name",
                "checkout",
                env={"OTEL_RESOURCE_ATTRIBUTES": f"host.name=host{i}"},
                source=f"host{i}",
            )
            for i in range(2)
        ]
        everything = produce(both, random.Random(13))
        for host in both:
            host.stop_worker()  # the final flush is exported
        requests = gateway.points("requests")
        assert not gateway.violations, gateway.violations
        assert {p.resource["host.name"] for p in requests} == {"host0", "host1"}
        assert sum(p.value for p in requests) == 200
        histograms = gateway.points("db.query")
        assert [p.kind for p in histograms] == ["exponential_histogram"] * 2
        merged = sketch_of(histograms[0].proto).merge(sketch_of(histograms[1].proto))
        one = Sketch(max_exact=0)
        for v in everything:
            one.add(v)
        assert merged.count == len(everything)
        for q in (0.5, 0.9, 0.99):
            assert merged.quantile(q) == one.quantile(q)


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="the prometheus server is not installed")
def test_hosts_hand_off_to_prometheus_which_sums_them(hosts, tmp_path):
    from support.prometheus_server import PrometheusServer

    both = [hosts(PrometheusHost, flush=0.5) for _ in range(2)]
    server = PrometheusServer(tmp_path, [f"127.0.0.1:{h.listen_port}" for h in both]).start()
    try:
        everything = produce(both, random.Random(14))
        wait_until(server.targets_up, timeout=20, message="both hosts scraped")
        server.wait_value("sum(requests_total)", 200, timeout=30)
        server.wait_value("sum(db_query_seconds_count)", len(everything), timeout=30)
        median = server.value("histogram_quantile(0.5, sum by (le) (db_query_seconds_bucket))")
        exact = sorted(everything)[len(everything) // 2 - 1]
        # the default buckets are powers of two: the median lies in the bucket holding the exact one
        assert exact / 2 <= median <= exact * 2
    finally:
        server.stop()
