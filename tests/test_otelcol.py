"""zibrato-otlp against the real OpenTelemetry Collector (built by bin/setup --test into
.tools/bin/otelcol from tests/otelcol/builder.yaml; tests/support/otelcol.py starts it).

* Through the Collector unchanged: zibrato-otlp -> a relay that keeps a copy of every request
  -> the Collector (OTLP/HTTP receiver) -> its ``otlphttp`` exporter -> the project's recording
  receiver (tests/support/fake_otlp.py): every data point comes out as it went in (values,
  timestamps, temporality, scale and buckets), and the Collector's own metrics count no
  refused and no failed metric point.
* A gateway for Prometheus: ``deltatocumulative`` and the ``prometheus`` exporter, scraped by
  the real Prometheus (Debian's, native histograms on): totals and quantiles of what was sent.
* An outage: the Collector stopped and started again on the same port while zibrato-otlp keeps
  flushing: nothing lost, nothing twice (the backlog).
"""

from __future__ import annotations

import json
import math
import random
import urllib.parse
import urllib.request

import pytest
from expecter import expect

from support.daemons import free_ports, wait_until
from support.fake_otlp import FakeOtlp
from support.otelcol import Collector, OtlpRelay, data_points
from support.pipeline import WorkerPipeline, pipelines
from support.prometheus_server import PrometheusServer

pytestmark = pytest.mark.timeout(120)


class OtlpPipeline(WorkerPipeline):
    script = "zibrato-otlp"
    ready_log = "otlp worker"

    def __init__(self, tmp_path, endpoint, *args, **kwargs):
        super().__init__(tmp_path, "--endpoint", endpoint, "--service-name", "checkout", *args, **kwargs)

    def next_flush(self) -> None:
        """Wait until the worker has flushed once more (its figures, not a sleep)."""
        flushes = self.status()["flushes"]
        wait_until(lambda: self.status()["flushes"] > flushes, timeout=15, message="the next flush")


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: OtlpPipeline(tmp_path, *args, **kwargs))


@pytest.fixture
def receiver():
    with FakeOtlp() as fake:
        yield fake
    expect(fake.violations) == []


@pytest.fixture
def collectors(tmp_path):
    made: list[Collector] = []

    def make(**kwargs) -> Collector:
        made.append(Collector(tmp_path, name=f"otelcol-{len(made)}", **kwargs).start())
        return made[-1]

    yield make
    for collector in made:
        collector.stop()


def forwarding_to(receiver: FakeOtlp) -> dict:
    """The Collector's exporters: ``otlphttp`` to the recording receiver, and ``debug``.

    One queue consumer: by default the exporter sends with ten at once, so a backlog that
    arrives in a burst after an outage may reach the receiver out of order, and the receiver
    refuses a delta interval that overlaps an earlier one (the Collector's queue reorders,
    not Zibrato, which sends its backlog in order)."""
    return {
        "otlphttp": {
            "endpoint": receiver.endpoint,
            "retry_on_failure": {"initial_interval": "100ms"},
            "sending_queue": {"num_consumers": 1},
        },
        "debug": {"verbosity": "basic"},
    }


def point_count(points: dict) -> int:
    return sum(len(series) for series in points.values())


def send_every_kind(p: OtlpPipeline, rng: random.Random, round_: int) -> int:
    """Counters, gauges, a set and timers with tags and sources; returns how many were sent."""
    sent = 0
    for i in range(1, 21):
        p.client.count("info", "signup", i, tags={"plan": "pro" if i % 2 else "free"})
        sent += 1
    for g in (5, -3, 12.5, 7 + round_):
        p.client.gauge("info", "queue.depth", g, source="api")
        sent += 1
    for member in ("ann", "bob", "ann", f"cy{round_}"):
        p.client.set("info", "users", member)
        sent += 1
    for _ in range(300):
        p.client.timing("info", "db.query", rng.lognormvariate(-5, 1.2), source="api")
        p.client.histogram("warn", "balance", rng.gauss(0, 50) if rng.random() < 0.9 else 0.0, unit="EUR")
        sent += 2
    p.wait_measurements(sent * (round_ + 1))
    return sent


@pytest.mark.parametrize("temporality", ["delta", "cumulative"])
def test_every_kind_comes_out_of_the_collector_as_zibrato_sent_it(
    pipeline, receiver, collectors, temporality, tmp_path
):
    collector = collectors(exporters=forwarding_to(receiver), processors={"batch": {"timeout": "50ms"}})
    with OtlpRelay(collector.endpoint) as relay:
        p = pipeline(relay.endpoint, "--temporality", temporality, "--retry-delay", "0.1", flush=1)
        rng = random.Random(27)
        for round_ in range(2):  # two intervals: timestamps, running totals and start times move on
            send_every_kind(p, rng, round_)
            p.next_flush()
        p.stop_worker()
        sent = data_points(relay.requests)

        wait_until(
            lambda: point_count(data_points(receiver.requests)) >= point_count(sent),
            timeout=20,
            message="every data point through the Collector",
        )

    out = data_points(receiver.requests)
    kinds = {stream[3] for stream in sent}
    expect(kinds) == {"sum", "gauge", "exponential_histogram"}
    expect({stream[5] for stream in sent if stream[3] != "gauge"}) == {1 if temporality == "delta" else 2}
    histograms = [point for stream, points in sent.items() if stream[3] == "exponential_histogram" for point in points]
    expect(all("positive" in h and "scale" in h for h in histograms)) == True
    expect(any("negative" in h and "zero_count" in h for h in histograms)) == True  # the balances
    expect(sorted(out)) == sorted(sent)
    for stream, points in sent.items():
        assert out[stream] == points, f"{stream[2]} {stream[7]} changed in the Collector"
    telemetry = collector.telemetry()
    expect(telemetry["otelcol_receiver_accepted_metric_points"]) == point_count(sent)
    expect(telemetry.get("otelcol_receiver_refused_metric_points", 0)) == 0
    expect(telemetry["otelcol_exporter_sent_metric_points"]) >= point_count(sent)  # debug and otlphttp
    expect(telemetry.get("otelcol_exporter_send_failed_metric_points", 0)) == 0


