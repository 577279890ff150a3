"""What exporting costs: OTLP encoding and Prometheus exposition per 1,000 series, a scrape of 100,000.

    bench/run export            (or: python bench/export.py [--quick])

Series are a realistic mix: 40 % counters, 20 % gauges, 40 % timers with a
sketch of ~40 buckets (a lognormal latency at scale 6), each with a source
and two tags. Figures are the median of several runs, in milliseconds per
1,000 series, with the peers measured in the same run:

* OTLP: Zibrato's mapping + protobuf serialisation + gzip, against the floor
  of serialising the same, already built request (how much the mapping adds);
* Prometheus: Zibrato's state update and exposition (text format and
  OpenMetrics, both rendered by prometheus_client) against prometheus_client's
  own Counter/Gauge/Histogram objects holding the same series, rendered by the
  same ``generate_latest``; and Zibrato's protobuf exposition (timers as native
  histograms with their classic buckets), which prometheus_client cannot
  render: its row is beside prometheus_client's text exposition of the same
  series, in the same run;
* remote write: the copy of the state at an interval's end, encoded as
  ``WriteRequest`` bodies of 2,000 samples and snappy-compressed (what
  zibrato-remote-write does per interval before it posts), natives only and
  with classic buckets, beside the same text exposition;
* a real scrape over HTTP (GET /metrics from zibrato-prometheus's server, as
  Prometheus asks: OpenMetrics) at 100,000 series, gzip and plain, and the
  cost of each interval behind it (the state update in the delivery thread,
  the rendering in a thread of its own, so that a scrape only sends bytes).
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
import time
import tracemalloc
import urllib.request

from _common import machine, median, save_json, table
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, exposition, openmetrics

from tests.support.summaries import counter, gauge, timer
from zibrato.backends.otlp_mapping import OtlpMapper
from zibrato.backends.prometheus import PrometheusDestination
from zibrato.backends.prometheus_mapping import DEFAULT_BUCKETS, PrometheusState
from zibrato.backends.prometheus_protobuf import exposition as protobuf_exposition
from zibrato.backends.remote_write_mapping import encode, snapshot
from zibrato.destination import Interval

START, END = 1_800_000_000.0, 1_800_000_060.0


def make_summaries(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 5
        common = dict(source=f"web-{i % 20}", tags=[f"endpoint:/api/{i % 500}", f"shard:{i}"])
        if kind in (0, 1):
            out.append(counter(f"app.requests.{i % 50}", float(rng.randint(1, 1000)), **common))
        elif kind == 2:
            out.append(gauge(f"app.queue.{i % 50}", rng.random() * 100, **common))
        else:
            values = [rng.lognormvariate(-4, 0.6) for _ in range(50)]
            out.append(timer(f"app.latency.{i % 50}", values, scale=6, **common))
    return out


def timed(func, repeat: int) -> float:
    """Median seconds of ``repeat`` calls."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        runs.append(time.perf_counter() - started)
    return median(runs)


def otlp_rows(n: int, repeat: int) -> list[list]:
    """Each interval after the first reuses the series' prototypes; the first builds them."""
    summaries = make_summaries(n)
    mapper = OtlpMapper()
    built = mapper.requests(START, END, summaries, max_points=n)

    def full():
        for request in mapper.requests(START, END, summaries, max_points=n):
            gzip.compress(request.SerializeToString(), compresslevel=6)

    def first_interval():
        OtlpMapper().requests(START, END, summaries, max_points=n)

    def serialise_only():
        for request in built:
            request.SerializeToString()

    raw = sum(len(r.SerializeToString()) for r in built)
    zipped = sum(len(gzip.compress(r.SerializeToString(), 6)) for r in built)
    per_k = 1000 / n * 1000  # seconds -> ms per 1,000 series
    t_full, t_first, t_ser = (timed(f, repeat) * per_k for f in (full, first_interval, serialise_only))
    return [
        [
            f"OTLP, {n:,} series: map + serialise + gzip, each interval",
            t_full,
            t_ser,
            t_full / t_ser,
            f"{raw / n:.0f} B/series, gzip {zipped / n:.0f}",
        ],
        [f"OTLP, {n:,} series: the mapping alone, first interval of new series", t_first, t_ser, t_first / t_ser, ""],
    ]


