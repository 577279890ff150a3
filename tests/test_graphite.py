"""zibrato-graphite: the mapping line by line, then the real carbon-cache and its whisper files.

The mapping tests need no socket. The others run Debian's carbon-cache
(tests/support/carbon.py) and read back, with the whisper module, exactly
what it stored.
"""

from __future__ import annotations

import socket

import pytest
from expecter import expect

from support.carbon import Carbon, carbon_missing
from support.daemons import run_script, wait_until
from support.pipeline import DAY, WorkerPipeline, pipelines
from zibrato.backends.graphite import GraphiteDestination, GraphiteMapping, number, sanitise_path, timestamp
from zibrato.delivery import Retryable
from zibrato.destination import Interval

needs_carbon = pytest.mark.skipif(carbon_missing() is not None, reason=carbon_missing() or "")

END = 1_700_000_010.0


def counter(name="hits", value=3.0, count=2, rate=0.3, source=None, tags=()):
    return {
        "type": "counter",
        "name": name,
        "source": source,
        "tags": list(tags),
        "value": value,
        "count": count,
        "rate": rate,
        "time": END,
        "interval": 10.0,
    }


def gauge(name="temperature", value=-2.5, source=None, tags=()):
    return {
        "type": "gauge",
        "name": name,
        "source": source,
        "tags": list(tags),
        "value": value,
        "count": 2,
        "min": -2.5,
        "max": 4.0,
        "sum": 1.5,
        "time": END,
        "interval": 10.0,
    }


