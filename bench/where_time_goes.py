"""Where the time goes, for the targets the benchmarks can miss.

    bench/.venv/bin/python bench/where_time_goes.py client   # @z.time_me, piece by piece
    bench/.venv/bin/python bench/where_time_goes.py worker   # cProfile of Worker.ingest, 1-value records
    bench/.venv/bin/python bench/where_time_goes.py sender   # the sender's drain, stage by stage
    bench/.venv/bin/python bench/where_time_goes.py calls    # cProfile of `with z.Time_me` and z.count(...)
    bench/.venv/bin/python bench/where_time_goes.py steady [RATE] [--before DIR]
                                   # @z.time_me at a steady rate: each thread's CPU, the sender's wake by step

(bench/run creates bench/.venv.) ``client``: cProfile cannot see inside a call
of a few hundred ns (its own hook costs more), so the decorator is rebuilt one
piece at a time and each version timed (process CPU time, median of repeats);
the difference between consecutive lines is what that piece costs.
``worker``: cProfile of the ingest path, sorted by own time. ``sender``:
one drain of the sender thread taken apart (popping, grouping, splitting
into messages, msgpack, the PUSH socket), each stage timed alone in the
thread's CPU time, before and after per-run grouping, then a cProfile of
whole drains. ``steady``: one process calling ``@z.time_me`` at a steady
rate (1,000 calls/s by default) for 4 s with a broker up; each thread's CPU
(``/proc/self/task/*/schedstat``) per call, and the sender's CPU per wake
split by step (each step wrapped and timed in the sender thread's CPU
clock); with ``--before DIR``, the same for the client of that checkout.
"""

from __future__ import annotations

import collections
import cProfile
import functools
import glob
import json
import os
import pstats
import subprocess
import sys
import threading
import time
from collections import deque
from time import perf_counter

import _common as c

if os.environ.get("ZIBRATO_BENCH_CLIENT_FROM"):  # a 'before' variant: that checkout's client first
    sys.path.insert(0, os.environ["ZIBRATO_BENCH_CLIENT_FROM"])


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


def calls(n: int = 200_000) -> None:
    """The Python calls inside ``with z.Time_me(...)`` and ``z.count(...)``, by own time.

    cProfile's hook costs more than these calls, so read the call counts and
    the shares, not the absolute times.
    """
    from zibrato import Zibrato

    z = Zibrato("127.0.0.1", 1)  # nothing listens
    z.count("info", "warm")
    statements = {
        "with z.Time_me('info', 'bench.Time_me'): pass": "for _ in range(n):\n"
        "    with z.Time_me('info', 'bench.Time_me'):\n"
        "        pass",
        "z.count('info', 'bench.count')": "for _ in range(n):\n    z.count('info', 'bench.count')",
    }
    for label, code in statements.items():
        compiled = compile(code, label, "exec")
        profile = cProfile.Profile()
        profile.enable()
        exec(compiled, {"z": z, "n": n})
        profile.disable()
        z.flush(10)
        print(f"### cProfile of {n:,} x `{label}`\n")
        print("```")
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(8)
        print("```")
    z.close(timeout=1.0)