def test_an_outage_of_the_collector_loses_nothing_through_the_backlog(pipeline, receiver, collectors):
    collector = collectors(exporters=forwarding_to(receiver))
    p = pipeline(collector.endpoint, "--retry-delay", "0.1", "--max-retry-delay", "0.3", flush=0.5)
    sent = 0

    def send_one_interval(value: int) -> None:
        nonlocal sent
        p.client.count("info", "orders", value)
        p.client.flush()
        sent += value
        p.next_flush()

    def delivered() -> float:
        return sum(point.value for point in receiver.points("orders"))

    send_one_interval(1)
    wait_until(lambda: delivered() == 1, timeout=15, message="the first interval through the Collector")
    collector.stop()
    for value in range(2, 7):  # five intervals while the Collector is down
        send_one_interval(value)
    expect(p.status()["backlog"]) >= 3
    expect(delivered()) == 1

    collector.start()  # the same port
    wait_until(
        lambda: delivered() == sent and p.status()["backlog"] == 0,
        timeout=30,
        message=f"the backlog delivered ({sent} orders)",
    )
    p.stop_worker()
    wait_until(lambda: delivered() == sent, timeout=10, message="the final flush")
    expect(delivered()) == sent  # nothing lost, nothing twice (the receiver refuses overlapping deltas)
    expect(p.worker.stderr).contains("otlp delivery recovered")


def native_buckets(server: PrometheusServer, expr: str) -> list[tuple[float, float, float]]:
    """The buckets (lower, upper, count) of the one native histogram ``expr`` answers."""
    with urllib.request.urlopen(f"{server.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}") as answer:
        [result] = json.load(answer)["data"]["result"]
    buckets = result["histogram"][1]["buckets"]
    assert {rule for rule, *_ in buckets} == {0}, buckets  # (lower, upper]: the positive buckets
    return [(float(lower), float(upper), float(count)) for _rule, lower, upper, count in buckets]


def test_a_collector_gateway_turns_deltas_into_what_prometheus_scrapes(pipeline, collectors, tmp_path):
    exposed = free_ports(1)
    collector = collectors(
        exporters={"prometheus": {"endpoint": f"127.0.0.1:{exposed}"}}, processors={"deltatocumulative": {}}
    )
    server = PrometheusServer(tmp_path, [f"127.0.0.1:{exposed}"], flags=("--enable-feature=native-histograms",))
    server.start()
    try:
        p = pipeline(collector.endpoint, flush=0.5)
        rng = random.Random(28)
        values: list[float] = []
        for _ in range(3):  # three delta intervals, summed by the Collector
            batch = [rng.lognormvariate(-5, 1) for _ in range(400)]
            values += batch
            for v in batch:
                p.client.timing("info", "db.query", v)
            for i in range(50):
                p.client.count("info", "requests", source=f"web{i % 2}")
            p.wait_measurements(len(values) + 50 * len(values) // 400)
            p.next_flush()

        server.wait_value("sum(requests_total)", 150, timeout=30)
        server.wait_value("sum(histogram_count(db_query_seconds))", len(values), timeout=30)
        expect(server.value("sum(histogram_sum(db_query_seconds))")) == pytest.approx(sum(values), rel=1e-9)
        buckets = native_buckets(server, "sum(db_query_seconds)")
        expect(sum(count for *_, count in buckets)) == len(values)
        for lower, upper, count in buckets:  # each bucket holds exactly the values sent into it
            assert count == sum(lower < v <= upper for v in values), (lower, upper, count)
        ordered = sorted(values)
        for q in (0.5, 0.9, 0.99):
            exact = ordered[math.ceil(q * len(ordered)) - 1]  # nearest rank
            [(lower, upper, _)] = [b for b in buckets if b[0] < exact <= b[1]]
            got = server.value(f"histogram_quantile({q}, sum(db_query_seconds))")
            assert lower <= got <= upper, (q, exact, got, (lower, upper))
    finally:
        server.stop()


def test_without_the_collector_the_tests_fail_saying_what_is_missing(monkeypatch, tmp_path):
    import support.otelcol as otelcol

    monkeypatch.setattr(otelcol, "BINARY", otelcol.ROOT / ".tools" / "bin" / "otelcol-not-built")
    monkeypatch.setattr(otelcol.shutil, "which", lambda name: None)
    monkeypatch.setattr(otelcol, "GO", tmp_path / "no-go")

    with pytest.raises(AssertionError, match="Go is not installed.*run bin/setup --test"):
        otelcol.require_binary()
