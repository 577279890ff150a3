"""The worker built from parts: WorkerConfig, the Intake, declared aggregation needs, the health helper.

No sockets and no real time: the parts are exercised through their seams
(the intake's ingest and filters, an injected clock for the health helper).
"""

from __future__ import annotations

import io
import logging

import pytest
import zmq
from expecter import expect

from zibrato import protocol
from zibrato.aggregation import LevelAggregators
from zibrato.aggregation_needs import AggregationNeeds
from zibrato.backends.console import Console
from zibrato.forward import Forwarder, ForwardWorker
from zibrato.health import Connection, Rises, judged
from zibrato.intake import Intake
from zibrato.rules import SeriesRules
from zibrato.shard import Shard
from zibrato.worker import Worker
from zibrato.worker_config import WorkerConfig

# --- WorkerConfig is what the worker reads -----------------------------------------------------------


def test_a_worker_reads_one_worker_config_and_the_former_keywords_build_the_same_config():
    config = WorkerConfig(
        brokers=("10.0.0.1", "10.0.0.2:6551"),
        levels=("INFO",),
        flush_interval=5.0,
        max_exact=10,
        relative_error=0.02,
        self_level=None,
        aggregation={"max_buckets": 100},
    )
    worker = Worker(Console(stream=io.StringIO()), config)
    expect(worker.endpoints) == ["tcp://10.0.0.1:5551", "tcp://10.0.0.2:6551"]
    expect(worker.levels) == ("info",)
    expect(worker.aggregator.max_exact) == 10
    expect(worker.aggregator.relative_error) == 0.02
    expect(worker.max_buckets) == 100
    legacy = Worker(
        Console(stream=io.StringIO()),
        host=["10.0.0.1", "10.0.0.2:6551"],
        levels=("INFO",),
        flush_interval=5.0,
        max_samples=10,
        self_level=None,
        aggregation={"relative_error": 0.02, "max_buckets": 100},
    )
    expect(legacy.config) == config
    expect(Worker.from_config(Console(stream=io.StringIO()), config).config) == config


def test_an_unknown_worker_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="flush_intervall"):
        Worker(Console(stream=io.StringIO()), flush_intervall=5.0)


# --- the forwarder declares what it needs ------------------------------------------------------------


def test_a_forwarder_declares_levels_apart_and_gauge_times_and_a_plain_worker_honours_them():
    needs = AggregationNeeds.of(Forwarder("127.0.0.1:1"))
    expect(needs.levels_apart) == True
    expect(needs.gauge_times) == True
    worker = Worker.from_config(Forwarder("127.0.0.1:1"), WorkerConfig(self_level=None, flush_interval=10.0))
    expect(isinstance(worker.aggregator, LevelAggregators)) == True
    worker.ingest(protocol.encode("info", 100.5, [("g", "temp", [3.0], None, [])]))
    worker.ingest(protocol.encode("warn", 100.7, [("g", "temp", [4.0], None, []), ("t", "db", [0.1], None, [])]))
    summaries = worker.flush(100.0, 110.0).summaries
    gauges = {s["level"]: s for s in summaries if s["type"] == "gauge"}
    expect(gauges["info"]["last_time"]) == 100.5  # the last value's time travels upstream
    expect(gauges["warn"]["value"]) == 4.0
    [timer] = [s for s in summaries if s["type"] == "timer"]
    expect([key for key in timer if key.startswith("p") and key[1:].isdigit()]) == []  # no percentiles
    expect(list(timer["values"])) == [0.1]  # a small timer travels as its values
    expect(issubclass(ForwardWorker, Worker)) == True  # kept for code that names it


def test_a_destination_with_the_older_attributes_gets_what_they_asked_for():
    class Old(Console):
        needs_level = True

    expect(AggregationNeeds.of(Old(stream=io.StringIO())).levels_apart) == True
    expect(AggregationNeeds.of(Console(stream=io.StringIO())).levels_apart) == False