def sender(per_drain: int = 10_000, repeats: int = 15) -> None:
    import itertools

    import zmq
    from client_overhead import RegroupingPublisher

    from zibrato import protocol
    from zibrato.buffer import Buffer, Tally
    from zibrato.publisher import Publisher, group, messages
    from zibrato.transport import ZmqTransport

    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    transport = ZmqTransport(f"tcp://127.0.0.1:{port}", 10_000, 1.0, 64 << 20)
    transport.open()

    def empty_pull() -> None:
        while True:
            try:
                pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def per_measurement(fn, make) -> float:
        best = []
        for _ in range(repeats):
            arg = make()
            start = time.thread_time()
            fn(arg)
            best.append(time.thread_time() - start)
            empty_pull()
        return c.median(best) / per_drain * 1e9

    print(f"### The sender's drain, stage by stage ({c.machine()}; {per_drain:,} measurements a drain)\n")
    rows = []
    for n_series in (1, 10, 1000):
        names = [("info", "t", f"bench.s{i}", None, (), None, None) for i in range(n_series)]
        items = [(names[i % n_series], 0.001 * i) for i in range(per_drain)]

        def filled() -> Buffer:
            buffer = Buffer(1 << 20, lambda recorder: None)
            buffer.items.extend(items)
            return buffer

        def pop_one_by_one(buffer: Buffer) -> None:
            pop = buffer.items.popleft
            for _ in range(len(buffer.items)):
                pop()

        def pop_in_c(buffer: Buffer) -> None:
            taken: list = []
            taken.extend(itertools.starmap(buffer.items.popleft, itertools.repeat((), len(buffer.items))))

        def regroup(listed: list) -> None:
            grouped: dict = {}
            for series, value in listed:
                values = grouped.get(series)
                if values is None:
                    grouped[series] = [value]
                else:
                    values.append(value)

        grouped = group(list(items))
        now = time.time()

        def encode(g: dict) -> None:
            for level, records, _size in messages(g, 1000):
                protocol.encode(level, now, records)

        frames = [protocol.encode(level, now, records) for level, records, _ in messages(grouped, 1000)]

        def send(fs: list) -> None:
            for index, frame in enumerate(fs):
                transport.send(frame, index == len(fs) - 1)

        before = Publisher(transport, Tally(), 1000, 1 << 20)
        RegroupingPublisher.install(before)
        after = Publisher(transport, Tally(), 1000, 1 << 20)
        stages = [
            ("pop, one at a time (before)", pop_one_by_one, filled),
            ("pop, in one C-level loop (after)", pop_in_c, filled),
            ("group, a dict lookup per item (before)", regroup, lambda: list(items)),
            ("group, zibrato.sender.group (after)", group, lambda: list(items)),
            ("split into messages + msgpack (both)", encode, lambda: grouped),
            ("PUSH socket send (both)", send, lambda: frames),
            ("whole drain, before", before.drain, filled),
            ("whole drain, after", after.drain, filled),
        ]
        for label, fn, make in stages:
            rows.append([f"{n_series:,} series", label, per_measurement(fn, make)])
    print(c.table(["series, interleaved", "stage", "ns per measurement (thread CPU)"], rows))
    names = [("info", "t", "bench.hot", None, (), None, None)]
    profile = cProfile.Profile()
    publisher = Publisher(transport, Tally(), 1000, 1 << 20)
    buffer = Buffer(1 << 20, lambda recorder: None)
    for _ in range(20):
        buffer.items.extend((names[0], 0.001 * i) for i in range(per_drain))
        profile.enable()
        publisher.drain(buffer)
        profile.disable()
        empty_pull()
    print(f"\n### cProfile of 20 drains of {per_drain:,} measurements of one series (after)\n")
    print("```")
    pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(8)
    print("```")
    transport.close(0)
    pull.close(0)
    context.term()


def _thread_cpu_ns(names: dict[int, str]) -> dict[str, int]:
    """Each thread of this process: its name -> nanoseconds on a CPU so far (schedstat)."""
    out: dict[str, int] = {}
    for task in glob.glob(f"/proc/{os.getpid()}/task/*"):
        tid = int(task.rsplit("/", 1)[1])
        try:
            with open(task + "/comm") as comm, open(task + "/schedstat") as stat:
                name = names.get(tid) or comm.read().strip()
                if name == "python":
                    name = "another Python thread (pyzmq's collector)"
                out[name] = out.get(name, 0) + int(stat.read().split()[0])
        except OSError:
            continue
    return out


