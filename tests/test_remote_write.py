"""zibrato-remote-write against the real receivers: Prometheus 2.42 (with and without native histograms) and
VictoriaMetrics; its requests, splitting, retries and refusals."""

from __future__ import annotations

import math
import time
import urllib.request

import pytest
from expecter import expect
from test_prometheus_native import assert_quantiles_within_a_schema_6_bucket, send_lognormal

from support.daemons import run_script, wait_until
from support.pipeline import RemoteWritePipeline, pipelines
from support.prometheus_server import PrometheusServer
from support.rig import deliver_now
from support.summaries import counter, gauge, timer
from support.victoria_metrics import VictoriaMetrics
from zibrato.backends.prometheus_proto import remote_pb2 as pb
from zibrato.backends.remote_write import RemoteWriteDestination
from zibrato.backends.remote_write_mapping import encode, snapshot
from zibrato.delivery import Rejected
from zibrato.destination import Interval

RECEIVER = "--web.enable-remote-write-receiver"
NATIVE = "--enable-feature=native-histograms"
TIMINGS = [0.001] * 10 + [0.003] * 20 + [0.05] * 5 + [1.5]


@pytest.fixture
def servers(tmp_path):
    started = []

    def prometheus(*flags, name="prometheus"):
        (tmp_path / name).mkdir(exist_ok=True)
        started.append(PrometheusServer(tmp_path / name, [], flags=(RECEIVER, *flags)))
        return started[-1].start()

    def victoria():
        started.append(VictoriaMetrics(tmp_path).start())
        return started[-1]

    prometheus.victoria = victoria
    yield prometheus
    for server in started:
        server.stop()


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: RemoteWritePipeline(tmp_path, *args, **kwargs))


def write_url(server) -> str:
    return server.url + "/api/v1/write"


# --- the real Prometheus, native histograms enabled -----------------------------------------------


def test_native_histograms_and_exact_counters_reach_the_real_prometheus(servers, pipeline):
    prometheus = servers(NATIVE)
    p = pipeline(write_url(prometheus), "--max-native-buckets", "2048", flush=0.5)
    values = send_lognormal(p, "db.query", 1_000_000)  # the 1M lognormal values, through the real broker
    for i in range(1, 51):
        p.client.count("info", "signup", i, tags={"plan": "pro"})
    p.client.gauge("info", "queue.depth", 7, source="worker-1")
    p.wait_measurements(len(values) + 51)

    prometheus.wait_value("histogram_count(db_query_seconds)", len(values), timeout=30)
    [stored] = prometheus.raw("db_query_seconds")
    expect("histogram" in stored) == True
    expect(stored["metric"]) == {"__name__": "db_query_seconds", "level": "info"}
    expect(prometheus.value("histogram_sum(db_query_seconds)")) == pytest.approx(math.fsum(values), rel=1e-12)
    assert_quantiles_within_a_schema_6_bucket(prometheus, "db_query_seconds", values)
    prometheus.wait_value('signup_total{plan="pro", level="info"}', 1275)
    prometheus.wait_value('queue_depth{source="worker-1"}', 7)

    # more intervals: the running total; then a new worker: a reset that increase() understands
    p.client.count("info", "signup", 25, tags={"plan": "pro"})
    p.wait_measurements(len(values) + 52)
    prometheus.wait_value("signup_total", 1300)
    p.restart_worker()
    p.client.count("info", "signup", 5, tags={"plan": "pro"})
    p.wait_measurements(1)
    prometheus.wait_value("signup_total", 5)
    expect(prometheus.value("resets(signup_total[1h])")) == 1
    expect(prometheus.value("max_over_time(signup_total[1h])")) == 1300
    status = p.status()
    expect((status["samples_rejected"], status["native_fallbacks"])) == (0, 0)
    p.stop_worker()


def test_an_outage_of_the_receiver_loses_nothing_and_sends_nothing_out_of_order(tmp_path, servers, pipeline):
    prometheus = servers(NATIVE)
    p = pipeline(write_url(prometheus), "--retry-delay", "0.1", "--max-retry-delay", "0.3", flush=0.5)
    p.client.count("info", "jobs", 1)
    p.wait_measurements(1)
    prometheus.wait_value("jobs_total", 1)

    prometheus.stop()
    delivered = p.status()["delivered_intervals"]
    for n in range(2, 6):  # one increment per interval while the receiver is down
        p.client.count("info", "jobs", 1)
        p.client.timing("info", "job.time", 0.01 * n)
        p.wait_measurements(2 * n - 1)
        flushes = p.status()["flushes"]
        wait_until(lambda: p.status()["flushes"] > flushes, message="the interval flushed")
    wait_until(lambda: p.status()["failed_attempts"] >= 3, message="the worker failing to deliver")
    expect(p.status()["delivered_intervals"]) <= delivered + 1  # at most the one in flight when it stopped
    prometheus.start()

    prometheus.wait_value("jobs_total", 5, timeout=30)
    prometheus.wait_value("histogram_count(job_time_seconds)", 4)
    # every interval of the outage is there, at its own time: the running totals 1, 2, 3, 4, 5
    [series] = prometheus.raw("jobs_total[1h]")
    expect(sorted({float(v) for _, v in series["values"]})) == [1, 2, 3, 4, 5]
    status = p.status()
    expect((status["samples_rejected"], status["requests_rejected"])) == (0, 0)
    own = urllib.request.urlopen(prometheus.url + "/metrics", timeout=5).read().decode()
    expect(own).contains('prometheus_tsdb_out_of_order_samples_total{type="float"} 0')
    p.stop_worker()


