"""Histograms, sets, sample weights, units and expiry end to end (protocol 1.1).

Real processes: zibrato-broker and a worker (console, statsd with the real
Etsy statsd, librato with the local fake Librato). The records are made with
``zibrato.protocol.encode``, as a 1.1 client sends them, and pushed to the
broker; the warm-up goes through the real client.
"""

from __future__ import annotations

import math
import re
import shutil
import time

import pytest
import zmq
from expecter import expect

from support.daemons import wait_until
from support.etsy_statsd import EtsyStatsd
from support.fake_librato import FakeLibrato
from support.pipeline import WorkerPipeline, pipelines
from zibrato import protocol
from zibrato.backends.statsd import StatsdMapping
from zibrato.sketch import SetSketch, Sketch

USER, TOKEN = "dev@example.com", "token-for-the-new-kinds-0123456789"

# One message of protocol 1.1 records: what `z.histogram`, `z.set` and `rate=` will send.
RECORDS = [
    ("h", "response.size", [5120, 880, 100], "api", [], None, "bytes"),
    ("h", "response.size", [7], "api", [], None, "kB"),  # another unit: another series
    ("s", "users.active", ["u-17", "u-42", 99, "u-17"], None, []),
    ("s", "users.active", ["u-42", "u-7"], None, [], 10),  # sets ignore weights
    ("c", "cache.miss", [1, 1], None, [], 10),  # rate 0.1: each counts 10
    ("t", "db.query", [0.25, 0.5], None, [], 4),  # rate 0.25: each value is 4 observations
    ("g", "queue.depth", [3], None, [], 100),  # gauges ignore weights
]
MEASUREMENTS = sum(len(r[2]) for r in RECORDS)


class Pusher:
    """A PUSH socket to the broker, sending frames made by protocol.encode."""

    def __init__(self, port: int) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUSH)
        self.socket.linger = 1000
        self.socket.connect(f"tcp://127.0.0.1:{port}")

    def send(self, records, level="info") -> None:
        self.socket.send(protocol.encode(level, time.time(), records))

    def close(self) -> None:
        self.socket.close()
        self.context.term()


class Console(WorkerPipeline):
    def __init__(self, tmp_path, *worker_args, **kwargs):
        super().__init__(tmp_path, "--format", "json", "--sketch", *worker_args, **kwargs)
        self.pusher = Pusher(self.base)

    def summaries(self):
        return [s for s in self.worker.json_lines() if s["name"] != "warmup"]

    def close(self):
        self.pusher.close()
        super().close()


@pytest.fixture
def console(tmp_path):
    yield from pipelines(lambda *args, **kwargs: Console(tmp_path, *args, **kwargs))


def test_console_json_shows_histograms_sets_weights_and_their_sketches(console):
    p = console()
    p.pusher.send(RECORDS)
    p.wait_measurements(MEASUREMENTS)
    p.stop_worker()
    out = {(s["name"], s.get("unit")): s for s in p.summaries()}

    size = out[("response.size", "bytes")]
    expect((size["type"], size["count"], size["min"], size["max"], size["exact"])) == ("histogram", 3, 100, 5120, True)
    expect((size["p50"], size["median"])) == (880, 880)
    expect(Sketch.from_dict(size["sketch"]).count) == 3
    expect(out[("response.size", "kB")]["count"]) == 1

    users = out[("users.active", None)]
    expect((users["type"], users["value"], users["exact"])) == ("set", 4, True)
    expect(SetSketch.from_dict(users["sketch"]).count) == 4

    miss = out[("cache.miss", None)]
    expect((miss["value"], miss["count"])) == (20.0, 20)

    query = out[("db.query", None)]
    expect((query["count"], query["sum"], query["exact"])) == (8, 3.0, False)
    expect(query["sketch"]["count"]) == 8
    assert abs(query["p50"] - 0.25) <= query["relative_error"] * 0.25

    depth = out[("queue.depth", None)]
    expect((depth["value"], depth["count"])) == (3, 1)


def test_console_keeps_reporting_an_idle_series_until_it_expires(console):
    p = console("--expire", "1.0", flush=0.2)
    p.pusher.send([("c", "idle.counter", [5], None, []), ("g", "idle.gauge", [7], None, [])])
    data = wait_until(
        lambda: [s for s in p.summaries() if s["name"] == "idle.counter" and s["count"]],
        message="the interval with data",
    )[0]
    zeros = wait_until(
        lambda: [s for s in p.summaries() if s["name"] == "idle.counter" and not s["count"]],
        message="an idle interval reported",
    )
    expect((zeros[0]["value"], zeros[0]["rate"])) == (0.0, 0.0)
    # let flushes run well past the expiry, then nothing idle is reported beyond it
    flushes = p.status()["flushes"]
    wait_until(lambda: p.status()["flushes"] >= flushes + 10, message="ten more flushes")
    counters = [s for s in p.summaries() if s["name"] == "idle.counter" and not s["count"]]
    gauges = [s for s in p.summaries() if s["name"] == "idle.gauge" and not s["count"]]
    expect(all(s["time"] - data["time"] <= 1.0 + 1e-6 for s in counters + gauges)) == True
    expect(len(counters) >= 3) == True  # 1 s of 0.2 s flushes after the data
    expect({s["value"] for s in gauges}) == {7}  # a gauge keeps its last value