def peer_registry(summaries: list[dict]) -> CollectorRegistry:
    """prometheus_client's own metrics holding the same series (the peer's exposition)."""
    registry = CollectorRegistry(auto_describe=True)
    made: dict[str, object] = {}
    for s in summaries:
        name = s["name"].replace(".", "_")
        labels = {"source": s["source"], **dict(t.split(":", 1) for t in s["tags"])}
        if name not in made:
            kind = {"counter": Counter, "gauge": Gauge, "timer": Histogram}[s["type"]]
            extra = {"buckets": DEFAULT_BUCKETS} if kind is Histogram else {}
            made[name] = kind(name, "peer", list(labels), registry=registry, **extra)
        metric = made[name].labels(**labels)
        if s["type"] == "counter":
            metric.inc(s["value"])
        elif s["type"] == "gauge":
            metric.set(s["value"])
        else:
            metric.observe(s["mean"])
    return registry


class _Collector:
    def __init__(self, state):
        self.state = state

    def collect(self):
        return self.state.families()


def prometheus_rows(n: int, repeat: int) -> list[list]:
    summaries = make_summaries(n)
    state = PrometheusState()
    state.update(summaries)
    collector = _Collector(state)
    peer = peer_registry(summaries)
    per_k = 1000 / n * 1000

    def update():
        PrometheusState().update(summaries)

    t_update = timed(update, repeat) * per_k
    t_text = timed(lambda: exposition.generate_latest(collector), repeat) * per_k
    t_om = timed(lambda: openmetrics.exposition.generate_latest(collector), repeat) * per_k
    p_text = timed(lambda: exposition.generate_latest(peer), repeat) * per_k
    p_om = timed(lambda: openmetrics.exposition.generate_latest(peer), repeat) * per_k
    t_proto = timed(lambda: protobuf_exposition(state), repeat) * per_k
    size = len(exposition.generate_latest(collector))
    proto_size = len(protobuf_exposition(state))
    return [
        [f"Prometheus, {n:,} series: update state (per interval)", t_update, None, None, ""],
        [f"Prometheus, {n:,} series: text exposition", t_text, p_text, t_text / p_text, f"{size / n:.0f} B/series"],
        [f"Prometheus, {n:,} series: OpenMetrics exposition", t_om, p_om, t_om / p_om, ""],
        [
            f"Prometheus, {n:,} series: protobuf exposition, native histograms (peer: its text)",
            t_proto,
            p_text,
            t_proto / p_text,
            f"{proto_size / n:.0f} B/series",
        ],
    ]


def remote_write_rows(n: int, repeat: int) -> list[list]:
    """One interval of zibrato-remote-write: copy the state, encode requests of 2,000 samples, snappy."""
    import cramjam

    summaries = make_summaries(n)
    state = PrometheusState()
    state.update(summaries)
    peer = peer_registry(summaries)
    per_k = 1000 / n * 1000
    p_text = timed(lambda: exposition.generate_latest(peer), repeat) * per_k
    rows = []
    for label, classic in (("native histograms", False), ("native + classic buckets", True)):

        def interval() -> int:
            points, size = snapshot(state), 0
            while points:
                body, used, _, _ = encode(points, 1_800_000_060_000, native=True, classic=classic, max_samples=2000)
                size += len(cramjam.snappy.compress_raw(body))
                del points[:used]
            return size

        t = timed(interval, repeat) * per_k
        size = interval()
        rows.append(
            [
                f"remote write, {n:,} series: {label}, copy + encode + snappy (peer: text exposition)",
                t,
                p_text,
                t / p_text,
                f"snappy {size / n:.0f} B/series",
            ]
        )
    return rows


PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)  # what 2.42 sends


