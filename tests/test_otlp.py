"""zibrato-otlp against the spec-enforcing OTLP/HTTP receiver (tests/support/fake_otlp.py)."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from pathlib import Path

import pytest
from expecter import expect

from support.daemons import run_script, wait_until
from support.fake_otlp import Fail, FakeOtlp, Partial
from support.pipeline import WorkerPipeline, pipelines
from support.rig import deliver_now
from support.summaries import counter, gauge, set_, timer
from zibrato.backends.otlp import OtlpDestination, metrics_url
from zibrato.delivery import Rejected, Retryable
from zibrato.destination import Interval

TOKEN = "Bearer s3cr3t-otlp-token"
START, END = 1_800_000_000.0, 1_800_000_060.0


@pytest.fixture
def otlp():
    with FakeOtlp() as fake:
        yield fake
    expect(fake.violations) == []


def destination(fake: FakeOtlp, **kwargs) -> OtlpDestination:
    made = OtlpDestination(fake.url, **kwargs)
    made.connect()
    return made


def interval(*summaries, start=START, end=END) -> Interval:
    return Interval(start=start, end=end, summaries=list(summaries))


def test_an_interval_arrives_gzipped_with_every_kind_mapped(otlp):
    d = destination(otlp)

    d.post(
        interval(
            counter("signup", 12, source="web"),
            gauge("depth", 7),
            set_("users", 3),
            timer("db.query", [0.002, 0.004, 0.004]),
        )
    )

    expect(otlp.headers[0]["Content-Encoding"]) == "gzip"
    got = {p.metric: p for p in otlp.points()}
    expect((got["signup"].value, got["signup"].attributes)) == (12, {"source": "web"})
    expect((got["depth"].value, got["users"].value)) == (7, 3)
    expect((got["db.query"].kind, got["db.query"].proto.count)) == ("exponential_histogram", 3)
    expect(d.figures()["points_sent"]) == 4


def test_uncompressed_bodies_when_asked(otlp):
    destination(otlp, compression="none").post(interval(counter("c", 1)))

    expect(otlp.headers[0].get("Content-Encoding")) == None
    expect([p.value for p in otlp.points()]) == [1]


def test_headers_are_sent_and_never_logged(otlp, caplog):
    caplog.set_level(logging.DEBUG)
    otlp.required_headers = {"Authorization": TOKEN}
    otlp.script(Fail(503, retry_after=0))
    d = destination(otlp, headers={"Authorization": TOKEN})

    with pytest.raises(Retryable):
        d.post(interval(counter("c", 1)))
    d.post(interval(counter("c", 1)))

    expect([p.value for p in otlp.points()]) == [1]
    expect(caplog.text).does_not_contain("s3cr3t")


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_the_retryable_statuses_are_transient_with_their_retry_after(otlp, status):
    otlp.script(Fail(status, "busy", retry_after=7))
    d = destination(otlp)

    with pytest.raises(Retryable) as failure:
        d.post(interval(counter("c", 1)))

    expect(failure.value.retry_after) == 7
    expect(str(failure.value)).contains("busy")
    expect(otlp.points()) == []


def test_a_connection_error_is_transient(unused_port):
    d = OtlpDestination(f"http://127.0.0.1:{unused_port}/v1/metrics", timeout=2)
    d.connect()

    with pytest.raises(Retryable, match="no answer"):
        d.post(interval(counter("c", 1)))
    expect(d.figures()["requests_failed"]) == 1


@pytest.mark.parametrize("status", [400, 401, 413, 500])
def test_other_refusals_are_permanent_and_logged_with_the_server_message(otlp, caplog, status):
    otlp.script(Fail(status, "metric name is cursed"))
    d = destination(otlp)

    with pytest.raises(Rejected, match="metric name is cursed"):
        d.post(interval(counter("c", 1), gauge("g", 2)))

    expect(caplog.text).contains(f"refused 2 data points with {status}: metric name is cursed")
    expect(d.figures()["points_rejected"]) == 2


def test_a_partial_success_is_logged_and_counted_not_retried(otlp, caplog):
    otlp.script(Partial(rejected=1, message="gauge g is too old"))
    d = destination(otlp)

    d.post(interval(counter("c", 1), gauge("g", 2)))

    expect(len(otlp.attempts)) == 1
    expect(caplog.text).contains("rejected 1 of its 2 data points: gauge g is too old")
    expect((d.figures()["points_rejected"], d.figures()["points_sent"])) == (1, 1)


def test_a_split_interval_retried_after_a_failure_sends_each_request_once():
    with FakeOtlp(max_points=2) as fake:  # the receiver refuses bigger requests
        d = destination(fake, max_points=2)
        fake.script(None, Fail(503, retry_after=0))  # the second of three requests fails
        whole = interval(*[counter("hits", i, tags=[f"shard:{i}"]) for i in range(5)])

        queue = deliver_now(d, whole)

        expect(len(fake.attempts)) == 4
        expect(len(fake.requests)) == 3
        expect(sorted(p.value for p in fake.points())) == [0, 1, 2, 3, 4]
        expect(fake.violations) == []
        c = queue.counts
        expect((c["parts_delivered"], c["parts_retried"], c["delivered_intervals"])) == (3, 1, 1)


def test_a_rejected_request_does_not_stop_the_rest_of_the_interval():
    with FakeOtlp(max_points=1) as fake:
        d = destination(fake, max_points=1)
        fake.script(Fail(400, "first is bad"))
        with pytest.raises(Rejected, match="first is bad"):
            d.post(interval(counter("a", 1), counter("b", 2), counter("c", 3)))

        expect(sorted(p.metric for p in fake.points())) == ["b", "c"]


def test_cumulative_temporality_reaches_the_receiver_as_running_totals(otlp):
    d = destination(otlp, temporality="cumulative")

    for i, value in enumerate([3, 4, 0]):
        d.post(interval(counter("hits", value), start=START + 60 * i, end=END + 60 * i))

    expect([p.value for p in otlp.points("hits")]) == [3, 7, 7]


def test_https_with_a_ca_file(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    with FakeOtlp(tls=(str(cert), str(key))) as fake:
        untrusted = destination(fake)
        with pytest.raises(Retryable, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.post(interval(counter("c", 1)))

        destination(fake, ca_file=str(cert)).post(interval(counter("c", 1)))

        expect([p.value for p in fake.points()]) == [1]
        expect(fake.violations) == []


def test_endpoint_resolution_follows_the_opentelemetry_variables():
    expect(metrics_url(None, {})) == "http://localhost:4318/v1/metrics"
    expect(metrics_url(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://gw:4318/"})) == "https://gw:4318/v1/metrics"
    expect(
        metrics_url(
            None,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://gw", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://m/custom"},
        )
    ) == "https://m/custom"
    expect(
        metrics_url("http://c:4318/otlp", {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://m"})
    ) == "http://c:4318/otlp/v1/metrics"
    with pytest.raises(ValueError, match="credentials"):
        metrics_url("https://user:pw@gw:4318", {})


# --- the real console script, end to end ------------------------------------------------


class OtlpPipeline(WorkerPipeline):
    script = "zibrato-otlp"
    ready_log = "otlp worker"

    def __init__(self, tmp_path, fake, *args, **kwargs):
        self.fake = fake
        super().__init__(tmp_path, "--endpoint", fake.endpoint, *args, **kwargs)

    def start(self):
        super().start()
        cmdline = Path(f"/proc/{self.worker.process.pid}/cmdline").read_bytes()
        expect(cmdline).does_not_contain(b"s3cr3t")
        return self

    def received(self, name):
        return [p for p in self.fake.points(name)]

    def close(self):
        super().close()
        expect(self.worker.stderr).does_not_contain("s3cr3t")


@pytest.fixture
def pipeline(tmp_path, otlp):
    yield from pipelines(lambda *args, **kwargs: OtlpPipeline(tmp_path, otlp, *args, **kwargs))


def test_exact_values_arrive_and_the_stop_signal_delivers_the_final_flush(pipeline, otlp):
    otlp.required_headers = {"Authorization": TOKEN}
    p = pipeline(
        "--service-name",
        "checkout",
        env={
            "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization={TOKEN}",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        },
    )
    for i in range(1, 51):
        p.client.count("info", "signup", i, tags={"plan": "pro"})
    for g in (5, -3, 12, 7):
        p.client.gauge("info", "queue.depth", g)
    for v in (0.001, 0.002, 0.004):
        p.client.timing("info", "db.query", v, source="api")
    p.wait_measurements(50 + 4 + 3)
    stopped_at = time.time()
    p.stop_worker(signal.SIGTERM)

    [signup] = p.received("signup")
    expect((signup.value, signup.attributes, signup.kind)) == (1275, {"level": "info", "plan": "pro"}, "sum")
    expect(abs(signup.time / 1e9 - stopped_at)) < 5
    expect(signup.resource["service.name"]) == "checkout"
    expect(signup.resource["deployment.environment"]) == "test"
    expect([q.value for q in p.received("queue.depth")]) == [7]
    [query] = p.received("db.query")
    expect(query.attributes) == {"source": "api", "level": "info"}
    expect((query.proto.count, query.proto.sum)) == (3, pytest.approx(0.007))


def test_an_outage_with_retry_after_loses_nothing_and_sends_nothing_twice(pipeline, otlp):
    p = pipeline("--retry-delay", "0.1", "--max-retry-delay", "0.5", flush=1)
    otlp.script(*[Fail(503, "collector restarting", retry_after=0.2)] * 3)
    for i in range(1, 4):
        p.client.count("info", "orders", i)
    p.wait_measurements(3)

    wait_until(
        lambda: sum(x.value for x in p.received("orders")) == 6, timeout=15, message="the orders after the outage"
    )
    p.stop_worker()

    expect(sum(x.value for x in p.received("orders"))) == 6
    expect(p.worker.stderr).contains("collector restarting")
    expect(p.worker.stderr).contains("otlp delivery recovered after 3 failed attempts")


def test_an_outage_spanning_several_flushes_loses_nothing(pipeline, otlp):
    p = pipeline("--retry-delay", "0.1", "--max-retry-delay", "0.3", flush=0.5)
    otlp.fail_until_cleared(Fail(503, "collector down"))
    sent = 0
    for i in range(1, 5):  # each value in its own flush interval
        flushes = p.status()["flushes"]
        p.client.count("info", "orders", i)
        p.client.flush()
        sent += i
        wait_until(lambda: p.status()["flushes"] > flushes, message="the next flush")
    expect(p.status()["backlog"]) >= 3
    expect(p.received("orders")) == []

    otlp.clear_failure()

    def orders():
        return sum(x.value for x in p.received("orders"))

    wait_until(lambda: orders() == sent and p.status()["backlog"] == 0, timeout=15, message="the backlog delivered")
    p.stop_worker()
    expect(orders()) == sent  # nothing lost, nothing twice
    expect(otlp.violations) == []  # the delayed intervals are still in order, never overlapping


def test_headers_from_a_file(pipeline, otlp, tmp_path):
    otlp.required_headers = {"Authorization": TOKEN, "X-Scope": "ops"}
    headers = tmp_path / "otlp-headers"
    headers.write_text(f"# the collector's token\nAuthorization={TOKEN.replace(' ', '%20')}\nX-Scope=ops\n")
    p = pipeline("--headers-file", headers)
    p.client.count("info", "from.file", 3)
    p.wait_measurements(1)
    p.stop_worker()

    expect([x.value for x in p.received("from.file")]) == [3]


def test_bad_flags_are_usage_errors_that_echo_no_secret(tmp_path):
    bad = run_script("zibrato-otlp", "--endpoint", "ftp://collector")
    expect(bad.returncode) == 2
    expect(bad.stderr).contains("http:// or https://")

    broken = tmp_path / "headers"
    broken.write_text("s3cr3t-without-a-key\n")
    bad = run_script("zibrato-otlp", "--headers-file", broken)
    expect(bad.returncode) == 2
    expect(bad.stderr).contains("entry 1 is not key=value")
    expect(bad.stderr).does_not_contain("s3cr3t")

    expect(run_script("zibrato-otlp", "--temporality", "sometimes").returncode) == 2


def test_a_server_message_cannot_forge_log_lines(otlp, caplog):
    otlp.script(Fail(400, "bad\nzibrato.otlp ERROR all delivered"))
    with pytest.raises(Rejected):
        destination(otlp).post(interval(counter("c", 1)))

    expect(caplog.text).contains("bad\\nzibrato.otlp ERROR")
    expect([line for line in caplog.text.splitlines() if line.startswith("zibrato.otlp ERROR")]) == []
