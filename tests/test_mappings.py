"""Each backend's mapping is pure: summaries in, payload out, tested without a socket.

Constructing a destination opens nothing, either: no socket, no ZeroMQ context.
"""

from __future__ import annotations

import json
import threading

from expecter import expect

from zibrato.aggregation_needs import AggregationNeeds
from zibrato.backends.console import Console, json_lines
from zibrato.backends.librato import Librato, LibratoMapping
from zibrato.backends.statsd import Statsd, StatsdMapping
from zibrato.destination import Interval

COUNTER = {
    "type": "counter",
    "name": "signup",
    "source": "web",
    "tags": ["env:prod"],
    "time": 60.0,
    "interval": 60.0,
    "value": 3,
    "count": 2,
    "rate": 0.05,
}
GAUGE = {
    "type": "gauge",
    "name": "queue",
    "source": None,
    "tags": [],
    "time": 60.0,
    "interval": 60.0,
    "value": -2,
    "count": 1,
    "min": -2,
    "max": -2,
    "sum": -2,
}
TIMER = {
    "type": "timer",
    "name": "db.query",
    "source": None,
    "tags": [],
    "time": 60.0,
    "interval": 60.0,
    "count": 2,
    "sum": 0.3,
    "sum_squares": 0.05,
    "min": 0.1,
    "max": 0.2,
    "mean": 0.15,
    "median": 0.15,
    "stddev": 0.05,
    "p99": 0.2,
    "values": [0.1, 0.2],
}


def test_statsd_mapping_makes_lines_without_a_socket():
    mapping = StatsdMapping(prefix="app", tags="dogstatsd")
    expect(mapping.lines([COUNTER, GAUGE, TIMER])) == [
        b"app.web.signup:3|c|#env:prod",
        b"app.queue:0|g\napp.queue:-2|g",
        b"app.db.query:100|ms",
        b"app.db.query:200|ms",
    ]


def test_librato_mapping_makes_measurements_and_bodies_without_a_socket():
    mapping = LibratoMapping(api="legacy")
    measurements = mapping.measurements([COUNTER, GAUGE, TIMER])
    expect([m["name"] for m in measurements]) == ["signup", "queue", "db.query", "db.query.p99"]
    expect(measurements[0]) == {"name": "signup", "value": 3, "source": "web.env:prod"}
    expect(mapping.payload(60.0, measurements[:1])) == {"measure_time": 60, "gauges": measurements[:1]}


def test_console_renders_json_lines_without_a_stream():
    [line] = json_lines([COUNTER]).splitlines()
    expect(json.loads(line)["rate"]) == 0.05
    expect(Console(format="json").render(Interval(0.0, 60.0, [COUNTER]))) == json_lines([COUNTER])


def test_constructing_a_destination_opens_nothing():
    threads = threading.active_count()
    destinations = [Console(), Statsd(protocol="tcp"), Librato("ops@example.com", "tok-abcdef")]
    expect(threading.active_count()) == threads
    for destination in destinations:
        expect(getattr(destination, "sock", None)) == None
        expect(getattr(destination, "session", None)) == None
    expect(AggregationNeeds.of(Statsd()).values) == True
    expect(AggregationNeeds.of(Librato("ops@example.com", "tok-abcdef")).values) == False