# --- the intake ------------------------------------------------------------------------------------------


def _intake(config: WorkerConfig, fed: list) -> Intake:
    def feed(batch, records):
        fed.append((batch.level, [tuple(r[:2]) + (tuple(r[4]),) for r in records]))
        return len(records)

    return Intake(config, ["tcp://127.0.0.1:1"], feed, log=logging.getLogger("zibrato.test"), max_buckets=160)


def test_the_intake_applies_its_record_filters_in_order_and_counts_measurements():
    fed: list = []
    intake = _intake(WorkerConfig(rules=SeriesRules(drop_tags=["host"])), fed)
    seen = []
    intake.filters.append(lambda records, sharded: seen.append([list(r[4]) for r in records]) or records)
    intake.ingest(protocol.encode("info", 1.0, [("c", "hits", [1], None, ["host:a", "k:v"])]))
    expect(seen) == [[["k:v"]]]  # the rules ran first: the host tag was gone when the next filter ran
    expect(fed) == [("info", [("c", "hits", ("k:v",))])]
    expect(intake.figures["received"]) == 1
    expect(intake.figures["measurements"]) == 1


def test_a_sharded_intake_keeps_its_own_series_of_an_unsharded_message():
    fed: list = []
    shard = Shard.parse("1/2")
    intake = _intake(WorkerConfig(shard=shard), fed)
    records = [("c", f"series{i}", [1], None, []) for i in range(40)]
    intake.ingest(protocol.encode("info", 1.0, records))
    kept = [name for _, name, _ in fed[0][1]]
    expect(kept) == [r[1] for r in shard.own_records(records)]
    expect(0 < len(kept) < 40) == True


def test_the_intake_counts_what_is_malformed_and_feeds_nothing_of_it():
    fed: list = []
    intake = _intake(WorkerConfig(), fed)
    intake.ingest(b"not a message")
    intake.malformed("multipart message")
    expect(intake.figures["malformed"]) == 2
    expect(fed) == []


def test_the_intake_subscribes_to_each_level_exactly():
    intake = _intake(WorkerConfig(levels=("info", "warn")), [])
    expect(intake.subscriptions()) == [protocol.topic("info"), protocol.topic("warn")]
    expect(_intake(WorkerConfig(), []).subscriptions()) == [b""]


# --- one health helper -------------------------------------------------------------------------------


def test_healthy_is_true_exactly_when_no_problem_is_named():
    expect(judged({}, [])) == {"healthy": True, "problems": []}
    expect(judged({"x": 1}, ["broken"])) == {"x": 1, "healthy": False, "problems": ["broken"]}


def test_a_connection_to_several_brokers_is_lost_only_when_none_is_left():
    now = [100.0]
    link = Connection(clock=lambda: now[0])
    expect(link.connected) == False
    expect(link.event(zmq.EVENT_CONNECTED)) == "connected"
    expect(link.event(zmq.EVENT_CONNECTED)) is None  # a second broker
    expect(link.event(zmq.EVENT_DISCONNECTED)) is None  # one is left
    expect(link.event(zmq.EVENT_DISCONNECTED)) == "lost"
    now[0] += 10.0
    expect(link.problem("tcp://b:5551", "--host, --port")) is None  # not longer than 10 s yet
    now[0] += 1.0
    expect(link.problem("tcp://b:5551", "--host, --port")) == (
        "not connected to the broker at tcp://b:5551 for 11 s: is it running there (--host, --port)?"
    )


def test_a_running_total_is_a_problem_while_it_rose_within_the_window():
    now = [0.0]
    rises = Rises(window=60.0, clock=lambda: now[0])
    expect(rises.problems({"kernel_drops": 0}, ["kernel_drops"])) == []
    expect(rises.problems({"kernel_drops": 3}, ["kernel_drops"])) == ["kernel_drops rose in the last 60 s: 3"]
    now[0] = 61.0
    expect(rises.problems({"kernel_drops": 3}, ["kernel_drops"])) == []
