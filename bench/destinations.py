"""Destinations: what one interval costs to map and to deliver, Graphite and InfluxDB beside statsd.

Run through ``bench/run destinations [--quick]``.

Mapping (pure CPU, no socket): one interval of N series, 40 % counters, 20 %
gauges, 40 % timers (count, sum, sum_squares, min, max, mean, median, stddev
and four percentiles), each with a source and two tags, turned into the
destination's wire text by ``GraphiteMapping.lines``, ``InfluxMapping.lines``
and, as the peer already in Zibrato, ``StatsdMapping.lines`` (timers with one
raw value each, since statsd forwards values, not statistics). The figure is
the median of the repeats (process CPU time), per interval and per series.

Delivery (when Debian's carbon-cache and influxd are installed): the same
interval posted to the real server on loopback, from ``post()`` until carbon
has confirmed it (closed its side) or InfluxDB answered 204; the wall time,
median of the repeats. The servers run as in the tests (tests/support).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from array import array
from pathlib import Path

import _common as c

from zibrato.backends.graphite import GraphiteDestination, GraphiteMapping
from zibrato.backends.influxdb import InfluxDBDestination, InfluxMapping
from zibrato.backends.statsd import StatsdMapping
from zibrato.destination import Interval


def summaries(n: int, end: float) -> list[dict]:
    out = []
    for i in range(n):
        base = {
            "name": f"app.part{i % 50}.metric{i}",
            "source": f"web-{i % 8}",
            "tags": ["env:prod", f"shard:{i % 16}"],
            "time": end,
            "interval": 10.0,
        }
        kind = i % 5
        if kind < 2:
            out.append({**base, "type": "counter", "value": float(i), "count": 3, "rate": i / 10})
        elif kind == 2:
            out.append(
                {**base, "type": "gauge", "value": i * 0.5, "count": 2, "min": 0.0, "max": i * 0.5, "sum": i * 0.75}
            )
        else:
            v = 0.001 * (i % 997 + 1)
            out.append(
                {
                    **base,
                    "type": "timer",
                    "count": 1,
                    "sum": v,
                    "sum_squares": v * v,
                    "min": v,
                    "max": v,
                    "mean": v,
                    "median": v,
                    "stddev": 0.0,
                    "p50": v,
                    "p90": v,
                    "p95": v,
                    "p99": v,
                    "exact": True,
                    "values": array("d", [v]),
                }
            )
    return out


def cpu(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.process_time()
        func()
        times.append(time.process_time() - started)
    return c.median(times)


def wall(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return c.median(times)


def mapping_rows(n: int, repeats: int) -> list[list]:
    interval = Interval(990.0, 1000.0, summaries(n, 1000.0))
    statsd = StatsdMapping()
    graphite, influx = GraphiteMapping(), InfluxMapping()  # long-lived, as in a worker
    cases = [
        ("Graphite: first interval (names escaped)", lambda: GraphiteMapping().lines(interval)),
        ("Graphite: steady state", lambda: graphite.lines(interval)),
        ("InfluxDB: first interval (names escaped)", lambda: InfluxMapping().lines(interval)),
        ("InfluxDB: steady state", lambda: influx.lines(interval)),
        ("statsd (peer: values, not statistics)", lambda: statsd.lines(interval.summaries)),
    ]
    rows = []
    for label, func in cases:
        out = func()
        seconds = cpu(func, repeats)
        size = sum(len(x) for x in out)
        rows.append([label, n, len(out), size / 1e6, seconds * 1000, seconds / n * 1e6])
    return rows


def delivery_rows(n: int, repeats: int) -> list[list]:
    import sys

    sys.path.insert(0, str(c.ROOT / "tests"))
    from support.carbon import Carbon, carbon_missing
    from support.influxdb import InfluxDB, influxd_missing

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if carbon_missing() is None:
            carbon = Carbon(root / "carbon").start()
            try:
                host, port = carbon.address.split(":")
                destination = GraphiteDestination(host, int(port))
                intervals = iter(
                    Interval(float(t - 10), float(t), summaries(n, float(t)))
                    for t in range(int(time.time()) - 3000, int(time.time()), 10)
                )
                seconds = wall(lambda: destination.post(next(intervals)), repeats)
                rows.append(["Graphite: carbon-cache confirmed", n, seconds * 1000, n / seconds])
            finally:
                carbon.stop()
        else:
            rows.append([f"Graphite: skipped ({carbon_missing()})", n, None, None])
        if influxd_missing() is None:
            influx = InfluxDB(root / "influxdb").start()
            try:
                database = influx.create_database("bench")
                destination = InfluxDBDestination(influx.url, database=database)
                destination.connect()
                stamps = iter(range(1000, 100000, 10))
                seconds = wall(lambda: destination.post(Interval(0.0, float(next(stamps)), summaries(n, 0.0))), repeats)
                rows.append(["InfluxDB 1.x: 204 received", n, seconds * 1000, n / seconds])
            finally:
                influx.stop()
        else:
            rows.append([f"InfluxDB: skipped ({influxd_missing()})", n, None, None])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--series", type=int, default=None)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    n = args.series or (2_000 if args.quick else 20_000)
    repeats = 3 if args.quick else 7
    print(f"# Destinations: one interval of {n:,} series\n\n{c.machine()}\n")
    rows = mapping_rows(n, repeats)
    print(c.table(["mapping", "series", "lines", "MB", "ms per interval", "µs per series"], rows))
    graphite, influx = rows[1][4], rows[3][4]
    print(
        f"\nSteady state: InfluxDB's mapping costs {influx / graphite:.2f}x Graphite's; statsd's "
        f"{rows[4][4] / graphite:.2f}x (one line per value, no statistics); a first interval "
        f"costs {rows[0][4] / graphite:.2f}x (Graphite) and {rows[2][4] / influx:.2f}x (InfluxDB) "
        f"the steady state.\n"
    )
    print(
        c.table(
            ["delivery to the real server (loopback)", "series", "ms per interval", "series/s"],
            delivery_rows(n, repeats),
        )
    )
    c.save_json("destinations", {"series": n, "mapping": rows})


if __name__ == "__main__":
    main()
