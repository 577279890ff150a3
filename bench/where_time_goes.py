"""Where the time goes, for the targets the benchmarks can miss.

    bench/.venv/bin/python bench/where_time_goes.py client   # @z.time_me, piece by piece
    bench/.venv/bin/python bench/where_time_goes.py worker   # cProfile of Worker.ingest, 1-value records

(bench/run creates bench/.venv.) ``client``: cProfile cannot see inside a call
of a few hundred ns (its own hook costs more), so the decorator is rebuilt one
piece at a time and each version timed (process CPU time, median of repeats);
the difference between consecutive lines is what that piece costs.
``worker``: cProfile of the ingest path, sorted by own time.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from collections import deque
from time import perf_counter

import _common as c


def client(repeats: int = 9, n: int = 300_000) -> None:
    pending = deque()
    append = pending.append
    series = ("info", "t", "bench", None, ())

    def noop():
        pass

    def passthrough(*args, **kwargs):
        return noop(*args, **kwargs)

    def with_finally(*args, **kwargs):
        try:
            return noop(*args, **kwargs)
        finally:
            pass

    def with_clock(*args, **kwargs):
        start = perf_counter()
        try:
            return noop(*args, **kwargs)
        finally:
            perf_counter() - start

    def with_tuple(*args, **kwargs):
        start = perf_counter()
        try:
            return noop(*args, **kwargs)
        finally:
            (series, perf_counter() - start)

    def with_append(*args, **kwargs):  # what Timer._wrap_function builds, minus the indirection
        start = perf_counter()
        try:
            return noop(*args, **kwargs)
        finally:
            append((series, perf_counter() - start))

    from zibrato import Zibrato

    z = Zibrato("127.0.0.1", 1)  # nothing listens: the sender queues, as with the broker down
    real = z.time_me("info", "bench.time_me")(noop)
    real()
    steps = [
        ("bare call noop()", noop),
        ("+ wrapper forwarding *args, **kwargs", passthrough),
        ("+ try/finally", with_finally),
        ("+ two perf_counter() calls and a subtraction", with_clock),
        ("+ building the (series, seconds) tuple", with_tuple),
        ("+ deque.append (the wrapper as written, without the drain)", with_append),
        ("@z.time_me itself (client._record lookup, sender thread draining)", real),
    ]
    times = {label: [] for label, _ in steps}
    for _ in range(repeats):
        for label, func in steps:
            pending.clear()
            start = time.process_time()
            for _ in range(n):
                func()
            z.flush(10.0) if func is real else None
            times[label].append((time.process_time() - start) / n * 1e9)
    rows, previous = [], None
    for label, _ in steps:
        t = c.median(times[label])
        rows.append([label, t, "" if previous is None else t - previous])
        previous = t
    print(f"### @z.time_me piece by piece ({c.machine()})\n")
    print(c.table(["version of the call", "ns per call (CPU)", "added by this piece (ns)"], rows))
    z.close(timeout=1.0)


def worker(n_frames: int = 2_000) -> None:
    import io

    from zibrato import protocol
    from zibrato.backends.console import Console
    from zibrato.worker import Worker

    records = [("t", f"bench.t.{i}", [0.01 * i], None, ("host:bench",)) for i in range(100)]
    frame = protocol.encode("info", time.time(), records)
    backend = Worker(Console(stream=io.StringIO()), self_level=None)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(n_frames):
        backend.ingest(frame)
    profile.disable()
    print(f"### cProfile of Worker.ingest: {n_frames:,} frames of 100 one-value timer records\n")
    print("```")
    stats = pstats.Stats(profile, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(12)
    print("```")


if __name__ == "__main__":
    {"client": client, "worker": worker}[sys.argv[1] if len(sys.argv) > 1 else "client"]()
