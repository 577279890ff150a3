"""Sketches: zibrato.sketch against exact nearest rank, DDSketch, fastdigest (t-digest) and DataSketches KLL.

Run through ``bench/run sketch [--quick]`` (the bench venv has the `bench`
extra: ddsketch, fastdigest, datasketches).

For each distribution of timer-like values (seconds): uniform, lognormal,
bimodal (cache hits and misses) and Pareto (a heavy tail), every method
ingests the values the way the worker receives them, records of 1,000
values, with its fastest Python API (``add`` per value where that is all it
has, a batch call where it has one), then answers p50, p90, p99 and p99.9.
The error is relative to the exact nearest-rank value: ``|estimate - exact|
/ exact``. "Merged from 8": the records dealt round-robin to 8 sketches (8
workers), merged into one. Time is process CPU time per value ingested (the
median of the repeats); "size" is the sketch's serialized form (zibrato: its
JSON dict form), and "traced" the Python heap it holds (tracemalloc; blind
to memory that C/Rust extensions allocate themselves).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
import tracemalloc
from collections.abc import Callable
from fractions import Fraction

import _common as c

from zibrato.aggregation import Aggregator
from zibrato.sketch import Sketch, relative_error_of

QUANTILES = (0.5, 0.9, 0.99, 0.999)
RECORD = 1_000
WORKERS = 8


def distributions(n: int, seed: int = 7) -> dict[str, list[float]]:
    rng = random.Random(seed)

    def bimodal() -> float:
        if rng.random() < 0.8:
            return max(1e-5, rng.gauss(0.002, 0.0003))  # cache hits, ~2 ms
        return max(1e-5, rng.gauss(0.25, 0.03))  # misses, ~250 ms

    return {
        "uniform 0.1 ms-1 s": [rng.uniform(1e-4, 1.0) for _ in range(n)],
        "lognormal (median 11 ms)": [rng.lognormvariate(-4.5, 1.2) for _ in range(n)],
        "bimodal 2 ms / 250 ms": [bimodal() for _ in range(n)],
        "Pareto a=1.2 from 1 ms": [0.001 * rng.paretovariate(1.2) for _ in range(n)],
    }


def exact_rank(ordered: list[float], q: float) -> float:
    return ordered[max(1, math.ceil(Fraction(repr(q)) * len(ordered))) - 1]


# --- the methods: (make, add a record, merge into, quantile, serialized size) ---------------


class Method:
    name = ""

    def make(self):
        raise NotImplementedError

    def add(self, sketch, record: list[float]) -> None:
        raise NotImplementedError

    def merge(self, into, other):
        raise NotImplementedError

    def quantile(self, sketch, q: float) -> float:
        raise NotImplementedError

    def size(self, sketch) -> int:
        raise NotImplementedError


class Exact(Method):
    name = "exact nearest rank (list + sort)"

    def make(self):
        return []

    def add(self, sketch, record):
        sketch.extend(record)

    def merge(self, into, other):
        into.extend(other)
        return into

    def quantile(self, sketch, q):
        return exact_rank(sketch, q)  # sorted by ingest() or after the merge

    def size(self, sketch):
        return 8 * len(sketch)


class ZibratoWorker(Method):
    name = "zibrato.sketch, as the worker adds (Aggregator)"

    def make(self):
        return Aggregator(max_exact=1)

    def add(self, agg, record):
        agg.add_records((("t", "x", record, None, ()),))

    def _sketch(self, agg) -> Sketch:
        return agg._series[("t", "x", None, ())]

    def merge(self, into, other):
        self._sketch(into).merge(self._sketch(other))
        return into

    def quantile(self, agg, q):
        return self._sketch(agg).quantile(q)

    def size(self, agg):
        return len(json.dumps(self._sketch(agg).to_dict()))

    def scale(self, agg) -> int:
        return self._sketch(agg).scale


class ZibratoAdd(ZibratoWorker):
    name = "zibrato.sketch, Sketch.add per value"

    def make(self):
        return Sketch(max_exact=0)

    def add(self, sketch, record):
        add = sketch.add
        for v in record:
            add(v)

    def _sketch(self, sketch):
        return sketch


class DDSketchMethod(Method):
    name = "ddsketch 3 (pure Python), add per value"

    def make(self):
        from ddsketch import DDSketch

        return DDSketch(relative_accuracy=0.01)

    def add(self, sketch, record):
        add = sketch.add
        for v in record:
            add(v)

    def merge(self, into, other):
        into.merge(other)
        return into

    def quantile(self, sketch, q):
        return sketch.get_quantile_value(q)

    def size(self, sketch):
        store = sketch._store
        return 8 * (len(store.bins) + len(sketch._negative_store.bins))  # its bins as doubles


class FastDigest(Method):
    name = "fastdigest (Rust t-digest), batch_update"

    def make(self):
        from fastdigest import TDigest

        return TDigest()

    def add(self, sketch, record):
        sketch.batch_update(record)

    def merge(self, into, other):
        into.merge_inplace(other)
        return into

    def quantile(self, sketch, q):
        return sketch.quantile(q)

    def size(self, sketch):
        return len(sketch.to_bytes())


class KLL(Method):
    name = "datasketches KLL k=200 (C++), update(numpy array)"

    def make(self):
        from datasketches import kll_floats_sketch

        return kll_floats_sketch(200)

    def add(self, sketch, record):
        import numpy  # a dependency of datasketches; update() per value costs ~10x more

        sketch.update(numpy.array(record))

    def merge(self, into, other):
        into.merge(other)
        return into

    def quantile(self, sketch, q):
        return sketch.get_quantile(q)

    def size(self, sketch):
        return len(sketch.serialize())


METHODS = [Exact(), ZibratoWorker(), ZibratoAdd(), DDSketchMethod(), FastDigest(), KLL()]


def records_of(values: list[float]) -> list[list[float]]:
    return [values[i : i + RECORD] for i in range(0, len(values), RECORD)]


def ingest(method: Method, records: list[list[float]]) -> tuple[object, float]:
    sketch = method.make()
    start = time.process_time()
    for record in records:
        method.add(sketch, record)
    if isinstance(method, Exact):
        sketch.sort()  # the exact method's cost includes its sort
    return sketch, time.process_time() - start


def errors(method: Method, sketch, ordered: list[float]) -> list[float]:
    out = []
    for q in QUANTILES:
        exact = exact_rank(ordered, q)
        out.append(abs(method.quantile(sketch, q) - exact) / exact)
    return out


def traced(make: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del kept
    return held


def run(n: int, repeats: int) -> list[dict]:
    results = []
    for label, values in distributions(n).items():
        ordered = sorted(values)
        records = records_of(values)
        for method in METHODS:
            times = []
            for _ in range(repeats):
                sketch, elapsed = ingest(method, records)
                times.append(elapsed / len(values))
            one = errors(method, sketch, ordered)
            parts = [method.make() for _ in range(WORKERS)]
            for i, record in enumerate(records):
                method.add(parts[i % WORKERS], record)
            merged = parts[0]
            for part in parts[1:]:
                merged = method.merge(merged, part)
            if isinstance(method, Exact):
                merged.sort()
            merged_errors = errors(method, merged, ordered)
            row = {
                "distribution": label,
                "method": method.name,
                "ns_per_value": c.median(times) * 1e9,
                "errors": one,
                "merged_errors": merged_errors,
                "size": method.size(sketch),
            }
            if isinstance(method, ZibratoWorker):
                row["scale"] = method.scale(sketch)
                row["bound"] = relative_error_of(row["scale"])
                row["traced"] = traced(lambda: ingest(method, records)[0])
            if isinstance(method, DDSketchMethod):
                row["traced"] = traced(lambda: ingest(method, records)[0])
            results.append(row)
    return results


def percent(x: float) -> str:
    return f"{x * 100:.3g} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (100,000 values, 1 repeat)")
    args = parser.parse_args()
    n, repeats = (100_000, 1) if args.quick else (1_000_000, 3)
    print(
        f"## Sketches\n\n{c.machine()}; {n:,} values per distribution, records of {RECORD:,}, "
        f"median of {repeats} runs.\n"
    )
    results = run(n, repeats)
    c.save_json("sketch" + ("-quick" if args.quick else ""), results)
    for label in dict.fromkeys(r["distribution"] for r in results):
        rows = [r for r in results if r["distribution"] == label]
        print(f"### {label}\n")
        print(
            c.table(
                ["method", "ns per value", "p50 error", "p90", "p99", "p99.9", "worst, merged from 8", "size (bytes)"],
                [
                    [
                        r["method"],
                        r["ns_per_value"],
                        *map(percent, r["errors"]),
                        percent(max(r["merged_errors"])),
                        r["size"],
                    ]
                    for r in rows
                ],
            )
        )
        print()
    zib = [r for r in results if r["method"] == ZibratoWorker.name]
    print("### zibrato.sketch per series (1 % asked: scale 6, bound 0.54 %)\n")
    print(
        c.table(
            [
                "distribution",
                "scale",
                "bound",
                "worst error (one / merged)",
                "buckets as JSON (bytes)",
                "traced memory (bytes)",
                "ddsketch traced (bytes)",
            ],
            [
                [
                    r["distribution"],
                    r["scale"],
                    percent(r["bound"]),
                    f"{percent(max(r['errors']))} / {percent(max(r['merged_errors']))}",
                    r["size"],
                    r["traced"],
                    next(
                        d["traced"]
                        for d in results
                        if d["distribution"] == r["distribution"] and d["method"] == DDSketchMethod.name
                    ),
                ]
                for r in zib
            ],
        )
    )
    worst = max(max(r["errors"] + r["merged_errors"]) / r["bound"] for r in zib)
    slowest = max(r["ns_per_value"] for r in zib)
    print(
        f"\nzibrato.sketch: every quantile within its bound: {'yes' if worst <= 1 else '**no**'} "
        f"(worst {worst:.0%} of the bound); at most 0.3 us per value in the worker: "
        f"{'met' if slowest <= 300 else '**not met**'} ({slowest:.0f} ns at worst).\n"
    )


if __name__ == "__main__":
    main()