def test_the_stop_signal_delivers_the_final_interval(servers, pipeline):
    prometheus = servers(NATIVE)
    p = pipeline(write_url(prometheus))  # a flush interval never reached: only the stop flushes
    p.client.count("info", "last.words", 7)
    p.client.timing("info", "last.call", 0.25)
    p.wait_measurements(2)
    p.stop_worker()
    prometheus.wait_value("last_words_total", 7)
    prometheus.wait_value("histogram_count(last_call_seconds)", 1)


# --- the real Prometheus without native histograms: the classic fallback ------------------------------


def test_a_receiver_without_native_histograms_gets_exact_classic_buckets(servers, pipeline):
    prometheus = servers()  # 2.42 without the flag answers 500 to a native histogram
    p = pipeline(write_url(prometheus), flush=0.5)
    for v in TIMINGS:
        p.client.timing("info", "db.query", v)
    p.client.count("info", "signup", 3)
    p.wait_measurements(len(TIMINGS) + 1)

    prometheus.wait_value("db_query_seconds_count", len(TIMINGS), timeout=30)
    expect(prometheus.value("db_query_seconds_sum")) == pytest.approx(sum(TIMINGS))
    for le, expected in (("0.0009765625", 0), ("0.001953125", 10), ("0.00390625", 30), ("0.0625", 35), ("2.0", 36)):
        expect((le, prometheus.value(f'db_query_seconds_bucket{{le="{le}"}}'))) == (le, expected)
    expect(prometheus.value('db_query_seconds_bucket{le="+Inf"}')) == len(TIMINGS)
    prometheus.wait_value("signup_total", 3)

    p.client.timing("info", "db.query", 0.5)  # later intervals: classic at once, no more 500s
    p.wait_measurements(len(TIMINGS) + 2)
    prometheus.wait_value("db_query_seconds_count", len(TIMINGS) + 1)
    status = p.status()
    expect((status["native_fallbacks"], status["native_histograms"])) == (1, "off: the receiver refused them")
    expect(status["samples_rejected"]) == 0
    p.stop_worker()
    expect(p.worker.stderr.count("does not take native histograms")) == 1


# --- VictoriaMetrics -------------------------------------------------------------------------------


def test_victoria_metrics_stores_counters_gauges_and_classic_buckets_exactly(servers, pipeline):
    victoria = servers.victoria()
    p = pipeline(write_url(victoria), "--classic-histograms", flush=0.5)
    for i in range(1, 51):
        p.client.count("info", "signup", i, tags={"plan": "pro"})
    for g in (5, -3, 12, 7):
        p.client.gauge("info", "queue.depth", g, source="worker-1")
    for v in TIMINGS:
        p.client.timing("info", "db.query", v)
    for i in range(10):
        p.client.histogram("info", "resp.size", 100 * i, unit="bytes")
    p.wait_measurements(50 + 4 + len(TIMINGS) + 10)

    victoria.wait_value('signup_total{plan="pro", level="info"}', 1275, timeout=30)
    victoria.wait_value('queue_depth{source="worker-1"}', 7)
    victoria.wait_value("db_query_seconds_count", len(TIMINGS))
    for le, expected in (("0.001953125", 10), ("0.00390625", 30), ("0.0625", 35), ("2.0", 36), ("+Inf", 36)):
        victoria.wait_value(f'db_query_seconds_bucket{{le="{le}"}}', expected)
    victoria.wait_value('resp_size_bytes_bucket{le="1024.0"}', 10)
    victoria.wait_value('resp_size_bytes_bucket{le="64.0"}', 1)
    victoria.wait_value("resp_size_bytes_sum", 4500)
    expect(p.status()["samples_rejected"]) == 0
    p.stop_worker()


# --- requests, splitting, refusals (the destination itself, against the real Prometheus) -----------------


