"""zibrato-librato against a real local HTTP server that enforces Librato's API rules.

The first tests drive the destination directly (``post`` as the delivery
thread calls it, or through its real delivery queue: tests/support/rig.py);
the others run client -> zibrato-broker -> zibrato-librato -> FakeLibrato as
real processes. Every test checks that the API token never
appears in a log line.
"""

from __future__ import annotations

import logging
import signal
import statistics
import threading
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from expecter import expect

from support.daemons import wait_until
from support.fake_librato import FakeLibrato
from support.pipeline import DAY, WorkerPipeline, pipelines
from support.rig import Rig
from zibrato.aggregation import nearest_rank
from zibrato.backends.librato import Librato
from zibrato.cli.librato import command as librato_command
from zibrato.delivery import Backoff, parse_retry_after

USER, TOKEN = "ops@example.com", "tok-7f3e9a1c-do-not-log"
CREDENTIAL_ENV = ("ZIBRATO_LIBRATO_USERNAME", "ZIBRATO_LIBRATO_APITOKEN")


@pytest.fixture
def librato():
    with FakeLibrato(user=USER, token=TOKEN) as fake:
        yield fake


@pytest.fixture
def make_backend(librato, caplog):
    """Librato destinations in a Rig, short retry delays; the token must not be in any log record."""
    caplog.set_level(logging.DEBUG)  # urllib3's debug lines included
    made = []

    def make(fake=None, percentiles=(50, 90, 95, 99), backoff=None, **options):
        settings = dict(api_url=(fake or librato).url, timeout=2.0)
        settings.update(options)
        rig = Rig(
            Librato(USER, TOKEN, **settings),
            percentiles=percentiles,
            backoff=backoff or Backoff(0.01, 0.05),
            length=60.0,
        )
        rig.destination.connect()
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.stop(0.1)
        rig.destination.close()
    expect(caplog.text).does_not_contain(TOKEN)