def timer(name="db.query", values=(0.1, 0.2, 0.3), kind="timer", unit=None, source=None, tags=()):
    n = len(values)
    summary = {
        "type": kind,
        "name": name,
        "source": source,
        "tags": list(tags),
        "count": n,
        "time": END,
        "interval": 10.0,
        "exact": True,
    }
    if unit is not None or kind == "histogram":
        summary["unit"] = unit
    if n:
        ordered = sorted(values)
        mean = sum(values) / n
        summary.update(
            sum=sum(values),
            sum_squares=sum(v * v for v in values),
            min=ordered[0],
            max=ordered[-1],
            mean=mean,
            median=ordered[n // 2],
            stddev=(sum((v - mean) ** 2 for v in values) / n) ** 0.5,
            p50=ordered[n // 2],
            p99_9=ordered[-1],
            sketch={"count": n},
        )
    return summary


def a_set(name="users", value=7):
    return {
        "type": "set",
        "name": name,
        "source": None,
        "tags": [],
        "value": value,
        "exact": True,
        "time": END,
        "interval": 10.0,
    }


def lines(*summaries, **options) -> list[str]:
    return GraphiteMapping(**options).lines(Interval(END - 10, END, list(summaries)))


# --- mapping (no sockets) -------------------------------------------------------------


def test_each_type_becomes_etsy_style_paths_with_the_interval_end_as_timestamp():
    expect(lines(counter(), gauge(), a_set())) == [
        "stats.counters.hits.count 3 1700000010\n",
        "stats.counters.hits.rate 0.3 1700000010\n",
        "stats.gauges.temperature -2.5 1700000010\n",
        "stats.sets.users.count 7 1700000010\n",
    ]


def test_a_timer_sends_every_statistic_then_its_percentiles_in_order():
    t = timer(values=(0.5, 0.25, 1.5))
    t["p90"] = 1.5
    paths = [line.split()[0] for line in lines(t)]
    expect(paths) == [
        f"stats.timers.db.query.{stat}"
        for stat in ("count", "sum", "sum_squares", "min", "max", "mean", "median", "stddev", "p50", "p90", "p99_9")
    ]
    values = {line.split()[0].rsplit(".", 1)[1]: float(line.split()[1]) for line in lines(t)}
    expect(values["sum"]) == 2.25
    expect(values["min"]) == 0.25
    expect(values["p99_9"]) == 1.5


def test_an_idle_timer_sends_count_zero_alone_and_a_histogram_keeps_its_unit():
    expect(lines(timer(values=()))) == ["stats.timers.db.query.count 0 1700000010\n"]
    expect(
        lines(timer(name="size", values=(5.0,), kind="histogram", unit="bytes"))[0]
    ) == "stats.histograms.size.bytes.count 1 1700000010\n"


def test_source_is_a_path_part_and_tags_are_dropped_by_default():
    expect(lines(counter(source="web-1", tags=["env:prod"]))[0]) == "stats.counters.web-1.hits.count 3 1700000010\n"


def test_graphite_tags_carry_source_level_unit_and_tags_sorted():
    summary = counter(source="web 1", tags=["env:prod", "bare", "name:x", "path:~a;b"])
    summary["level"] = "info"
    expect(
        lines(summary, tags="graphite")[0]
    ) == "stats.counters.hits.count;bare=true;env=prod;level=info;name_=x;path=_a_b;source=web_1" " 3 1700000010\n"
    expect(
        lines(timer(name="size", values=(5.0,), kind="histogram", unit="bytes"), tags="graphite")[0]
    ) == "stats.histograms.size.count;unit=bytes 1 1700000010\n"


@pytest.mark.parametrize(
    "name, path",
    [
        ("db query/all", "db_query-all"),
        ("a..b.", "a.b"),
        (".x", "x"),
        ("café", "caf_"),
        ("a;k=v", "a_k_v"),
        ("*{x}[1]", "__x__1_"),
        ("...", "_"),
        ("tab\there", "tab_here"),
    ],
)
def test_names_become_safe_paths(name, path):
    expect(sanitise_path(name)) == path


def test_prefix_can_be_empty_or_nested_and_changed_names_are_logged_once(caplog):
    expect(lines(counter(), prefix="")[0]) == "counters.hits.count 3 1700000010\n"
    expect(lines(counter(), prefix="app.prod.")[0]) == "app.prod.counters.hits.count 3 1700000010\n"
    mapping = GraphiteMapping()
    for _ in range(3):
        mapping.lines(Interval(0, 10, [counter(name="db query")]))
    expect(mapping.changed) == 1
    expect([r.getMessage() for r in caplog.records if "db query" in r.getMessage()]) == [
        "name 'db query' does not fit Graphite's rules (Graphite paths are made of A-Z a-z 0-9 _ - "
        "separated by single dots): sent as 'db_query'"
    ]


@pytest.mark.parametrize("end, stamp", [(100.0, 100), (100.4, 101), (100.0000001, 100), (99.9999999, 100)])
def test_timestamps_round_up_so_a_partial_interval_never_overwrites_a_full_one(end, stamp):
    expect(timestamp(end)) == stamp


@pytest.mark.parametrize(
    "value, text", [(3.0, "3"), (-2.5, "-2.5"), (0.1, "0.1"), (1e300, "1e+300"), (2**60, repr(float(2**60)))]
)
def test_numbers_are_written_so_that_carbon_reads_them_back_exactly(value, text):
    expect(number(value)) == text
    expect(float(text)) == value


def test_an_unreachable_carbon_is_retryable(unused_port):
    destination = GraphiteDestination("127.0.0.1", unused_port, timeout=1)
    with pytest.raises(Retryable, match=f"carbon at 127.0.0.1:{unused_port}"):
        destination.post(Interval(END - 10, END, [counter()]))
    expect(destination.figures()["send_errors"]) == 1


def test_a_carbon_that_never_confirms_times_out_as_retryable():
    """A server that accepts but never reads nor closes: the wait for carbon's close times out."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        destination = GraphiteDestination("127.0.0.1", server.getsockname()[1], timeout=0.3)
        with pytest.raises(Retryable, match="timed out"):
            destination.post(Interval(END - 10, END, [counter()]))


def test_bad_addresses_are_usage_errors():
    for bad, message in (
        ("host:port", "HOST:PORT"),
        ("host:0", "port 0 out of range"),
        ("host:70000", "port 70000 out of range"),
        (":2003", "not a host name"),
        ("[::1]x", "HOST:PORT"),
    ):
        result = run_script("zibrato-graphite", "--graphite", bad)
        expect(result.returncode) == 2
        expect(result.stderr).contains(message)


# --- the real carbon-cache --------------------------------------------------------------


@pytest.fixture(scope="module")
def carbon(tmp_path_factory):
    if carbon_missing():
        pytest.skip(carbon_missing())
    server = Carbon(tmp_path_factory.mktemp("carbon")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tagged_carbon(tmp_path_factory):
    if carbon_missing():
        pytest.skip(carbon_missing())
    server = Carbon(tmp_path_factory.mktemp("carbon-tags"), tags=True).start()
    yield server
    server.stop()


def now_interval(*summaries) -> Interval:
    import time

    end = float(int(time.time()))
    return Interval(end - 10, end, list(summaries))


@needs_carbon
def test_carbon_stores_exactly_what_each_type_sends(carbon):
    host, port = carbon.address.split(":")
    destination = GraphiteDestination(host, int(port), prefix="exact")
    t = timer(values=(0.125, 0.5, 2.0))
    interval = now_interval(
        counter(value=1234.5, rate=123.45),
        gauge(value=-1e-3),
        t,
        timer(name="size", values=(512.0, 2048.0), kind="histogram", unit="bytes"),
        a_set(value=42),
    )
    destination.post(interval)
    stamp = int(interval.end)
    expect(carbon.wait_for_points("exact.counters.hits.count")) == {stamp: 1234.5}
    expect(carbon.wait_for_points("exact.counters.hits.rate")) == {stamp: 123.45}
    expect(carbon.wait_for_points("exact.gauges.temperature")) == {stamp: -1e-3}
    for stat in ("count", "sum", "sum_squares", "min", "max", "mean", "median", "stddev", "p50", "p99_9"):
        expect(carbon.wait_for_points(f"exact.timers.db.query.{stat}")) == {stamp: t[stat]}
    expect(carbon.wait_for_points("exact.histograms.size.bytes.max")) == {stamp: 2048.0}
    expect(carbon.wait_for_points("exact.sets.users.count")) == {stamp: 42.0}
    expect(destination.figures()["intervals_sent"]) == 1


@needs_carbon
def test_carbon_1_1_stores_tagged_series_by_their_tags(tagged_carbon):
    host, port = tagged_carbon.address.split(":")
    destination = GraphiteDestination(host, int(port), prefix="tagged", tags="graphite")
    interval = now_interval(counter(value=7, source="api", tags=["env:prod", "region:eu-west"]))
    destination.post(interval)
    metric = "tagged.counters.hits.count;env=prod;region=eu-west;source=api"
    expect(tagged_carbon.wait_for_points(metric)) == {int(interval.end): 7.0}


class GraphitePipeline(WorkerPipeline):
    """A broker and a zibrato-graphite worker (fast retries) sending to a real carbon-cache."""

    script, ready_log = "zibrato-graphite", "graphite worker"

    def __init__(self, tmp_path, carbon, *worker_args, flush=1.0):
        super().__init__(
            tmp_path,
            "--graphite",
            carbon.address,
            "--retry-delay",
            "0.1",
            "--max-retry-delay",
            "0.5",
            "--timeout",
            "2",
            *worker_args,
            flush=flush,
        )


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: GraphitePipeline(tmp_path, *args, **kwargs))


def total(carbon: Carbon, metric: str) -> float:
    return sum(carbon.points(metric).values())


@needs_carbon
def test_the_stop_signal_delivers_the_final_partial_interval_with_graphite_tags(pipeline, tagged_carbon):
    p = pipeline(tagged_carbon, "--prefix", "final", "--tags", "graphite", "--percentiles", "50,99.9", flush=DAY)
    for i in range(1, 201):
        p.client.timing("info", "db.query", i / 1000, source="api", tags={"env": "prod"})
    p.wait_measurements(200)
    p.stop_worker()
    path = "final.timers.db.query.{};env=prod;source=api"
    expected = {"count": 200, "min": 0.001, "max": 0.2, "p50": 0.1, "p99_9": 0.2}
    for stat, value in expected.items():
        expect(list(tagged_carbon.wait_for_points(path.format(stat)).values())) == [value]


@needs_carbon
def test_the_console_script_delivers_exact_totals_through_an_outage(pipeline, tmp_path):
    carbon = Carbon(tmp_path / "carbon").start()
    try:
        p = pipeline(carbon, "--prefix", "e2e")
        for i in range(1, 11):
            p.client.count("info", "jobs", i)
            p.client.timing("info", "work", i / 100)
        p.wait_measurements(20)
        wait_until(lambda: total(carbon, "e2e.counters.jobs.count") == 55, timeout=15, message="55 jobs in whisper")
        wait_until(lambda: total(carbon, "e2e.timers.work.count") == 10, timeout=15, message="10 timings in whisper")

        carbon.stop()
        for i in range(1, 6):
            p.client.count("info", "jobs", 100 * i)
        p.wait_measurements(25)
        wait_until(lambda: p.status()["retries"] >= 2, timeout=15, message="failed deliveries")
        expect(" ".join(p.status()["problems"])).contains("graphite delivery failing")

        carbon.start()
        wait_until(
            lambda: total(carbon, "e2e.counters.jobs.count") == 55 + 1500,
            timeout=20,
            message="every job in whisper after the outage",
        )
        wait_until(
            lambda: "delivery failing" not in " ".join(p.status()["problems"]),
            timeout=10,
            message="delivery no longer failing",
        )
        expect(p.status()["dropped_intervals"]) == 0
        p.stop_worker()
        expect(p.worker.stderr).contains(f"carbon at {carbon.address}: connection refused (attempt 1 failed")
    finally:
        carbon.stop()