def test_requests_are_split_by_samples_with_sorted_labels_and_one_timestamp():
    from zibrato.backends.prometheus_mapping import PrometheusState

    state = PrometheusState()
    state.update([counter(f"c{i}", i, tags=["zone:b", "app:x"]) for i in range(5)] + [timer("t", [0.1, 0.2])])
    points = snapshot(state)
    body, used, samples, has_native = encode(points, 1234, native=True, classic=True, max_samples=3)
    expect((used, samples, has_native)) == (3, 3, False)
    request = pb.WriteRequest()
    request.ParseFromString(body)
    names = [label.name for label in request.timeseries[0].labels]
    expect(names) == sorted(names)
    expect(names[0]) == "__name__"
    expect({s.timestamp for ts in request.timeseries for s in ts.samples}) == {1234}
    # a histogram's classic series and its native sample go together, even past the limit
    body, used, samples, has_native = encode(points[5:], 1234, native=True, classic=True, max_samples=3)
    expect((used, has_native, samples)) == (1, True, 1 + len(points[5].bounds) + 3)


def test_an_out_of_order_refusal_is_dropped_counted_and_the_rest_goes_out(servers):
    prometheus = servers(NATIVE)
    destination = RemoteWriteDestination(write_url(prometheus), max_samples=1)
    now = time.time()
    destination.post(Interval(now - 1, now, [counter("late", 1)]))
    with pytest.raises(Rejected) as refused:  # an older timestamp than what Prometheus holds: 400
        destination.post(Interval(now - 61, now - 60, [counter("late", 1), gauge("fresh", 4)]))
    expect(str(refused.value)).contains("400")
    figures = destination.figures()
    expect((figures["requests_rejected"], figures["samples_rejected"])) == (1, 1)
    prometheus.wait_value("late_total", 1)
    prometheus.wait_value("fresh", 4)  # its own request still went out
    destination.close()


def test_bad_flags_and_secrets_are_usage_errors_that_name_no_secret(tmp_path):
    headers = tmp_path / "headers"
    headers.write_text("X-Scope-OrgID tenant-1\n")
    password = tmp_path / "password"
    password.write_text("s3cret-pw\n")
    for args in (
        [],
        ["--url", "ftp://x/api/v1/write"],
        ["--url", "http://user:s3cret-pw@127.0.0.1:1/api/v1/write"],
        ["--url", "http://127.0.0.1:1/api/v1/write", "--header-file", str(headers)],
        ["--url", "http://127.0.0.1:1/api/v1/write", "--password-file", str(password)],
        ["--url", "http://127.0.0.1:1/api/v1/write", "--max-samples-per-request", "0"],
        ["--url", "http://127.0.0.1:1/api/v1/write", "--buckets", "db.*=1,x"],
    ):
        bad = run_script("zibrato-remote-write", *args)
        expect((args, bad.returncode)) == (args, 2)
        expect(bad.stderr).does_not_contain("s3cret-pw")
        expect(bad.stderr).does_not_contain("tenant-1")


def test_the_header_file_and_credentials_are_read_from_files_or_the_environment(tmp_path):
    from zibrato.backends.remote_write_spec import credentials as _credentials
    from zibrato.backends.remote_write_spec import read_header_file

    headers = tmp_path / "headers"
    headers.write_text("# tenant\nX-Scope-OrgID: tenant-1\nx-extra=a=b\n\n")
    expect(read_header_file(headers)) == {"X-Scope-OrgID": "tenant-1", "x-extra": "a=b"}
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    expect(_credentials(None, None, token)) == (None, "tok-1")
    password = tmp_path / "password"
    password.write_text("pw\n")
    expect(_credentials("me", password, None)) == (("me", "pw"), None)


# --- what goes on the wire, and the retry rules (a loopback receiver that records each request) ------------


class Recorder:
    """A loopback HTTP receiver: records each request (headers, snappy-decoded WriteRequest), answers as scripted."""

    def __init__(self, tls: tuple[str, str] | None = None):
        import ssl
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        recorder = self
        self.requests: list[tuple[dict, pb.WriteRequest]] = []
        self.answers: list[tuple[int, dict, bytes]] = []  # popped in order; then 200

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                import cramjam

                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = pb.WriteRequest()
                request.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
                recorder.requests.append((dict(self.headers), request))
                status, headers, text = recorder.answers.pop(0) if recorder.answers else (200, {}, b"")
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/api/v1/write"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    made = Recorder()
    yield made
    made.close()