def scrape_rows(n: int, repeat: int) -> list[list]:
    """GET /metrics over HTTP as Prometheus asks (OpenMetrics), and the interval's cost behind it.

    After the first scrape, the renderer thread renders the format asked for
    again after each interval, so scrapes only send ready bytes.
    """
    destination = PrometheusDestination(("127.0.0.1", 0))
    destination.connect()
    host, port = destination.address

    def scrape(encoding: str) -> bytes:
        request = urllib.request.Request(
            f"http://{host}:{port}/metrics", headers={"Accept-Encoding": encoding, "Accept": PROMETHEUS_ACCEPT}
        )
        with urllib.request.urlopen(request, timeout=300) as answer:
            return answer.read()

    try:
        summaries = make_summaries(n)
        destination.post(Interval(START, END, summaries))
        started = time.perf_counter()
        plain, zipped = len(scrape("identity")), len(scrape("gzip"))
        first = time.perf_counter() - started
        posts, renders, identity, gzipped = [], [], [], []
        for i in range(1, repeat + 1):
            done = destination.figures()["renders"]
            started = time.perf_counter()
            destination.post(Interval(START + 60 * i, END + 60 * i, summaries))
            posts.append(time.perf_counter() - started)
            while destination.figures()["renders"] == done:
                time.sleep(0.01)
            renders.append(time.perf_counter() - started - posts[-1])
            for encoding, runs in (("identity", identity), ("gzip", gzipped)):
                started = time.perf_counter()
                scrape(encoding)
                runs.append(time.perf_counter() - started)
        return [
            [
                f"{n:,} series: the very first scrape (renders, then gzips)",
                first * 1000,
                None,
                None,
                f"{plain / 1e6:.1f} MB, gzip {zipped / 1e6:.1f} MB",
            ],
            [
                f"{n:,} series: each interval's post (state update, delivery thread)",
                median(posts) * 1000,
                None,
                None,
                "",
            ],
            [f"{n:,} series: rendering it again, with gzip (renderer thread)", median(renders) * 1000, None, None, ""],
            [f"{n:,} series: scrape GET /metrics, OpenMetrics", median(identity) * 1000, None, None, ""],
            [f"{n:,} series: scrape GET /metrics, OpenMetrics, gzip", median(gzipped) * 1000, None, None, ""],
        ]
    finally:
        destination.close()


def memory_rows(n: int) -> list[list]:
    """Bytes a series costs in each destination's own state (tracemalloc, after 3 intervals)."""
    summaries = make_summaries(n)
    rows = []
    for what, make in (
        ("Prometheus state (totals, buckets, last summary)", lambda: PrometheusState()),
        ("OTLP mapper (prototype points; delta)", lambda: OtlpMapper()),
    ):
        tracemalloc.start()
        holder = make()
        for i in range(3):
            batch = [dict(s) for s in summaries]
            if isinstance(holder, PrometheusState):
                holder.update(batch)
            else:
                holder.requests(START + 60 * i, END + 60 * i, batch)
            del batch
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        rows.append([f"memory, {n:,} series: {what}", None, None, None, f"{held / n:,.0f} B/series"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer series and repeats")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7
    sizes = (1_000,) if args.quick else (1_000, 10_000)
    big = 10_000 if args.quick else 100_000
    print(f"# Export costs ({machine()})\n")
    rows = []
    for n in sizes:
        rows += otlp_rows(n, repeat)
    for n in sizes:
        rows += prometheus_rows(n, repeat)
    for n in sizes:
        rows += remote_write_rows(n, repeat)
    rows += memory_rows(sizes[-1])
    print(table(["what", "Zibrato ms per 1,000 series", "peer ms", "ratio", "size"], rows))
    scrapes = scrape_rows(big, 3)
    print("\n" + table(["scrape target", "ms", "", "", "size"], scrapes))
    rows += scrapes
    print(
        "\nPeers: OTLP, serialising the already built request (the floor: what the mapping adds); "
        "Prometheus, prometheus_client's own Counter/Gauge/Histogram holding the same series, "
        "rendered by the same generate_latest (the protobuf exposition and remote write, which "
        "prometheus_client cannot do, beside its text exposition of the same series)."
    )
    save_json("export", rows)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