def steady_child(port: int, rate: float, seconds: float) -> dict:
    from zibrato import Zibrato, protocol
    from zibrato import buffer as zbuffer
    from zibrato import publisher as zpublisher
    from zibrato import sender as zsender
    from zibrato import transport as ztransport

    spent: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()

    def timed(owner: object, name: str, label: str) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if threading.current_thread().name != "zibrato-sender":
                return original(*args, **kwargs)
            start = time.thread_time_ns()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] += time.thread_time_ns() - start
                calls[label] += 1

        setattr(owner, name, wrapper)

    timed(zbuffer.Buffer, "check", "the bound's check before the drain")
    timed(zbuffer.Buffer, "relax", "the bound's look after the drain")
    timed(zbuffer.Buffer, "take_lanes", "take the lanes' values")
    timed(zpublisher, "group", "group the shared queue per series")
    timed(zpublisher.Publisher, "drain", "the whole drain")
    timed(protocol, "encode", "msgpack encoding")
    timed(ztransport.ZmqTransport, "send", "hand the frame to ZeroMQ")
    timed(ztransport.ZmqTransport, "tick", "the broker link's check (after the drain)")
    timed(zsender.Sender, "_wait", "the sleep and its wake-up (the queue's get)")
    z = Zibrato("127.0.0.1", port)
    work = z.time_me("info", "bench.where")(lambda: None)
    period = 1.0 / rate
    for _ in range(int(rate * 0.3)):
        work()
        time.sleep(period)
    z.flush(5)
    spent.clear()
    calls.clear()
    sender = z._sender
    clock = time.pthread_getcpuclockid(sender.ident)
    names = {threading.get_native_id(): "the calling thread (the loop and the call)"}
    names[sender.native_id] = "Zibrato's sender"  # type: ignore[index]
    sender_start, before = time.clock_gettime(clock), _thread_cpu_ns(names)
    n = int(rate * seconds)
    due = time.perf_counter()
    for _ in range(n):
        work()
        due += period
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    z.flush(5)
    after = _thread_cpu_ns(names)
    wakes = max(1, calls["the whole drain"])
    return {
        "calls": n,
        "threads": {k: (v - before.get(k, 0)) / n / 1e3 for k, v in after.items() if v - before.get(k, 0) > 0},
        "sender_per_wake": (time.clock_gettime(clock) - sender_start) * 1e6 / wakes,
        "steps_per_wake": {k: v / 1e3 / wakes for k, v in spent.items()},
        "wakes": wakes,
    }


def steady(rate: float = 1000.0, before: str | None = None, seconds: float = 4.0) -> None:
    base = c.free_port_run(3)
    broker = c.start("zibrato-broker", "--port", base, "--status-port", 0, "--startup-grace", 0.1)
    try:
        time.sleep(0.5)
        print(f"### Where each microsecond goes: `@z.time_me` at {rate:,.0f} calls/s ({c.machine()})\n")
        for label, path in [("after", None)] + ([("before", before)] if before else []):
            env = dict(os.environ)
            if path:
                env["ZIBRATO_BENCH_CLIENT_FROM"] = path
            args = [sys.executable, __file__, "steady-child", str(base), str(rate), str(seconds)]
            done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
            if done.returncode:
                raise RuntimeError(done.stderr[-2000:])
            out = json.loads(done.stdout.strip().splitlines()[-1])
            rows = [[name, us] for name, us in sorted(out["threads"].items(), key=lambda kv: -kv[1])]
            print(f"#### {label}: each thread's CPU per call ({out['wakes']} sender wakes)\n")
            print(c.table(["thread", "us per call"], rows))
            steps = [["the sender thread, all in", out["sender_per_wake"]]]
            steps += [[k, v] for k, v in sorted(out["steps_per_wake"].items(), key=lambda kv: -kv[1])]
            print(f"\n#### {label}: the sender's CPU per wake, by step (steps nest: the drain holds the rest)\n")
            print(c.table(["step", "us per wake"], steps))
            print()
    finally:
        c.stop(broker)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "client"
    if which == "sender" and len(sys.argv) > 2:  # measurements per drain: sender 250
        sender(int(sys.argv[2]), repeats=101)
    elif which == "steady-child":
        print(json.dumps(steady_child(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))))
    elif which == "steady":
        rest = sys.argv[2:]
        before_dir = rest[rest.index("--before") + 1] if "--before" in rest else None
        numbers = [a for a in rest if a.replace(".", "").isdigit()]
        steady(float(numbers[0]) if numbers else 1000.0, before_dir)
    else:
        {"client": client, "worker": worker, "sender": sender, "calls": calls}[which]()