def test_the_worker_sends_the_spec_headers_its_tenant_header_and_basic_auth_from_the_environment(
    tmp_path, recorder, pipeline
):
    headers = tmp_path / "headers"
    headers.write_text("X-Scope-OrgID: tenant-1\n")
    p = pipeline(
        recorder.url,
        "--header-file",
        headers,
        "--username",
        "ops",
        "-v",
        flush=0.5,
        env={"ZIBRATO_REMOTE_WRITE_PASSWORD": "s3cret-pw"},
    )
    p.client.count("info", "signup", 3)
    p.wait_measurements(1)
    wait_until(
        lambda: any(ts.labels[0].value == "signup_total" for _, r in recorder.requests for ts in r.timeseries),
        message="the counter at the receiver",
    )
    sent, _ = recorder.requests[-1]
    expect(sent["Content-Encoding"]) == "snappy"
    expect(sent["Content-Type"]) == "application/x-protobuf"
    expect(sent["X-Prometheus-Remote-Write-Version"]) == "0.1.0"
    expect(sent["User-Agent"].startswith("zibrato-remote-write/")) == True
    expect(sent["X-Scope-OrgID"]) == "tenant-1"
    import base64

    expect(sent["Authorization"]) == "Basic " + base64.b64encode(b"ops:s3cret-pw").decode()
    p.stop_worker()
    expect(p.worker.stderr).does_not_contain("s3cret-pw")
    expect(p.worker.stderr).does_not_contain("tenant-1")


def _interval(end=None):
    end = end or time.time()
    return Interval(end - 1, end, [counter("jobs", 2), gauge("depth", 3)])


def test_429_and_503_are_retried_with_retry_after_and_only_what_was_refused_is_sent_again(recorder):
    from zibrato.delivery import Retryable

    destination = RemoteWriteDestination(recorder.url, max_samples=1)
    recorder.answers = [(429, {"Retry-After": "7"}, b"slow down")]
    first = destination.parts(_interval())[0]
    with pytest.raises(Retryable) as refused:
        destination.send(first)
    expect(refused.value.retry_after) == 7
    recorder.requests.clear()

    recorder.answers = [(200, {}, b""), (429, {"Retry-After": "0"}, b"slow down"), (503, {}, b"busy")]
    interval = _interval()
    queue = deliver_now(destination, interval)  # the real delivery queue, retrying
    names = [r.timeseries[0].labels[0].value for _, r in recorder.requests]
    expect(names) == ["jobs_total", "depth", "depth", "depth"]  # the accepted one is not resent
    stamps = {r.timeseries[0].samples[0].timestamp for _, r in recorder.requests}
    expect(stamps) == {round(interval.end * 1000)}  # a retry keeps the interval's own timestamp
    c = queue.counts
    expect((c["parts_delivered"], c["parts_retried"], c["failed_attempts"], c["delivered_intervals"])) == (2, 1, 2, 1)
    destination.close()


def test_a_500_is_never_retried_forever_and_a_redirect_is_not_followed(recorder):
    from zibrato.delivery import Retryable

    destination = RemoteWriteDestination(recorder.url)
    recorder.answers = [(500, {}, b"disk trouble")] * 5
    queue = deliver_now(destination, _interval())
    expect((queue.counts["failed_attempts"], queue.counts["rejected_intervals"])) == (4, 1)
    expect(queue.last_error).contains("disk trouble")
    expect(destination.figures()["samples_rejected"]) == 2

    recorder.answers = [(307, {"Location": recorder.url}, b"")]
    with pytest.raises(Retryable) as redirected:  # an operator must fix the URL; the data is kept
        destination.post(_interval(time.time() + 1))
    expect(redirected.value.status) == 307
    expect(len(recorder.requests)) == 6  # the redirect was not followed
    destination.close()


def test_a_refusal_that_names_native_histograms_switches_that_receiver_to_classic_buckets(recorder):
    destination = RemoteWriteDestination(recorder.url)
    recorder.answers = [(400, {}, b"native histograms are disabled for tenant team-a")]
    destination.post(Interval(1, 2, [timer("db.query", [0.001, 0.5])]))  # delivered, as classic

    [(_, refused), (_, resent)] = recorder.requests
    expect([len(ts.histograms) for ts in refused.timeseries]) == [1]
    names = {ts.labels[0].value for ts in resent.timeseries}
    expect(names) == {"db_query_seconds_bucket", "db_query_seconds_count", "db_query_seconds_sum"}
    expect(sum(len(ts.histograms) for ts in resent.timeseries)) == 0
    expect(destination.figures()["native_fallbacks"]) == 1
    destination.close()


def test_https_with_a_ca_file(tmp_path):
    import subprocess

    from zibrato.delivery import Retryable

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    receiver = Recorder(tls=(str(cert), str(key)))
    try:
        untrusted = RemoteWriteDestination(receiver.url)
        with pytest.raises(Retryable, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.post(_interval())
        trusted = RemoteWriteDestination(receiver.url, ca_file=str(cert))
        trusted.post(_interval())
        expect(len(receiver.requests)) == 1
    finally:
        receiver.close()