def test_no_destination_gets_a_non_finite_number_and_the_worker_counts_it(console):
    p = console()
    p.pusher.send([("c", "overflow", [1e308, 1e308], None, []), ("c", "fine", [1], None, [])])
    p.wait_measurements(3)
    p.stop_worker()
    expect([s["name"] for s in p.summaries()]) == ["fine"]
    expect(p.worker.stderr).contains("overflow")
    expect(p.worker.stderr).contains("non-finite")


# --- statsd --------------------------------------------------------------------------------

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="Etsy statsd needs Node.js")


class Statsd(Console):
    script, ready_log = "zibrato-statsd", "statsd worker"

    def __init__(self, tmp_path, *worker_args, **kwargs):
        WorkerPipeline.__init__(self, tmp_path, "--levels", "info", *worker_args, **kwargs)
        self.pusher = Pusher(self.base)
        self.statsd = EtsyStatsd(tmp_path, flush_interval_ms=60_000, protocol="udp")

    def worker_command(self):
        return ["--statsd-port", self.statsd.port, *self.worker_args]

    def start(self):
        self.statsd.start()
        return super().start()

    def close(self):
        super().close()
        self.statsd.stop()


@pytest.fixture
def statsd(tmp_path):
    yield from pipelines(lambda *args, **kwargs: Statsd(tmp_path, *args, **kwargs))


@needs_node
@pytest.mark.parametrize("sets", ["count", "members"])
def test_statsd_gets_histograms_as_timers_sets_and_sample_rates(statsd, sets):
    p = statsd("--sets", sets)
    p.pusher.send(RECORDS)
    p.wait_measurements(MEASUREMENTS)
    p.stop_worker()
    # 4 histogram values, the set (1 gauge or 4 members), the counter, 2 timer values, the gauge, warm-up
    lines = 4 + (1 if sets == "count" else 4) + 1 + 2 + 1 + 1
    wait_until(lambda: admin_counter(p.statsd, "statsd.metrics_received") >= lines, message="the lines at statsd")
    p.statsd.stop()
    totals = p.statsd.totals()
    flush = [f for f in p.statsd.flushes() if f["timers"] or f["counters"]][-1]
    expect(flush["statsd"]["bad_lines_seen"]) == 0
    # the two units of response.size meet in one statsd name: statsd has no units
    expect(sorted(flush["timers"]["api.response.size"])) == [7, 100, 880, 5120]
    expect(flush["timer_counters"]["db.query"]) == pytest.approx(8)  # |@0.25 scales 2 lines to 8
    expect(totals.counters["cache.miss"]) == 20
    expect(flush["gauges"]["queue.depth"]) == 3
    if sets == "count":
        expect(flush["gauges"]["users.active"]) == 4
    else:
        expect(totals.sets["users.active"]) == {"u-17", "u-42", "u-7", "99"}


def admin_counter(statsd, name):
    match = re.search(rf"'?{re.escape(name)}'?: (\d+)", statsd.admin("counters"))
    return int(match.group(1)) if match else 0


def test_statsd_dogstatsd_histograms_and_member_lines_are_well_formed():
    mapping = StatsdMapping(histograms="dogstatsd", sets="members")
    summaries = [
        {
            "type": "histogram",
            "name": "size",
            "source": None,
            "tags": [],
            "unit": "bytes",
            "count": 3,
            "values": [-2.5, 0, 1e6],
        },
        {
            "type": "set",
            "name": "users",
            "source": None,
            "tags": [],
            "value": 3,
            "exact": True,
            "sketch": {"exact": True, "count": 3, "members": [7, "a b", "x:y|z"]},
        },
        {
            "type": "set",
            "name": "many",
            "source": None,
            "tags": [],
            "value": 5000,
            "exact": False,
            "sketch": {"exact": False, "count": 5000, "precision": 14, "registers": ""},
        },
        {
            "type": "timer",
            "name": "idle",
            "source": None,
            "tags": [],
            "count": 0,
            "sum": 0.0,
            "sum_squares": 0.0,
            "exact": True,
        },
    ]
    expect(mapping.lines(summaries)) == [
        b"size:-2.5|h",
        b"size:0|h",
        b"size:1000000|h",
        b"users:7|s",
        b"users:a_b|s",
        b"users:x_y_z|s",
        b"many:5000|g",
    ]


# --- librato -------------------------------------------------------------------------------


