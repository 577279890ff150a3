"""The real Aggregator's summaries, every type it makes, through both mappings into the real servers.

Counters, gauges and timers run today; histograms (with a unit, weights) and
sets run once the aggregator makes them (protocol 1.1, the sketch branch):
until then those cases skip, saying so.
"""

from __future__ import annotations

import time

import pytest
from expecter import expect

from support.carbon import Carbon, carbon_missing
from support.influxdb import InfluxDB, influxd_missing
from zibrato.aggregation import TYPE_NAMES, Aggregator
from zibrato.backends.graphite import GraphiteDestination
from zibrato.backends.influxdb import InfluxDBDestination
from zibrato.destination import Interval

HAS_1_1 = "h" in TYPE_NAMES and "s" in TYPE_NAMES
needs_1_1 = pytest.mark.skipif(
    not HAS_1_1, reason="histograms and sets arrive with protocol 1.1 (the sketch branch's aggregator)"
)


def aggregated(with_1_1: bool) -> Interval:
    """One interval of the real Aggregator, ending at the current second."""
    end = float(int(time.time()))
    aggregator = Aggregator(percentiles=(50, 99.9), include_interval=True)
    aggregator.add("c", "orders", "shop", ("env:prod",), (1, 2, 3.5))
    aggregator.add("g", "queue.depth", None, (), (7, -3))
    aggregator.add("t", "db.query", None, (), tuple(i / 1000 for i in range(1, 1001)))
    if with_1_1:
        aggregator.add("h", "response.size", None, (), (512, 2048), weight=2, unit="bytes")
        aggregator.add("s", "users.active", None, (), ("u-1", "u-2", "u-1", 3))
    return Interval(end - 10, end, aggregator.flush(end, 10.0))


def by_name(interval: Interval) -> dict[str, dict]:
    return {s["name"]: s for s in interval.summaries}


@pytest.fixture(scope="module")
def carbon(tmp_path_factory):
    if carbon_missing():
        pytest.skip(carbon_missing())
    server = Carbon(tmp_path_factory.mktemp("carbon-agg")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def influxdb(tmp_path_factory):
    if influxd_missing():
        pytest.skip(influxd_missing())
    server = InfluxDB(tmp_path_factory.mktemp("influxdb-agg")).start()
    yield server
    server.stop()


def check_carbon(carbon: Carbon, prefix: str, interval: Interval, with_1_1: bool) -> None:
    host, port = carbon.address.split(":")
    GraphiteDestination(host, int(port), prefix=prefix).post(interval)
    s, stamp = by_name(interval), int(interval.end)
    expect(carbon.wait_for_points(f"{prefix}.counters.shop.orders.count")) == {stamp: 6.5}
    expect(carbon.wait_for_points(f"{prefix}.gauges.queue.depth")) == {stamp: -3.0}
    for stat in ("count", "sum", "min", "max", "mean", "median", "stddev", "p50", "p99_9"):
        expect(carbon.wait_for_points(f"{prefix}.timers.db.query.{stat}")) == {stamp: s["db.query"][stat]}
    if with_1_1:
        size = s["response.size"]
        expect(size["count"]) == 4  # two values, each weighing 2
        expect(carbon.wait_for_points(f"{prefix}.histograms.response.size.bytes.count")) == {stamp: 4.0}
        expect(carbon.wait_for_points(f"{prefix}.histograms.response.size.bytes.max")) == {stamp: 2048.0}
        expect(carbon.wait_for_points(f"{prefix}.sets.users.active.count")) == {stamp: 3.0}


def check_influxdb(influxdb: InfluxDB, database: str, interval: Interval, with_1_1: bool) -> None:
    InfluxDBDestination(influxdb.url, database=database).post(interval)
    s = by_name(interval)
    orders = influxdb.rows(database, "orders")
    expect([(r["value"], r["count"], r["source"], r["env"]) for r in orders]) == [(6.5, 3, "shop", "prod")]
    expect(influxdb.rows(database, "queue.depth")[0]["value"]) == -3
    query = influxdb.rows(database, "db.query")[0]
    for stat in ("count", "sum", "min", "max", "mean", "median", "stddev", "p50", "p99_9"):
        expect(query[stat]) == s["db.query"][stat]
    if with_1_1:
        size = influxdb.rows(database, "response.size")[0]
        expect((size["count"], size["max"], size["unit"])) == (4, 2048, "bytes")
        expect(influxdb.rows(database, "users.active")[0]["value"]) == 3


def test_counters_gauges_and_timers_of_the_real_aggregator_reach_carbon_exactly(carbon):
    check_carbon(carbon, "agg", aggregated(False), False)


def test_counters_gauges_and_timers_of_the_real_aggregator_reach_influxdb_exactly(influxdb):
    check_influxdb(influxdb, influxdb.create_database("agg"), aggregated(False), False)


@needs_1_1
def test_histograms_and_sets_of_the_real_aggregator_reach_carbon_exactly(carbon):
    check_carbon(carbon, "agg11", aggregated(True), True)


@needs_1_1
def test_histograms_and_sets_of_the_real_aggregator_reach_influxdb_exactly(influxdb):
    check_influxdb(influxdb, influxdb.create_database("agg11"), aggregated(True), True)