def interval(backend, *records, time_=None):
    """Aggregate (type, name, source, tags, values) records; return (boundary, summaries)."""
    boundary = time_ or (int(time.time()) // 60) * 60
    for record in records:
        backend.aggregator.add(*record)
    return boundary, backend.aggregator.flush(boundary, 60.0)


def delivered(fake):
    return sorted((m["name"], m.get("value", m.get("count"))) for m in fake.measurements())


def in_thread(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def counters(n, prefix="c"):
    """``n`` counter records named c1 .. cn with the values 1 .. n."""
    return [("c", f"{prefix}{i}", None, (), [i]) for i in range(1, n + 1)]


def errors_logged(caplog, text):
    return [r for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage()]


def failures_reported(caplog, text):
    """Error lines reporting a failed attempt (not the give-up line that quotes the last error)."""
    return [r for r in errors_logged(caplog, text) if "retrying in" in r.getMessage()]


# --- the backend object against the fake server ------------------------------------


def test_counters_gauges_and_timers_map_to_exact_librato_gauges(librato, make_backend):
    backend = make_backend(percentiles=(50, 90, 99.9), source="web")
    timer = [i / 1000 for i in range(1, 201)]
    t, summaries = interval(
        backend,
        ("c", "signup", "api", (), list(range(1, 51))),
        ("c", "login", None, ("env:prod", "region:eu"), [1, 1, 1]),
        ("g", "queue.depth", None, (), [5, -3, 12, 7]),
        ("t", "db.query", "api", (), timer),
    )
    backend.post(t, summaries)

    [request] = librato.requests()
    expect(request["status"]) == 200
    expect(request["headers"]["Content-Type"]) == "application/json"
    body = request["body"]
    expect(sorted(body)) == ["gauges", "measure_time"]
    expect(body["measure_time"]) == t
    sent = {m["name"]: m for m in body["gauges"]}
    expect(sorted(sent)) == [
        "db.query",
        "db.query.p50",
        "db.query.p90",
        "db.query.p99_9",
        "login",
        "queue.depth",
        "signup",
    ]
    expect(sent["signup"]) == {"name": "signup", "value": 1275, "source": "api"}
    # Tags have no place in the source-based API: folded into the source, after the default.
    expect(sent["login"]) == {"name": "login", "value": 3, "source": "web.env:prod.region:eu"}
    expect(sent["queue.depth"]) == {"name": "queue.depth", "value": 7, "source": "web"}
    expect(sent["db.query"]) == {
        "name": "db.query",
        "source": "api",
        "count": 200,
        "sum": pytest.approx(sum(timer)),
        "min": 0.001,
        "max": 0.2,
        "sum_squares": pytest.approx(sum(v * v for v in timer)),
    }
    for key, pct in (("p50", 50), ("p90", 90), ("p99_9", 99.9)):
        expect(sent[f"db.query.{key}"]) == {
            "name": f"db.query.{key}",
            "source": "api",
            "value": nearest_rank(timer, pct),
        }
    expect(len(librato.measurements())) == 7
    expect(backend.figures_["measurements_sent"]) == 7


def test_tagged_api_sends_zibrato_tags_as_librato_tags(make_backend):
    with FakeLibrato(user=USER, token=TOKEN, tags_enabled=True) as fake:
        backend = make_backend(fake, api="tagged", percentiles=(99,), source="web")
        t, summaries = interval(
            backend, ("c", "login", None, ("env:prod",), [2, 3]), ("t", "db.query", "api", (), [0.1, 0.3])
        )
        backend.post(t, summaries)
        [request] = fake.requests()
        expect(request["path"]) == "/v1/measurements"
        expect(request["status"]) == 202
        body = request["body"]
        expect(body["time"]) == t
        sent = {m["name"]: m for m in body["measurements"]}
        expect(sent["login"]) == {"name": "login", "value": 5, "tags": {"env": "prod", "source": "web"}}
        expect(sent["db.query"]) == {
            "name": "db.query",
            "count": 2,
            "sum": pytest.approx(0.4),
            "min": 0.1,
            "max": 0.3,
            "stddev": pytest.approx(0.1),
            "tags": {"source": "api"},
        }
        expect(sent["db.query.p99"]) == {"name": "db.query.p99", "value": 0.3, "tags": {"source": "api"}}


def test_tag_names_and_values_are_fitted_to_librato_rules_and_each_change_logged_once(make_backend, caplog):
    with FakeLibrato(user=USER, token=TOKEN, tags_enabled=True) as fake:
        backend = make_backend(fake, api="tagged", source="web")
        long_key = "k" * 80
        tags = ("Region:EU West/1", f"{long_key}:v", "env:prod")
        for minute in (2, 1):
            backend.post(
                *interval(backend, ("c", "login", None, tags, [1]), time_=(int(time.time()) // 60 - minute) * 60)
            )
        expect({r["status"] for r in fake.requests()}) == {202}
        [body] = {str(r["body"]["measurements"][0]["tags"]) for r in fake.requests()}
        expect(body) == str({"source": "web", "region": "eu west_1", "k" * 64: "v", "env": "prod"})
    changes = [r.getMessage() for r in caplog.records if "does not fit Librato's rules" in r.getMessage()]
    expect(len(changes)) == 3  # 'Region', 'EU West/1' and the long name, once each over two intervals
    expect(" ".join(changes)).contains("tag value 'EU West/1'")
    expect(backend.figures_["names_changed"]) == 3


def test_tags_past_libratos_fifty_are_dropped_counted_and_the_measurement_kept(make_backend, caplog):
    with FakeLibrato(user=USER, token=TOKEN, tags_enabled=True) as fake:
        backend = make_backend(fake, api="tagged", source="web")
        tags = tuple(f"t{i:02}:v" for i in range(60))
        backend.post(*interval(backend, ("c", "wide", None, tags, [1])))
        [request] = fake.requests()
        expect(request["status"]) == 202
        [measurement] = fake.measurements()
        expect(len(measurement["tags"])) == 50  # the source and the first 49
    expect(backend.figures_["tags_dropped"]) == 11
    expect(caplog.text).contains("more than 50 tags")


def test_names_and_sources_are_fitted_to_librato_rules_and_each_change_logged_once(librato, make_backend, caplog):
    backend = make_backend(percentiles=(50, 99.9))
    long_name = "x" * 300
    for minute in (2, 1):
        t, summaries = interval(
            backend,
            ("c", "db query/µs", "web 1", (), [1]),
            ("t", long_name, None, (), [0.5]),
            ("g", "fine", "all", (), [3]),
            time_=(int(time.time()) // 60 - minute) * 60,
        )
        backend.post(t, summaries)

    base = "x" * (255 - len(".p99_9"))  # room kept for the longest percentile suffix
    names = [(m["name"], m.get("source")) for m in librato.measurements()]
    expect(sorted(set(names))) == sorted(
        {("db_query__s", "web_1"), (base, None), (base + ".p50", None), (base + ".p99_9", None), ("fine", "all_")}
    )
    expect(len(names)) == 10  # all accepted by the server's checks, twice
    changes = [r.getMessage() for r in caplog.records if "does not fit Librato's rules" in r.getMessage()]
    expect(len(changes)) == 4  # 'db query/µs', 'web 1', the long name, the reserved source 'all'
    expect(" ".join(changes)).contains("name 'db query/µs'")
    expect(" ".join(changes)).contains("'all' is reserved")
    expect(backend.figures_["names_changed"]) == 4


def test_batches_never_exceed_the_batch_size(make_backend):
    with FakeLibrato(user=USER, token=TOKEN, max_batch=2) as strict:
        backend = make_backend(strict, batch_size=2, percentiles=(50, 99))
        # 5 series, 7 measurements: the timer is a summary gauge plus two percentiles.
        t, summaries = interval(
            backend, *[("c", f"c{i}", None, (), [i]) for i in range(1, 5)], ("t", "t", None, (), [1, 2, 3])
        )
        backend.post(t, summaries)
        requests = strict.requests()
        expect([r["status"] for r in requests]) == [200] * 4
        expect([len(r["body"]["gauges"]) for r in requests]) == [2, 2, 2, 1]
        expect(delivered(strict)) == [("c1", 1), ("c2", 2), ("c3", 3), ("c4", 4), ("t", 3), ("t.p50", 2), ("t.p99", 3)]


def test_server_errors_and_429_are_retried_and_everything_arrives_exactly_once(librato, make_backend):
    backend = make_backend(batch_size=2)
    librato.fail_next(2, 500)
    librato.fail_next(1, 429)
    t, summaries = interval(backend, *[("c", f"c{i}", None, (), [i]) for i in range(1, 6)])
    backend.send(t, summaries)
    expect([r["status"] for r in librato.requests()]) == [500, 500, 429, 200, 200, 200]
    expect(delivered(librato)) == [(f"c{i}", i) for i in range(1, 6)]
    expect(backend.figures_["retries"]) == 3
    expect(backend.figures_["measurements_sent"]) == 5


def test_a_timeout_is_retried(librato, make_backend):
    backend = make_backend(timeout=0.3)
    librato.delay_next(1, 5)  # the server sits on the first request for 5 s
    t, summaries = interval(backend, ("c", "slow", None, (), [4]))
    started = time.monotonic()
    backend.send(t, summaries)
    expect(time.monotonic() - started) < 3
    expect(delivered(librato)) == [("slow", 4)]
    expect(backend.figures_["last_error_status"]) == "timeout"


def test_one_rejected_measurement_costs_only_itself(librato, make_backend, caplog):
    backend = make_backend(percentiles=(90,), batch_size=3)
    librato.reject_name("mid.bad")
    # Sorted by type and name, the bad one is last in the third of four batches.
    records = [("c", f"good.{i}", None, (), [i]) for i in range(1, 9)]
    t, summaries = interval(
        backend, *records, ("c", "mid.bad", None, (), [99]), ("t", "good.timer", None, (), [0.2, 0.4])
    )
    backend.post(t, summaries)
    expect(delivered(librato)) == sorted(
        [(f"good.{i}", i) for i in range(1, 9)] + [("good.timer", 2), ("good.timer.p90", 0.4)]
    )
    # Two batches accepted, then the third split until 'mid.bad' is alone, then the fourth.
    expect([r["status"] for r in librato.requests()]) == [200, 200, 400, 200, 400, 200, 400, 200]
    expect(backend.figures_["measurements_rejected"]) == 1
    expect(caplog.text).contains("dropped measurement mid.bad")
    expect(caplog.text).contains("measurements named 'mid.bad' are rejected")  # Librato's error body


def test_422_is_a_measurement_rejection_and_is_bisected(librato, make_backend):
    backend = make_backend()
    librato.fail_next(1, 422, body={"errors": {"params": {"value": ["is invalid"]}}})
    backend.post(*interval(backend, *counters(4)))
    expect([(r["status"], len(r["body"]["gauges"])) for r in librato.requests()]) == [(422, 4), (200, 2), (200, 2)]
    expect(delivered(librato)) == [(f"c{i}", i) for i in range(1, 5)]


def test_a_batch_rejected_throughout_costs_at_most_2n_minus_1_requests(librato, make_backend):
    backend = make_backend()
    for i in range(1, 9):
        librato.reject_name(f"c{i}")
    backend.post(*interval(backend, *counters(8)))
    expect(len(librato.requests())) == 2 * 8 - 1  # every node of the binary tree, once
    expect(backend.figures_["measurements_rejected"]) == 8
    expect(librato.measurements()) == []


@pytest.mark.parametrize("status", [405, 413, 415])
def test_a_4xx_about_the_request_itself_is_retried_whole_not_bisected(librato, make_backend, caplog, status):
    backend = make_backend()
    librato.fail_next(3, status)
    backend.send(*interval(backend, *counters(20)))
    expect([(r["status"], len(r["body"]["gauges"])) for r in librato.requests()]) == [
        (status, 20),
        (status, 20),
        (status, 20),
        (200, 20),
    ]
    expect(delivered(librato)) == sorted((f"c{i}", i) for i in range(1, 21))
    expect(backend.figures_["measurements_rejected"]) == 0
    [logged] = failures_reported(caplog, "a rejection of the request itself")  # once, not per attempt
    expect(logged.getMessage()).contains(f"answered {status}")
    expect(logged.getMessage()).contains("FakeLibrato failure injection")  # Librato's body


def test_a_wrong_api_url_keeps_the_interval_instead_of_dropping_it(librato, make_backend, caplog):
    backend = make_backend(api_url=librato.url + "/librato", backoff=Backoff(0.05, 0.1))  # 404
    backend.deliver(*interval(backend, *counters(20)))
    wait_until(lambda: backend.figures_["posts_failed"] >= 3, message="three failed posts")
    backend.stop(0.3)
    requests = librato.requests()
    expect({(r["status"], len(r["body"]["gauges"])) for r in requests}) == {(404, 20)}
    expect(backend.figures_["measurements_rejected"]) == 0
    expect(backend.figures_["measurements_lost"]) == 20  # given up at stop, and said so
    expect(len(requests)) < 10  # so every failure after the first is logged only at debug level
    [logged] = failures_reported(caplog, "a rejection of the request itself")
    expect(logged.getMessage()).contains("answered 404")
    expect(logged.getMessage()).contains("check --api-url")
    expect(logged.getMessage()).contains("Not Found: POST /librato/v1/metrics")


def test_series_that_meet_in_one_librato_series_are_sent_once_and_counted(librato, make_backend, caplog):
    backend = make_backend(percentiles=(95,))
    for minute in (2, 1):
        backend.post(
            *interval(
                backend,
                ("t", "x", "api", (), [0.1]),
                ("g", "x.p95", "api", (), [7]),
                ("c", "a b", None, (), [1]),
                ("c", "a_b", None, (), [2]),
                time_=(int(time.time()) // 60 - minute) * 60,
            )
        )
    for request in librato.requests():
        sent = [(m["name"], m.get("source"), m.get("value")) for m in request["body"]["gauges"]]
        expect(sorted(sent)) == [("a_b", None, 1), ("x", "api", None), ("x.p95", "api", 7)]
    expect(backend.figures_["measurements_duplicate"]) == 4
    expect(librato.overwrites()) == 0
    warnings = [r.getMessage() for r in caplog.records if "only the first is sent" in r.getMessage()]
    expect(len(warnings)) == 2  # once per name, not per interval
    expect(" ".join(warnings)).contains("measurement x.p95 (api)")


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_waited_for_even_beyond_the_backoff_cap(librato, make_backend, status):
    backend = make_backend()  # backoff capped at 0.05 s
    librato.fail_next(1, status, headers={"Retry-After": "1"})
    backend.send(*interval(backend, ("c", "patient", None, (), [1])))
    first, retry = librato.requests()
    expect((first["status"], retry["status"])) == (status, 200)
    expect(retry["received"] - first["received"]) >= 1.0


def test_a_retry_after_past_the_stop_deadline_is_honoured_and_the_loss_counted(librato, make_backend):
    """The real failure of issue 12: a 503 with Retry-After: 120, then TERM. No storm, no retry."""
    backend = make_backend()
    librato.fail_next(100, 503, headers={"Retry-After": "120"})
    backend.deliver(*interval(backend, ("c", "kept", None, (), [1])))
    wait_until(lambda: backend.figures_["posts_failed"] == 1, message="the 503")
    expect(backend.stop(window=1.0)) < 1.0
    expect(len(librato.requests())) == 1  # Librato said 120 s: nothing more before the deadline
    expect(backend.figures_["measurements_lost"]) == 1
    expect(backend.queue.counts["cut_off_intervals"]) == 1


def test_retry_after_is_read_as_seconds_or_an_http_date_and_capped():
    now = 1_700_000_000.0
    expect(parse_retry_after("7")) == 7
    expect(parse_retry_after(formatdate(now + 30, usegmt=True), now=now)) == 30
    expect(parse_retry_after("Tue, 14 Nov 2023 22:13:50 -0000", now=now)) == 30
    expect(parse_retry_after(formatdate(now - 30, usegmt=True), now=now)) == 0
    for unreadable in (None, "", "soon"):
        expect(parse_retry_after(unreadable)) == None
    expect(Backoff(0.01, 0.05).delay(1, retry_after=1000)) == 300  # max(max_retry_delay, 300)
    expect(Backoff(1, 600).delay(1, retry_after=1000)) == 600


def test_a_post_still_running_when_the_stop_window_ends_counts_what_is_cut_off(librato, make_backend, caplog):
    backend = make_backend(timeout=5.0, percentiles=(50, 99))
    librato.delay_next(1, 30)  # the first request is never answered in time
    backend.deliver(*interval(backend, *counters(3), time_=(int(time.time()) // 60 - 1) * 60))
    wait_until(lambda: backend.figures_["posts"] == 1, message="the first request in flight")
    backend.deliver(*interval(backend, ("t", "t", None, (), [0.1, 0.2])))
    backend.queue.stop(time.monotonic() + 0.3)
    backend.thread.join(0.5)
    expect(backend.thread.is_alive()) == True  # cut off inside the request
    backend.queue.abandon()  # what the worker does when its stop window is over
    expect(backend.queue.counts["cut_off_intervals"]) == 2
    expect(backend.queue.counts["cut_off_series"]) == 3 + 1
    expect(errors_logged(caplog, "the stop window ended with a post still running")) != []
    librato.stop()  # the request fails now: nothing is counted twice
    backend.thread.join(5)
    expect(backend.thread.is_alive()) == False
    expect(backend.queue.counts["cut_off_series"]) == 4


def test_the_default_timeout_fits_inside_the_stop_window():
    defaults = {p.name: p.default for p in librato_command.params}
    expect(defaults["timeout"]) == 5.0
    expect(defaults["timeout"]) < defaults["stop_timeout"]


def test_refused_credentials_are_reported_clearly_and_the_interval_kept(librato, make_backend, caplog):
    librato.token = "rotated-token"  # the account's token changed: every post gets 401
    backend = make_backend()
    t, summaries = interval(backend, ("c", "kept", None, (), [5]))
    backend.deliver(t, summaries)
    wait_until(lambda: "refused the credentials (401)" in caplog.text, message="a credentials message")
    expect(caplog.text).contains("ZIBRATO_LIBRATO_APITOKEN")
    expect(backend.figures()["healthy"]) == False
    librato.token = TOKEN  # credentials fixed: the kept interval goes through
    wait_until(lambda: backend.queue.counts["delivered_intervals"] == 1, message="delivery")
    expect(delivered(librato)) == [("kept", 5)]
    expect(backend.figures()["healthy"]) == True


def test_stopping_interrupts_the_backoff_and_gives_up_by_the_deadline(librato, make_backend, caplog):
    backend = make_backend(backoff=Backoff(30, 60))
    librato.fail_until_cleared(503)
    t, summaries = interval(backend, ("c", "a", None, (), [1]), ("c", "b", None, (), [2]))
    backend.deliver(t, summaries)
    wait_until(lambda: backend.figures_["posts_failed"] == 1, message="the first failure")
    expect(backend.stop()) < 1.5
    expect(backend.figures_["posts_failed"]) == 2  # one final attempt after the stop signal
    expect(backend.figures_["measurements_lost"]) == 2
    expect(caplog.text).contains("stop deadline reached")


# --- end to end: client -> zibrato-broker -> zibrato-librato -> FakeLibrato ----------


class LibratoPipeline(WorkerPipeline):
    """A broker and a zibrato-librato worker (fast retries) posting to the fake Librato."""

    script, ready_log = "zibrato-librato", "librato worker"

    def __init__(self, tmp_path, fake, *worker_args, flush=DAY, env=None):
        env = {USER_ENV: USER, TOKEN_ENV: TOKEN} if env is None else env
        super().__init__(
            tmp_path,
            "--api-url",
            fake.url,
            "--retry-delay",
            "0.05",
            "--max-retry-delay",
            "0.2",
            *worker_args,
            flush=flush,
            env={USER_ENV: "", TOKEN_ENV: "", **env},
        )
        self.fake = fake

    def start(self):
        super().start()
        # What `ps` shows: the token must not be there, whichever way it was given.
        cmdline = Path(f"/proc/{self.worker.process.pid}/cmdline").read_bytes()
        expect(cmdline).does_not_contain(TOKEN.encode())
        return self

    def received(self):
        """What Librato accepted, warm-up traffic left out."""
        return [m for m in self.fake.measurements() if m["name"] != "warmup"]

    def close(self):
        super().close()
        expect(self.worker.stderr).does_not_contain(TOKEN)


USER_ENV, TOKEN_ENV = CREDENTIAL_ENV


@pytest.fixture
def pipeline(tmp_path, librato):
    yield from pipelines(lambda *args, **kwargs: LibratoPipeline(tmp_path, librato, *args, **kwargs))


def test_exact_values_reach_librato_and_the_stop_signal_delivers_the_final_flush(pipeline):
    signum = signal.SIGQUIT  # supervisord's stopsignal; every stop signal is one handler (test_worker)
    p = pipeline("--percentiles", "50,90,99.9")
    timer = [i / 1000 for i in range(1, 201)]
    for v in timer:
        p.client.timing("info", "db.query", v, source="api")
    for i in range(1, 51):
        p.client.count("info", "signup", i)
    for g in (5, -3, 12, 7):
        p.client.gauge("info", "queue.depth", g)
    p.wait_measurements(200 + 50 + 4)
    expect(p.received()) == []  # nothing before the stop signal: the flush interval is a day
    stopped_at = time.time()
    p.stop_worker(signum)

    got = {m["name"]: m for m in p.received()}
    expect(sorted(got)) == ["db.query", "db.query.p50", "db.query.p90", "db.query.p99_9", "queue.depth", "signup"]
    expect(abs(got["signup"]["measure_time"] - stopped_at)) < 5
    expect((got["signup"]["value"], got["queue.depth"]["value"])) == (1275, 7)
    summary = got["db.query"]
    expect((summary["source"], summary["count"], summary["min"], summary["max"])) == ("api", 200, 0.001, 0.2)
    expect(summary["sum"]) == pytest.approx(sum(timer))
    expect(summary["sum_squares"]) == pytest.approx(sum(v * v for v in timer))
    expect(summary["sum"] / summary["count"]) == pytest.approx(statistics.fmean(timer))
    for key, pct in (("p50", 50), ("p90", 90), ("p99_9", 99.9)):
        expect(got[f"db.query.{key}"]["value"]) == nearest_rank(timer, pct)


def test_an_outage_spanning_several_flushes_loses_nothing(pipeline, librato):
    p = pipeline(flush=1)  # the shortest interval Librato's whole-second measure_time keeps apart
    librato.fail_until_cleared(503)
    sent = 0
    for i in range(1, 5):  # four values, each in its own flush interval
        flushes = p.status()["flushes"]
        p.client.count("info", "orders", i)
        p.client.timing("info", "checkout", i / 100)
        p.client.flush()
        sent += i
        wait_until(lambda: p.status()["flushes"] > flushes, message="the next flush")
    status = p.status()
    expect(status["healthy"]) == False
    expect(" ".join(status["problems"])).contains("librato delivery failing")
    expect(status["backlog"]) >= 3
    expect(p.received()) == []

    librato.clear_failures()

    def orders():
        return sum(m["value"] for m in p.received() if m["name"] == "orders")

    wait_until(lambda: orders() == sent and p.status()["backlog"] == 0, message="the backlog delivered")
    p.stop_worker()
    expect(orders()) == sent  # nothing lost, nothing twice
    expect(librato.overwrites()) == 0  # every interval had a measure_time of its own
    expect(sum(m["count"] for m in p.received() if m["name"] == "checkout")) == 4
    expect(p.worker.stderr).contains("recovered after")


def test_a_stop_during_a_503_with_retry_after_sends_nothing_more_and_exits_inside_the_budget(pipeline, librato):
    """Issue 12's storm (175 POSTs after TERM) against the real worker process: now none."""
    librato.fail_next(1000, 503, headers={"Retry-After": "120"})
    p = pipeline("--stop-timeout", "3")
    p.client.count("info", "orders", 5)
    p.wait_measurements(1)
    before = len(librato.requests())
    started = time.monotonic()
    p.stop_worker()  # the final flush meets the 503: one attempt, then Retry-After is honoured
    expect(time.monotonic() - started) < 3 + 1.5
    expect(len(librato.requests()) - before) <= 1
    expect(p.worker.stderr).contains("stop deadline reached")
    expect(p.received()) == []


def test_a_bad_name_costs_only_itself(pipeline, librato):
    librato.reject_name("bad.name")
    p = pipeline()
    for name, value in (("good.a", 1), ("bad.name", 2), ("good.b", 3)):
        p.client.count("info", name, value)
    p.client.timing("info", "good.t", 0.25)
    p.wait_measurements(4)
    p.stop_worker()
    expect(sorted((m["name"], m.get("value", m.get("count"))) for m in p.received())) == [
        ("good.a", 1),
        ("good.b", 3),
        ("good.t", 1),
        ("good.t.p50", 0.25),
        ("good.t.p90", 0.25),
        ("good.t.p95", 0.25),
        ("good.t.p99", 0.25),
    ]
    expect(p.worker.stderr).contains("dropped measurement bad.name")
    expect(p.worker.stderr).contains("measurements named 'bad.name' are rejected")


def test_the_token_can_come_from_a_file(pipeline, tmp_path):
    token_file = tmp_path / "librato-token"
    token_file.write_text(f"\n  {TOKEN}  \n")
    p = pipeline("--apitoken-file", token_file, env={USER_ENV: USER})
    p.client.count("info", "from.file", 3)
    p.wait_measurements(1)
    p.stop_worker()
    expect([(m["name"], m["value"]) for m in p.received()]) == [("from.file", 3)]


def test_missing_credentials_are_a_usage_error_naming_every_way_to_give_them(tmp_path):
    from click.testing import CliRunner

    def run(*args, **env):
        bare = {USER_ENV: "", TOKEN_ENV: "", **env}
        return CliRunner().invoke(
            librato_command,
            [str(a) for a in args],
            env=bare,
            prog_name="zibrato-librato",
            auto_envvar_prefix="ZIBRATO_LIBRATO",
        )

    result = run("--username", USER)
    expect(result.exit_code) == 2
    for way in ("--apitoken-file", TOKEN_ENV, "--apitoken"):
        expect(result.output).contains(way)
    result = run(**{TOKEN_ENV: TOKEN})
    expect(result.exit_code) == 2
    expect(result.output).contains(USER_ENV)
    expect(result.output).does_not_contain(TOKEN)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = run("--apitoken-file", empty, **{USER_ENV: USER})
    expect((result.exit_code, "is empty" in result.output)) == (2, True)
    expect(run("--help").output).contains(TOKEN_ENV)