class LibratoConsole(Console):
    script, ready_log = "zibrato-librato", "librato worker"

    def __init__(self, tmp_path, fake, *worker_args, **kwargs):
        WorkerPipeline.__init__(
            self,
            tmp_path,
            "--api-url",
            fake.url,
            "--retry-delay",
            "0.05",
            *worker_args,
            env={"ZIBRATO_LIBRATO_USERNAME": USER, "ZIBRATO_LIBRATO_APITOKEN": TOKEN},
            **kwargs,
        )
        self.pusher = Pusher(self.base)
        self.fake = fake


@pytest.fixture
def librato(tmp_path):
    with FakeLibrato(user=USER, token=TOKEN) as fake:
        yield from pipelines(lambda *args, **kwargs: LibratoConsole(tmp_path, fake, *args, **kwargs))


def test_librato_gets_histogram_summaries_set_counts_and_weighted_counts(librato):
    p = librato("--percentiles", "50,99")
    p.pusher.send([r for r in RECORDS if r[-1] != "kB"])  # Librato keeps one series per name
    p.wait_measurements(MEASUREMENTS - 1)
    p.stop_worker()
    got = {m["name"]: m for m in p.fake.measurements() if m["name"] != "warmup"}
    size = got["response.size"]
    expect((size["count"], size["sum"], size["min"], size["max"])) == (3, 6100, 100, 5120)
    expect(got["response.size.p50"]["value"]) == 880
    expect(got["users.active"]["value"]) == 4
    expect(got["cache.miss"]["value"]) == 20
    query = got["db.query"]
    expect((query["count"], query["sum"])) == (8, 3.0)
    assert math.isclose(got["db.query.p99"]["value"], 0.5, rel_tol=0.006)


def test_a_worker_refuses_what_the_client_would_refuse_and_keeps_going(console):
    """Issue 11, item 11: names, sources, tags and levels by the client's rules, in the decoder."""
    p = console()
    before = p.status()["malformed"]
    bad = [
        ("info", [("c", "forged\nERROR line", [1], None, [])]),
        ("info", [("c", "n" * 100_000, [1], None, [])]),
        ("info", [("c", "ok.name", [1], "web\x001", [])]),
        ("info", [("c", "ok.name", [1], None, ["k:\x1b[31m"])]),
        ("", [("c", "ok.name", [1], None, [])]),
        ("in fo", [("c", "ok.name", [1], None, [])]),
    ]
    for level, records in bad:
        p.pusher.send(records, level=level)
    p.pusher.send([("c", "after.the.bad.ones", [1], None, [])])
    wait_until(lambda: p.status()["malformed"] >= before + len(bad), message="every bad message counted")
    p.wait_measurements(1)
    p.stop_worker()
    expect([s["name"] for s in p.summaries()]) == ["after.the.bad.ones"]
    log = p.worker.stderr
    expect(log).does_not_contain("\nERROR line")  # escaped, never a forged line
    expect(max(len(line) for line in log.splitlines()) < 2000) == True


# --- the flags ---------------------------------------------------------------------------

BAD_FLAGS = [
    (["console", "--expire", "-1"], "expiry must be 0 or more"),
    (["console", "--expire", "nan"], "expiry must be 0 or more"),
    (["console", "--expire", "300,gauges=5"], "unknown kind"),
    (["console", "--relative-error", "0"], "relative error must be in"),
    (["console", "--relative-error", "1"], "relative error must be in"),
    (["console", "--relative-error", "nan"], "relative error must be in"),
    (["console", "--max-exact", "0"], "0"),
    (["console", "--max-samples", "0"], "0"),
    (["statsd", "--histograms", "distribution"], "distribution"),
    (["statsd", "--sets", "unique"], "unique"),
]


@pytest.mark.parametrize("argv, complaint", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_aggregation_flags_exit_with_a_usage_message(argv, complaint):
    from click.testing import CliRunner

    from zibrato.cli import group

    result = CliRunner().invoke(group, argv, prog_name="zibrato")
    expect(result.exit_code) == 2
    expect(result.output).contains("Usage:")
    expect(result.output).contains(complaint)


def test_the_aggregation_flags_reach_the_aggregator():
    from zibrato.backends.console import Console
    from zibrato.cli.console import command
    from zibrato.components.worker_flags import worker_config
    from zibrato.worker import Worker

    flags = ["--percentiles", "50", "--max-exact", "500", "--no-self-metrics", "--relative-error", "0.002"]
    ctx = command.make_context("zibrato-console", [*flags, "--expire", "60,gauge=600,set=0"])
    with ctx:
        config = worker_config(ctx.params, [])
    worker = Worker.from_config(Console(), config)
    agg = worker.aggregator
    expect((agg.max_exact, agg.relative_error, agg.expire["gauge"], agg.expire["set"])) == (500, 0.002, 600.0, 0.0)
