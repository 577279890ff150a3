"""Worker: the aggregation ceiling (measurements/s through the ingest path) and memory for 1M timer values.

Run through ``bench/run worker [--quick]``.

Ingest: pre-encoded protocol v1 frames (``protocol.encode``, as the client
sends them) are fed to ``Worker.ingest(frame)`` of a worker around a ``Console`` (no
sockets involved: decode, validate, ``Aggregator.add``), in four shapes:
counters and timers, records of 1 value (100 distinct series a frame: many
series each measured once per client drain) and of 100 values (10 series a
frame: a hot series measured 100 times per drain). The time is the process's
CPU time; the figure is the median of the repeats. Each repeat starts a new
interval (a flush, not timed) so that timer series do not grow across repeats.

Memory: in a fresh process per case, 1M timer values in one interval, sent as
the client would (records of up to 10,000 values): in one series (past
``max_exact`` = 10,000 values the series becomes a sketch of ~1,000 buckets)
and over 1,000 series of 1,000 values (all kept exactly; each summary still
carries a sketch built at flush). Peak traced Python allocations
(``tracemalloc``) during ingest and flush, the growth of the process's peak
RSS (``VmHWM`` reset just before ingest, minus ``VmRSS`` then), and the flush time (measured again without tracemalloc).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import subprocess
import sys
import time

import _common as c

from zibrato import protocol
from zibrato.backends.console import Console
from zibrato.worker import Worker


def backend() -> Worker:
    return Worker(Console(stream=io.StringIO()), self_level=None, flush_interval=60.0)


def frames(kind: str, per_record: int, series: int, count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        records = []
        for i in range(series):
            if kind == "t":
                values = [rng.random() * 0.1 for _ in range(per_record)]
            else:
                values = [1] * per_record
            records.append((kind, f"bench.{kind}.{i}", values, None, ("host:bench",)))
        out.append(protocol.encode("info", time.time(), records))
    return out


SHAPES = [  # label, type, values per record, records per frame
    ("counters, 1 value per record (100 series per frame)", "c", 1, 100),
    ("counters, 100 values per record (10 series per frame)", "c", 100, 10),
    ("timers, 1 value per record (100 series per frame)", "t", 1, 100),
    ("timers, 100 values per record (10 series per frame)", "t", 100, 10),
]


def ingest_rates(repeats: int, target: int) -> list[dict]:
    results = []
    for label, kind, per_record, series in SHAPES:
        per_frame = per_record * series
        batch = frames(kind, per_record, series, max(1, target // per_frame))
        measurements = len(batch) * per_frame
        b = backend()
        for frame in batch[:20]:  # warm up
            b.ingest(frame)
        b.aggregator.flush(time.time(), 1.0)
        rates, decode_share = [], []
        for _ in range(repeats):
            start = time.process_time()
            for frame in batch:
                b.ingest(frame)
            elapsed = time.process_time() - start
            rates.append(measurements / elapsed)
            b.aggregator.flush(time.time(), 1.0)
            start = time.process_time()
            for frame in batch:
                protocol.decode_plain(frame)  # what ingest decodes with
            decode_share.append((time.process_time() - start) / elapsed)
        assert b.figures_["malformed"] == 0
        results.append(
            {
                "shape": label,
                "rate": c.median(rates),
                "decode_share": c.median(decode_share),
                "measurements": measurements,
            }
        )
    return results


MEMORY_CASES = [
    ("1M timer values, 1 series (sketched past 10,000)", 1, 1_000_000),
    ("1M timer values, 1,000 series x 1,000 (all exact)", 1_000, 1_000),
]


def memory_child(series: int, per_series: int, traced: bool) -> dict:
    """In a fresh process: ingest 1M timer values in one interval, flush; report memory and times."""
    import tracemalloc

    rng = random.Random(2)
    chunk = min(per_series, 10_000)  # the client sends at most `batch` (10,000) values a record
    batch = []
    records = []
    for s in range(series):
        for start in range(0, per_series, chunk):
            records.append(("t", f"bench.t.{s}", [rng.random() for _ in range(chunk)], None, ()))
            if sum(len(r[2]) for r in records) >= 10_000:
                batch.append(protocol.encode("info", time.time(), records))
                records = []
    if records:
        batch.append(protocol.encode("info", time.time(), records))
    b = backend()
    del records
    import gc

    gc.collect()
    reset = _reset_peak_rss()
    rss_before = _status_kb("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if traced:
        tracemalloc.start()
    start = time.process_time()
    for frame in batch:
        b.ingest(frame)
    ingest = time.process_time() - start
    held = b.aggregator.values_held()
    start = time.process_time()
    summaries = b.aggregator.flush(time.time(), 60.0)
    flush = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1] if traced else None
    rss_after = _status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert sum(s["count"] for s in summaries) == series * per_series
    return {
        "ingest_s": ingest,
        "flush_s": flush,
        "traced_peak": peak,
        "values_held": held,
        "rss_growth": (rss_after - rss_before) * 1024,
        "summaries": len(summaries),
    }


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM, so the peak measured is the ingest's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory(repeats: int) -> list[dict]:
    out = []
    for label, series, per_series in MEMORY_CASES:

        def child(traced: bool) -> dict:
            code = (
                f"import sys; sys.path.insert(0, {str(c.BENCH)!r}); import json, worker; "
                f"print(json.dumps(worker.memory_child({series}, {per_series}, {traced})))"
            )
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            return json.loads(done.stdout.splitlines()[-1])

        traced = child(True)
        # quick: the traced run's times (tracemalloc slows them) instead of separate runs
        timed = [child(False) for _ in range(repeats)] if repeats else [traced]
        out.append(
            {
                "case": label,
                "traced_peak": traced["traced_peak"],
                "values_held": traced["values_held"],
                "rss_growth": c.median(t["rss_growth"] for t in timed),
                "flush_s": c.median(t["flush_s"] for t in timed),
                "ingest_rate": c.median(series * per_series / t["ingest_s"] for t in timed),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (a few seconds)")
    args = parser.parse_args()
    repeats, target = (3, 100_000) if args.quick else (7, 1_000_000)
    print(f"## Worker\n\n{c.machine()}; {repeats} repeats of about {target:,} measurements per shape.\n")
    rates = ingest_rates(repeats, target)
    mem = memory(0 if args.quick else 3)
    c.save_json("worker" + ("-quick" if args.quick else ""), {"ingest": rates, "memory": mem})
    print("### Aggregation ceiling (Worker.ingest: decode + validate + aggregate, one core)\n")
    print(
        c.table(
            ["frame shape", "measurements/s", "share of the time in decoding (protocol.decode_plain)"],
            [[r["shape"], r["rate"], f"{r['decode_share']:.0%}"] for r in rates],
        )
    )
    print("\n### 1M timer values in one interval (fresh process per case)\n")
    print(
        c.table(
            [
                "case",
                "ingest (measurements/s)",
                "flush (ms)",
                "values + buckets held",
                "tracemalloc peak (MB)",
                "peak RSS growth (MB)",
            ],
            [
                [
                    m["case"],
                    m["ingest_rate"],
                    m["flush_s"] * 1e3,
                    m["values_held"],
                    m["traced_peak"] / 1e6,
                    m["rss_growth"] / 1e6,
                ]
                for m in mem
            ],
        )
    )
    low = min(rates, key=lambda r: r["rate"])
    met = low["rate"] >= 1_000_000
    print(
        f"\nTarget 'a worker aggregating at least 1M measurements per second': "
        f"{'met in every shape' if met else '**not met** in every shape'} "
        f"(lowest: {low['rate']:,.0f}/s, {low['shape']}).\n"
    )


if __name__ == "__main__":
    main()
