"""Hostile HTTP answers against the shared client (zibrato/http_client.py) and the real zibrato-otlp.

Each test drives what an attacker's (or a broken proxy's) server does, on a
loopback server of tests/support/hostile_http.py: an answer that drips, a
redirect to another host, a 100 MB answer, a negative partial success.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from expecter import expect
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from support.daemons import wait_until
from support.hostile_http import HostileServer, drip, huge, plain, redirect
from support.pipeline import WorkerPipeline, pipelines
from support.summaries import counter
from zibrato.backends.influxdb import InfluxDBDestination
from zibrato.backends.librato import Librato
from zibrato.backends.otlp import OtlpDestination
from zibrato.delivery import Retryable
from zibrato.destination import Interval
from zibrato.http_client import Answer, HttpSession, post

API_KEY = "x-api-key=s3cr3t-redirect-key"


def one_interval() -> Interval:
    return Interval(1_800_000_000.0, 1_800_000_060.0, [counter("orders", 3)])


# --- the client itself ------------------------------------------------------------------


def test_a_dripping_answer_times_out_at_the_total_deadline():
    with HostileServer(drip(every=0.2)) as server:
        with pytest.raises(Retryable, match="no whole answer .* within 1 s") as raised:
            post(HttpSession(), server.endpoint + "/x", data=b"body", deadline=1.0)
    expect(raised.value.status) == "timeout"


def test_an_answer_body_is_read_only_up_to_the_cap():
    with HostileServer(huge(size=20 * 1024 * 1024)) as server:
        answer = post(HttpSession(), server.endpoint + "/x", data=b"", deadline=10, max_answer_bytes=1000)
        expect((len(answer.body), answer.truncated)) == (1000, True)
    expect(server.bytes_written) < 12 * 1024 * 1024  # what the kernel's buffers took, not the 20 MB


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_no_redirect_is_followed(status):
    with HostileServer(plain(200)) as target, HostileServer(redirect(status, target.endpoint + "/\x1b[31mx")) as server:
        with pytest.raises(Retryable) as raised:
            post(HttpSession(headers={"x-api-key": "k"}), server.endpoint + "/x", data=b"body", deadline=5)
    expect(raised.value.status) == status
    expect(raised.value.alarm) == True
    expect(raised.value.reason).contains(f"answered {status}, a redirect to '{target.endpoint}/\\x1b[31mx'")
    expect(target.requests) == []


def test_a_kept_alive_connection_is_reused_and_a_closed_one_replaced():
    with HostileServer(plain(204)) as server:
        session = HttpSession()
        for _ in range(3):
            expect(post(session, server.endpoint + "/x", data=b"a", deadline=5).status) == 204
        session.close()
        expect(post(session, server.endpoint + "/x", data=b"a", deadline=5).status) == 204
    expect(len(server.requests)) == 4


def test_credentials_in_the_url_are_sent_as_basic_auth():
    with HostileServer(plain(204)) as server:
        answer = post(HttpSession(), f"http://u%40x:p@127.0.0.1:{server.port}/w", data=b"", deadline=5)
    expect(isinstance(answer, Answer)) == True
    expect(server.requests[0]["headers"]["authorization"]) == "Basic dUB4OnA="


@pytest.mark.parametrize("make", ["influxdb", "librato", "remote-write"])
def test_every_http_destination_refuses_redirects(make):
    with HostileServer(plain(204)) as target, HostileServer(redirect(307, target.endpoint + "/elsewhere")) as server:
        if make == "influxdb":
            destination = InfluxDBDestination(server.endpoint, database="db", token="s3cr3t")
        elif make == "librato":
            destination = Librato("a@b.c", "s3cr3t-token", api_url=server.endpoint)
        else:
            from zibrato.backends.remote_write import RemoteWriteDestination

            destination = RemoteWriteDestination(server.endpoint + "/api/v1/write")
        destination.connect()
        with pytest.raises(Retryable, match="answered 307, a redirect to") as raised:
            destination.post(one_interval())
        destination.close()
    expect(raised.value.reason).contains(target.endpoint + "/elsewhere")
    expect(target.requests) == []


def test_an_otlp_destination_does_not_trust_a_negative_partial_success():
    bad = ExportMetricsServiceResponse()
    bad.partial_success.rejected_data_points = -40
    with HostileServer(plain(200, bad.SerializeToString())) as server:
        destination = OtlpDestination(server.endpoint + "/v1/metrics")
        destination.connect()
        destination.post(one_interval())
        destination.close()
    f = destination.figures()
    expect((f["points_sent"], f["points_rejected"], f["malformed_answers"])) == (1, 0, 1)


# --- the real zibrato-otlp -----------------------------------------------------------


class HostilePipeline(WorkerPipeline):
    script = "zibrato-otlp"
    ready_log = "otlp worker"

    def __init__(self, tmp_path: Path, server: HostileServer, *args, **kwargs) -> None:
        super().__init__(tmp_path, "--endpoint", server.endpoint, "--stop-timeout", "1", *args, **kwargs)


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda server, *args, **kwargs: HostilePipeline(tmp_path, server, *args, **kwargs))


def test_the_worker_times_out_a_dripping_server(pipeline):
    with HostileServer(drip(every=0.5)) as server:
        p = pipeline(server, "--timeout", "1", "--retry-delay", "0.1", "--max-retry-delay", "0.2", flush=0.5)
        wait_until(lambda: p.status()["failed_attempts"] >= 2, timeout=20, message="timed-out attempts")
        status = p.status()
        p.close()
    # no point counted sent (an interval that closed before the first measurement arrived, as on a
    # loaded machine, is "delivered" with no point and no request: not the dripping server's doing)
    expect(status["points_sent"]) == 0
    expect(status["last_error"]).contains("within 1 s")
    expect(status["healthy"]) == False


def test_a_post_that_never_ends_makes_the_worker_unhealthy(pipeline):
    """--timeout 60 against a drip: no attempt has failed yet, but nothing is delivered while trying."""
    with HostileServer(drip(every=0.5)) as server:
        p = pipeline(server, "--timeout", "60", flush=0.5)
        wait_until(lambda: not p.status()["healthy"], timeout=20, message="unhealthy")
        status = p.status()
        p.close()
    # no attempt failed and no point got through (an empty interval that closed before the first
    # measurement arrived, as on a loaded machine, is "delivered" without a request: not the drip's doing)
    expect((status["failed_attempts"], status["points_sent"])) == (0, 0)
    expect(status["in_flight_seconds"]) > 5
    expect(" ".join(status["problems"])).contains("otlp delivery stalled: nothing delivered for")


@pytest.mark.parametrize("status", [307, 302])
def test_the_worker_sends_nothing_to_a_redirect_target_and_counts_nothing_delivered(pipeline, tmp_path, status):
    headers = tmp_path / "headers"
    headers.write_text(API_KEY + "\n")
    with HostileServer(plain(200)) as target:
        location = target.endpoint + "/v1/metrics"
        with HostileServer(redirect(status, location)) as server:
            p = pipeline(
                server, "--headers-file", headers, "--retry-delay", "0.1", "--max-retry-delay", "0.2", flush=0.5
            )
            wait_until(lambda: p.status()["failed_attempts"] >= 3, timeout=20, message="refused redirects")
            figures = p.status()
            p.close()
        expect(target.requests) == []
    expect(server.requests[0]["headers"]["x-api-key"]) == "s3cr3t-redirect-key"
    # nothing counted sent (an interval that closed before the first measurement arrived, as on
    # a loaded machine, is "delivered" with no point and no request: that is not a redirect's doing)
    expect(figures["points_sent"]) == 0
    expect(figures["last_error"]).contains(f"answered {status}, a redirect to '{location}'")
    expect(p.worker.stderr).contains(f"a redirect to '{location}'")
    expect(p.worker.stderr).does_not_contain("s3cr3t")


def test_the_worker_reads_a_100_mb_answer_only_up_to_the_cap(pipeline):
    with HostileServer(huge()) as server:
        p = pipeline(server, flush=0.5)
        wait_until(lambda: p.status()["delivered_intervals"] >= 2, timeout=20, message="intervals delivered")
        status = p.status()
        peak = _peak_rss_mb(p.worker.process.pid)
        p.close()
    expect(server.bytes_written) < 30 * 1024 * 1024 * status["delivered_intervals"]
    expect(server.bytes_written) < 100 * 1024 * 1024
    expect(status["malformed_answers"]) >= 1
    expect(peak) < 200  # reading 100 MB whole took 241 MB


def test_the_worker_counts_a_negative_partial_success_as_malformed(pipeline):
    bad = ExportMetricsServiceResponse()
    bad.partial_success.rejected_data_points = -40
    bad.partial_success.error_message = "negative\nforged line"
    with HostileServer(plain(200, bad.SerializeToString())) as server:
        p = pipeline(server, flush=0.5)
        p.client.count("info", "orders", 3)
        wait_until(lambda: p.status()["malformed_answers"] >= 1, timeout=20, message="a malformed answer")
        status = p.status()
        p.close()
    expect(status["points_rejected"]) == 0
    expect(status["points_sent"]) >= 1
    expect(p.worker.stderr).contains("a negative rejected_data_points (-40)")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")
