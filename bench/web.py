"""Web view: what 10,000 series cost the worker per flush, in memory, and per page request.

Run through ``bench/run web [--quick]`` (or ``python bench/web.py`` in a venv with zibrato).

Per flush, beside its peer in the same process: ``Aggregator.flush`` of the
interval (what every worker does) against ``History.add`` of its summaries
(what the web view adds: rows, search text, chart points). Memory: traced
allocations of a History holding N full intervals of every series. Requests:
a real ``WebServer`` on loopback, ``urllib`` round trips (median of repeats)
and bytes per answer, for one page of the table (server-side paging and
filtering, what the page uses) against the whole table in one answer (what a
page filtering in the browser would have to fetch at every flush).
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc
import urllib.request

import _common as c

from zibrato.aggregation import Aggregator
from zibrato.web.server import WebServer
from zibrato.web.view import History, series_id

T0 = 1_800_000_000.0


def fill(aggregator: Aggregator, series: int, rng: random.Random) -> None:
    """A mix like an instrumented service's: 60 % timers (20 values), 30 % counters, 10 % gauges."""
    for i in range(series):
        kind = "t" if i % 10 < 6 else "c" if i % 10 < 9 else "g"
        values = [rng.expovariate(100) for _ in range(20)] if kind == "t" else [1.0, 2.0]
        tags = ("outcome:ok",) if kind == "t" and i % 2 else ()
        aggregator.add(kind, f"service.endpoint.{i:05d}", "web-1", tags, values)


def per_flush(series: int, repeats: int) -> tuple[list, dict]:
    rng = random.Random(18)
    aggregator = Aggregator(percentiles=(50, 90, 99), include_interval=True)
    history = History(60)
    flush_s, add_s = [], []
    summaries: list = []
    for k in range(repeats):
        fill(aggregator, series, rng)
        started = time.perf_counter()
        summaries = aggregator.flush(T0 + k, 1.0)
        flush_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        history.add(T0 + k, 1.0, summaries)
        add_s.append(time.perf_counter() - started)
    flush_ms, add_ms = c.median(flush_s) * 1e3, c.median(add_s) * 1e3
    rows = [
        ("Aggregator.flush (every worker)", f"{flush_ms:.1f}", "1.00"),
        ("History.add (the web view's extra)", f"{add_ms:.1f}", f"{add_ms / flush_ms:.2f}"),
    ]
    return rows, {"summaries": summaries, "flush_ms": flush_ms, "add_ms": add_ms}


def memory(summaries: list, intervals: int) -> float:
    """MiB traced for a History holding ``intervals`` intervals of these summaries."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    history = History(intervals)
    for k in range(intervals):
        history.add(T0 + k, 1.0, summaries)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del history
    return held / 2**20


def requests(summaries: list, repeats: int) -> list:
    history = History(60)
    for k in range(60):
        history.add(T0 + k, 1.0, summaries)
    server = WebServer("127.0.0.1", 0, history).start()
    sid = series_id(summaries[1])
    cases = [
        ("one page of 100 rows (the page)", "api/series"),
        ("filtered on the server, 1 match", "api/series?q=endpoint.04242"),
        ("the whole table, 10 pages of 1000", None),
        ("chart of a series, 60 intervals", f"api/chart?id={sid}"),
        ("summary", "api/summary"),
    ]
    rows = []
    try:
        for label, path in cases:
            paths = [path] if path else [f"api/series?limit=1000&offset={o}" for o in range(0, len(summaries), 1000)]
            times, size = [], 0
            for _ in range(repeats):
                started, size = time.perf_counter(), 0
                for p in paths:
                    with urllib.request.urlopen(server.url + p, timeout=10) as answer:
                        size += len(answer.read())
                times.append(time.perf_counter() - started)
            rows.append((label, f"{c.median(times) * 1e3:.1f}", f"{size / 1024:.1f}"))
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--series", type=int, default=10_000)
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    print(f"# Web view, {args.series:,} series\n\n{c.machine()}\n")
    rows, flushed = per_flush(args.series, repeats)
    print("## Per flush (median ms)\n")
    print(c.table(("work", "ms", "ratio to flush"), rows))
    intervals = 10 if args.quick else 60
    mib = memory(flushed["summaries"], intervals)
    print(
        f"\n## Memory\n\nHistory of {intervals} intervals x {args.series:,} series: {mib:.1f} MiB traced "
        f"({mib * 2**20 / (intervals * args.series):.0f} bytes per series and interval)\n"
    )
    print("## Requests (real server on loopback, median ms)\n")
    print(c.table(("request", "ms", "KiB"), requests(flushed["summaries"], repeats)))


if __name__ == "__main__":
    main()
