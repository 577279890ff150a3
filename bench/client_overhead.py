"""Client overhead: ns added to a no-op call by Zibrato and by the libraries users would otherwise pick.

Run through ``bench/run client [--quick]``. Every instrument is measured in the
same process, with repeats interleaved across instruments (so a noisy moment of
the shared machine hits all of them), in two conditions:

* **up**: a real ``zibrato-broker`` subprocess (no worker: the broker drops
  what it publishes), and for the UDP peers a subprocess that binds the UDP
  port and drains it;
* **down**: nothing listens on any of the ports.

and two call patterns:

* **tight**: a ``timeit`` loop of back-to-back calls (with the garbage
  collector on, as in an application; ``timeit`` turns it off by default), timed as the
  *process's* CPU time (``time.process_time``: every thread, so Zibrato's
  sender thread, libzmq's I/O thread and DogStatsd's flush thread count), plus
  flushing what the library still held at the end of the loop;
* **spaced**: one call every ~200 us (busy-wait on ``perf_counter`` between
  calls, as an application doing work between measurements); only the call
  itself is timed, with a ``perf_counter`` pair around it (a vDSO read, no
  system call: a ``thread_time`` pair would cost a system call each side and
  run the measured code with cold caches); windows over 50 us (the OS or
  another thread took the CPU inside it) are left out of the mean and counted. What the library does *outside* the call,
  in its own threads, is reported separately as "background CPU": the
  process's CPU time minus the calling thread's, per call, including the
  final flush.

CPU time rather than wall time because the machine is shared: wall time
charges other tenants' load to whichever library happened to be running.
(Other tenants still slow everything through shared caches and cores, so
compare the ratios, which come from the same moments, rather than absolute ns.)

A last section, "threads flat out", runs four threads calling ``@z.time_me``
back to back (broker up and down) and reports the worst single call, the
RSS growth and the most measurements queued at once: the client's bound
(issue 11), beside the same loop around a bare ``noop()``.

Then the sender thread's CPU per measurement beside the floor of a Python
sender (``sender_cost.py``) and the all-in table at a steady rate
(``steady_rate.py``: each variant its own process at 100 / 1,000 / 10,000
calls/s, a round's variants side by side, against a control process, and an
idle client's CPU per second); ``--before DIR`` compares both with the client
of an earlier checkout, and ``--only tight|sender|bound|steady`` runs one
section alone.

Overhead = instrumented statement - baseline statement (``noop()`` for a
decorated function or a ``with`` block around ``noop()``, ``pass`` for a
direct call such as ``z.gauge(...)``). Each figure is the median of the
repeats.

The full run ends with bench/otel.py's section (issue 26): ``zibrato.otel``'s
``Counter.add`` and ``Histogram.record`` beside the OpenTelemetry SDK's (in-memory
reader) and beside ``z.count``, measured in this same run.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import timeit
from array import array
from dataclasses import dataclass

import _common as c
import otel  # bench/otel.py: zibrato.otel beside the OpenTelemetry SDK, printed after this run's tables

if os.environ.get("ZIBRATO_BENCH_CLIENT_FROM"):  # measure an earlier checkout's client (before/after)
    sys.path.insert(0, os.environ["ZIBRATO_BENCH_CLIENT_FROM"])

import sender_cost
import steady_rate

GAP = 200e-6  # seconds between spaced calls
OUTLIER = 50e-6  # a spaced window longer than this was interrupted


@dataclass(frozen=True)
class Case:
    key: str
    library: str
    label: str
    stmt: str
    baseline: str  # "noop()" or "pass"


CASES = [
    Case("bare", "-", "bare `noop()` call (absolute ns, not overhead)", "noop()", "pass"),
    Case("z.time_me", "zibrato", "`@z.time_me`", "z_time_me()", "noop()"),
    Case("z.count_me", "zibrato", "`@z.count_me`", "z_count_me()", "noop()"),
    Case(
        "z.Time_me",
        "zibrato",
        "`with z.Time_me(...)`",
        "with z.Time_me('info', 'bench.Time_me'):\n    noop()",
        "noop()",
    ),
    Case("z.gauge", "zibrato", "`z.gauge(...)`", "z.gauge('info', 'bench.gauge', 1.5)", "pass"),
    Case("z.count", "zibrato", "`z.count(...)`", "z.count('info', 'bench.count')", "pass"),
    Case("prom.hist", "prometheus_client", "`@Histogram.time()`", "prom_hist_time()", "noop()"),
    Case("prom.inc", "prometheus_client", "`Counter.inc()`", "prom_counter.inc()", "pass"),
    Case("pystatsd.timer", "statsd (pystatsd)", "`@StatsClient.timer`", "pystatsd_timer()", "noop()"),
    Case("pystatsd.incr", "statsd (pystatsd)", "`StatsClient.incr`", "pystatsd.incr('bench.incr')", "pass"),
    Case("dd.timed", "DogStatsd default", "`@timed`", "dd_timed()", "noop()"),
    Case("dd.increment", "DogStatsd default", "`increment`", "dd.increment('bench.incr')", "pass"),
    Case("ddba.timed", "DogStatsd buffer+aggregation", "`@timed`", "ddba_timed()", "noop()"),
    Case("ddba.increment", "DogStatsd buffer+aggregation", "`increment`", "ddba.increment('bench.incr')", "pass"),
    Case("ddbas.timed", "DogStatsd buffer+aggregation+timer samples", "`@timed`", "ddbas_timed()", "noop()"),
]
BASELINES = {"noop()": "bare", "pass": "empty"}
TIMER_PEERS = ["prom.hist", "pystatsd.timer", "dd.timed", "ddba.timed", "ddbas.timed"]
COUNTER_PEERS = ["prom.inc", "pystatsd.incr", "dd.increment", "ddba.increment"]

DRAIN = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    print("ready", flush=True)
    buf = bytearray(65536)
    while True:
        s.recv_into(buf)
""")


def noop():
    pass


def build(zport: int, udp_port: int) -> tuple[dict, list]:
    """The namespace the statements run in: one client of each library, decorated no-ops."""
    from datadog.dogstatsd import DogStatsd
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from statsd import StatsClient

    from zibrato import Zibrato

    z = Zibrato("127.0.0.1", zport)
    registry = CollectorRegistry()
    prom_hist = Histogram("bench_hist_seconds", "bench", registry=registry)
    pystatsd = StatsClient("127.0.0.1", udp_port)
    dd = DogStatsd(host="127.0.0.1", port=udp_port)
    ddba = DogStatsd(host="127.0.0.1", port=udp_port, disable_buffering=False, disable_aggregation=False)
    # Timers (histogram/distribution/timing) are aggregated client-side only when
    # max_metric_samples_per_context > 0 (datadog 0.56 base.py timing()); otherwise buffered.
    ddbas = DogStatsd(
        host="127.0.0.1",
        port=udp_port,
        disable_buffering=False,
        disable_aggregation=False,
        max_metric_samples_per_context=1000,
    )
    ns = {
        "noop": noop,
        "z": z,
        "z_time_me": z.time_me("info", "bench.time_me")(noop),
        "z_count_me": z.count_me("info", "bench.count_me")(noop),
        "prom_hist_time": prom_hist.time()(noop),
        "prom_counter": Counter("bench_total", "bench", registry=registry),
        "pystatsd": pystatsd,
        "pystatsd_timer": pystatsd.timer("bench.timer")(noop),
        "dd": dd,
        "dd_timed": dd.timed("bench.timed")(noop),
        "ddba": ddba,
        "ddba_timed": ddba.timed("bench.timed")(noop),
        "ddbas": ddbas,
        "ddbas_timed": ddbas.timed("bench.timed")(noop),
    }
    return ns, [z, pystatsd, dd, ddba, ddbas]


def close(clients: list) -> None:
    z, pystatsd, *dds = clients
    z.close(timeout=2.0)
    pystatsd.close()
    for d in dds:
        d.flush()  # stops nothing; the flush threads are daemons
        d.close_socket()


SPACED = """
def spaced(_n, _gap, _limit, _pc, _tt, _pt):
    total = 0.0
    kept = 0
    cpu0, thread0 = _pt(), _tt()
    for _ in range(_n):
        _next = _pc() + _gap
        while _pc() < _next:
            pass
        _t0 = _pc()
        {stmt}
        _dt = _pc() - _t0
        if _dt < _limit:
            total += _dt
            kept += 1
    background = (_pt() - cpu0) - (_tt() - thread0)
    return total / max(kept, 1), _n - kept, background / _n
"""


def compile_spaced(stmt: str, ns: dict):
    code = SPACED.format(stmt=textwrap.indent(stmt, " " * 8).lstrip())
    local: dict = {}
    exec(code, ns, local)
    return local["spaced"]


FINISH = {
    "zibrato": "z.flush(10.0)",
    "DogStatsd buffer+aggregation": "ddba.flush_aggregated_metrics(); ddba.flush()",
    "DogStatsd buffer+aggregation+timer samples": "ddbas.flush_aggregated_metrics(); ddbas.flush()",
}
SETTLE = "z.flush(10.0)\nfor _d in (dd, ddba, ddbas):\n    _d.flush_aggregated_metrics(); _d.flush()"


def measure(ns: dict, repeats: int, tight_n: int, spaced_n: int) -> dict:
    """{key: {"tight": [s per call...], "spaced": [...], "outliers": [...], "background": [...]}}

    Whatever a library left queued for its background thread at the end of a
    run is flushed inside the measurement ("finish"): in the tight loop its
    time counts, in the spaced loop its CPU counts as background. Before each
    run every client is flushed outside the measurement ("settle"), so that no
    run pays for the previous one.
    """
    cases = {case.key: (case.stmt, FINISH.get(case.library, "pass")) for case in CASES}
    cases["empty"] = ("pass", "pass")
    settle = compile(SETTLE, "settle", "exec")
    runners = {}
    for key, (stmt, finish) in cases.items():
        # timeit turns the garbage collector off; applications run with it on, and Zibrato's
        # queue relies on it to switch to its counting recorder before it fills (zibrato.sender.Buffer)
        tight = timeit.Timer(stmt + "\n", setup="import gc; gc.enable()", globals=ns)
        finish_code = compile(finish, key + "-finish", "exec")
        runners[key] = (tight, compile_spaced(stmt, ns), finish_code)
        exec(compile(stmt, key, "exec"), ns)  # first call: starts senders, validates
    results = {key: {"tight": [], "spaced": [], "outliers": [], "background": []} for key in runners}
    pc, tt, pt = time.perf_counter, time.thread_time, time.process_time
    for key, (tight, spaced, finish) in runners.items():  # warm up
        tight.timeit(min(tight_n, 5000))
        spaced(min(spaced_n, 50), GAP, OUTLIER, pc, tt, pt)
    for _ in range(repeats):
        for key, (tight, spaced, finish) in runners.items():
            exec(settle, ns)
            gc.collect()
            start = pt()
            tight.timeit(tight_n)
            exec(finish, ns)
            results[key]["tight"].append((pt() - start) / tight_n)
    for _ in range(repeats):
        for key, (tight, spaced, finish) in runners.items():
            exec(settle, ns)
            gc.collect()
            mean, outliers, background = spaced(spaced_n, GAP, OUTLIER, pc, tt, pt)
            cpu = pt()
            exec(finish, ns)
            background += (pt() - cpu) / spaced_n
            results[key]["spaced"].append(mean)
            results[key]["outliers"].append(outliers)
            results[key]["background"].append(background)
    return results


def overheads(results: dict) -> dict:
    """{key: {"tight": ns, "spaced": ns, "background": ns, "outliers": n}} from the medians."""
    med = {key: {k: c.median(v) for k, v in r.items()} for key, r in results.items() if not key.startswith("_")}
    out = {}
    for case in CASES:
        base = med[BASELINES[case.baseline]]
        mine = med[case.key]
        out[case.key] = {
            "tight": (mine["tight"] - base["tight"]) * 1e9,
            "spaced": (mine["spaced"] - base["spaced"]) * 1e9,
            "background": max(mine["background"] - base["background"], 0.0) * 1e9,
            "outliers": sum(results[case.key]["outliers"]),
        }
    return out


def run_condition(condition: str, repeats: int, tight_n: int, spaced_n: int) -> dict:
    base = c.free_port_run(3)
    zport, udp_port = base, base + 2  # base+1 is the broker's PUB; its status port is off
    daemons = []
    try:
        if condition == "up":
            broker = c.start("zibrato-broker", "--port", zport, "--status-port", 0, "--startup-grace", 0.1)
            daemons.append(broker)
            drain = subprocess.Popen(
                [sys.executable, "-c", DRAIN, str(udp_port)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
            )
            daemons.append(drain)
            drain.stdout.readline()
            time.sleep(0.5)  # the broker's start-up grace, and its PULL bound
            if broker.poll() is not None:
                raise RuntimeError("zibrato-broker exited at start")
        ns, clients = build(zport, udp_port)
        try:
            results = measure(ns, repeats, tight_n, spaced_n)
        finally:
            z = clients[0]
            z.flush(2.0)
            results["_zibrato"] = {"sent": z.sent, "dropped": z.dropped}
            close(clients)
        return results
    finally:
        for daemon in daemons:
            c.stop(daemon)


FLAT_OUT_THREADS = 4


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def flat_out(condition: str, seconds: float) -> dict:
    """Four threads call ``@z.time_me`` back to back for ``seconds``; each call timed alone.

    The worst single call (and the 99.99th percentile) is what an application
    thread can wait in one measurement; the same loop around a bare ``noop()``
    in the same conditions shows what the GIL alone costs (a thread waits up to
    the switch interval, 5 ms, for its turn, whatever it calls). Also the RSS
    growth, the most measurements queued at once, and what was sent and dropped.
    """
    from zibrato import Zibrato

    base = c.free_port_run(3)
    daemons = []
    if condition == "up":
        daemons.append(c.start("zibrato-broker", "--port", base, "--status-port", 0, "--startup-grace", 0.1))
        time.sleep(0.5)
    try:
        z = Zibrato("127.0.0.1", base)
        timed = z.time_me("info", "bench.flat_out")(noop)
        out = {}
        for label, call in (("bare noop()", noop), ("@z.time_me", timed)):
            call()
            rss0 = rss_bytes()
            durations = [array("d") for _ in range(FLAT_OUT_THREADS)]  # 8 bytes a call, no objects
            highest = [0]
            stop = threading.Event()

            def loop(mine: array, call=call) -> None:
                pc = time.perf_counter
                append = mine.append
                while not stop.is_set():
                    for _ in range(1000):
                        t0 = pc()
                        call()
                        append(pc() - t0)

            def watch() -> None:
                while not stop.is_set():
                    highest[0] = max(highest[0], z.queued)
                    stop.wait(0.002)

            threads = [threading.Thread(target=loop, args=(d,)) for d in durations]
            threads.append(threading.Thread(target=watch))
            for thread in threads:
                thread.start()
            time.sleep(seconds)
            stop.set()
            for thread in threads:
                thread.join()
            rss1 = rss_bytes() - 8 * sum(len(d) for d in durations)
            everything = sorted(x for d in durations for x in d)
            z.flush(10)
            out[label] = {
                "calls": len(everything),
                "max": everything[-1],
                "p99_99": everything[int(len(everything) * 0.9999)],
                "median": everything[len(everything) // 2],
                "rss_growth": rss1 - rss0,  # less the timings themselves
                "queued_max": highest[0],
            }
            del durations, everything
        out["_zibrato"] = {"sent": z.sent, "dropped": z.dropped, "max_queue": z.max_queue}
        z.close(timeout=2.0)
        return out
    finally:
        for daemon in daemons:
            c.stop(daemon)


def flat_out_report(results: dict, seconds: float) -> str:
    rows = []
    for cond, out in results.items():
        for label in ("bare noop()", "@z.time_me"):
            r = out[label]
            rows.append(
                [
                    f"broker {cond}",
                    label,
                    f"{r['calls']:,}",
                    f"{r['median'] * 1e9:,.0f}",
                    f"{r['p99_99'] * 1e6:,.0f}",
                    f"{r['max'] * 1e3:,.2f}",
                    f"{max(r['rss_growth'], 0) / 1e6:,.1f}",
                    f"{r['queued_max']:,}" if label != "bare noop()" else "",
                ]
            )
        zr = out["_zibrato"]
        rows.append(
            [
                f"broker {cond}",
                "zibrato totals",
                "",
                "",
                "",
                "",
                "",
                f"sent {zr['sent']:,}, dropped {zr['dropped']:,} (queue bound {zr['max_queue']:,})",
            ]
        )
    headers = [
        "condition",
        "call",
        "calls",
        "median (ns)",
        "p99.99 (us)",
        "worst single call (ms)",
        "RSS growth (MB)",
        "most queued at once",
    ]
    return "\n".join(
        [
            f"### {FLAT_OUT_THREADS} threads flat out for {seconds:g} s (the client's bound)",
            "",
            c.table(headers, rows),
            "",
            "Each call timed alone with perf_counter (wall time, so a thread that waits for the "
            "GIL in the middle of a call counts the wait). The bare noop() rows are the GIL's own "
            "share: a worst call of a few ms is the 5 ms switch interval, for any code.",
            "",
        ]
    )


# --- the sender thread's CPU per measurement -------------------------------------------


class RegroupingPublisher:
    """The publisher's drain as it was before per-run grouping (2026-12-01), for before/after.

    Every ``(series, value)`` item popped and regrouped one at a time by a
    Python loop (a dict lookup, which hashes the 7-tuple series, per item).
    """

    @staticmethod
    def install(publisher) -> None:
        publisher.drain = functools.partial(RegroupingPublisher.drain, publisher)

    @staticmethod
    def drain(self, buffer) -> None:
        items = buffer.items
        count = len(items)
        if not count:
            return
        pop = items.popleft
        grouped: dict = {}
        try:
            for _ in range(count):
                series, value = pop()
                values = grouped.get(series)
                if values is None:
                    grouped[series] = [value]
                else:
                    values.append(value)
        except IndexError:
            pass
        self._publish_grouped(grouped)


# --- the worst single call while the broker is down and the queue is full --------------


def similar() -> None:
    """A call without Zibrato that costs about what a refused ``@z.time_me`` costs (a control)."""
    for _ in range(16):
        pass


def at_bound(seconds: float) -> dict:
    """Broker down, sender stalled (interval of an hour), queue full: every call is refused and counted.

    One thread, then four, each timing every call alone (perf_counter pair);
    the same loops around a bare ``noop()`` show what the GIL and the OS cost
    any code. Reports the worst call, the 99.99th percentile and the median.
    """
    from zibrato import Zibrato

    port = c.free_port_run(1)  # nothing listens
    z = Zibrato("127.0.0.1", port, interval=3600, max_queue=100_000)
    timed = z.time_me("info", "bench.at_bound")(noop)
    timed()  # starts the sender, which hooks its early wake to the buffer
    # A stalled sender: no early wake for a burst either (it would drain the queue into ZeroMQ,
    # whose byte bound then drops instead), so every call below meets the full queue's refusal.
    z._buffer.on_filling = None
    for _ in range(z.max_queue + 10_000):
        timed()
    assert z.queued >= z.max_queue, f"queue not full: {z.queued}"
    out = {}
    for threads in (1, FLAT_OUT_THREADS):
        for label, call in (
            ("bare noop()", noop),
            ("plain Python call of similar cost", similar),
            ("@z.time_me", timed),
        ):
            refused = z.dropped
            durations = [array("d") for _ in range(threads)]
            stop = threading.Event()

            def loop(mine: array, call=call) -> None:
                pc = time.perf_counter
                append = mine.append
                while not stop.is_set():
                    for _ in range(1000):
                        t0 = pc()
                        call()
                        append(pc() - t0)

            workers = [threading.Thread(target=loop, args=(d,)) for d in durations]
            for worker in workers:
                worker.start()
            time.sleep(seconds)
            stop.set()
            for worker in workers:
                worker.join()
            everything = sorted(x for d in durations for x in d)
            out[f"{threads} thread{'s' if threads > 1 else ''}, {label}"] = {
                "calls": len(everything),
                "max": everything[-1],
                "p99_9": everything[int(len(everything) * 0.999)],
                "p99_99": everything[int(len(everything) * 0.9999)],
                "median": everything[len(everything) // 2],
                "refused": z.dropped - refused,
                "queued": z.queued,
            }
            del durations, everything
    out["_zibrato"] = {"max_queue": z.max_queue, "dropped": z.dropped}
    z.close(timeout=2.0)
    return out


def at_bound_report(results: dict, seconds: float) -> str:
    rows = [
        [
            label,
            f"{r['calls']:,}",
            f"{r['median'] * 1e9:,.0f}",
            f"{r['p99_9'] * 1e6:,.1f}",
            f"{r['p99_99'] * 1e6:,.1f}",
            f"{r['max'] * 1e6:,.0f}",
            f"{r['refused']:,}" if "time_me" in label else "",
            f"{r['queued']:,}",
        ]
        for label, r in results.items()
        if not label.startswith("_")
    ]
    return "\n".join(
        [
            f"### Worst single call, broker down and the queue full ({seconds:g} s per row)",
            "",
            c.table(
                [
                    "threads, call",
                    "calls",
                    "median (ns)",
                    "p99.9 (us)",
                    "p99.99 (us)",
                    "worst single call (us)",
                    "refused and counted",
                    "queued",
                ],
                rows,
            ),
            "",
            f"The sender is held (an interval of an hour) after {results['_zibrato']['max_queue']:,} "
            "measurements filled the queue, so every call takes the guarded path and is refused "
            "(dropped and counted). Wall time per call; with four threads a call can wait for the GIL "
            "(the bare noop() rows show that share). The plain call of similar cost is the control for "
            "the tail: a call that lasts longer is hit more often by the OS (timer ticks, other "
            "tenants' processes), whatever it does.",
            "",
        ]
    )


def report(all_results: dict, conditions: list[str]) -> str:
    ov = {cond: overheads(all_results[cond]) for cond in conditions}
    cols = [(cond, mode) for mode in ("tight", "spaced") for cond in conditions]
    headers = (
        ["library", "call"]
        + [f"{mode}, broker {cond} (ns)" for cond, mode in cols]
        + [f"background CPU, spaced, {cond} (ns/call)" for cond in conditions]
    )
    rows = []
    for case in CASES:
        if case.key == "bare":
            med = {
                cond: {m: c.median(all_results[cond]["bare"][m]) * 1e9 for m in ("tight", "spaced")}
                for cond in conditions
            }
            rows.append(
                [case.library, case.label] + [med[cond][mode] for cond, mode in cols] + ["" for _ in conditions]
            )
            continue
        rows.append(
            [case.library, case.label]
            + [ov[cond][case.key][mode] for cond, mode in cols]
            + [ov[cond][case.key]["background"] for cond in conditions]
        )
    out = ["### Overhead per call (ns added to the call; median of repeats)", "", c.table(headers, rows), ""]

    def ratio_rows(mine: str, peers: list[str]):
        label = {case.key: f"{case.library} {case.label}" for case in CASES}
        for peer in peers:
            cells = []
            for cond, mode in cols:
                a, b = ov[cond][mine][mode], ov[cond][peer][mode]
                cells.append(f"{a / b:.2f}x" if b > 0 else "-")
            yield [f"{label[mine]} / {label[peer]}"] + cells

    rheaders = ["ratio (zibrato overhead / peer overhead; < 1 is cheaper)"] + [f"{mode}, {cond}" for cond, mode in cols]
    rrows = (
        list(ratio_rows("z.time_me", TIMER_PEERS))
        + list(ratio_rows("z.count_me", COUNTER_PEERS))
        + list(ratio_rows("z.count", COUNTER_PEERS))
    )
    out += ["### Ratios", "", c.table(rheaders, rrows), ""]

    # Targets: @z.time_me <= 1 us; <= 0.6x @Histogram.time(); <= 0.5x DogStatsd @timed buffered+aggregated.
    checks = []
    for cond, mode in cols:
        t = ov[cond]["z.time_me"][mode]
        checks.append((f"@z.time_me <= 1000 ns ({mode}, {cond})", f"{t:.0f} ns", t <= 1000))
        for peer, limit in (("prom.hist", 0.6), ("ddba.timed", 0.5), ("ddbas.timed", 0.5)):
            p = ov[cond][peer][mode]
            ratio = t / p if p > 0 else float("inf")
            checks.append((f"@z.time_me <= {limit}x {peer} ({mode}, {cond})", f"{ratio:.2f}x", ratio <= limit))
    # Issue 16: @z.time_me <= 400 ns tight, spaced <= 1.5x that (600 ns); with z.Time_me <= 800 ns;
    # z.count(...) no slower than prometheus_client's Counter.inc().
    for cond in conditions:
        o = ov[cond]
        tight, spaced = o["z.time_me"]["tight"], o["z.time_me"]["spaced"]
        checks.append((f"issue 16: @z.time_me <= 400 ns (tight, {cond})", f"{tight:.0f} ns", tight <= 400))
        checks.append(
            (
                f"issue 16: @z.time_me spaced <= 600 ns (1.5x 400; {cond})",
                f"{spaced:.0f} ns ({spaced / tight:.2f}x tight)",
                spaced <= 600,
            )
        )
        for mode in ("tight", "spaced"):
            t = o["z.Time_me"][mode]
            checks.append((f"issue 16: with z.Time_me <= 800 ns ({mode}, {cond})", f"{t:.0f} ns", t <= 800))
        for mode in ("tight", "spaced"):
            a, b = o["z.count"][mode], o["prom.inc"][mode]
            ratio = a / b if b > 0 else float("inf")
            checks.append(
                (
                    f"issue 16: z.count <= 1.0x Counter.inc ({mode}, {cond})",
                    f"{ratio:.2f}x ({a:.0f} / {b:.0f} ns)",
                    ratio <= 1.0,
                )
            )
    out += [
        "### Targets",
        "",
        c.table(["target", "measured", "met"], [[a, b, "yes" if ok else "**no**"] for a, b, ok in checks]),
        "",
    ]
    notes = []
    for cond in conditions:
        zr = all_results[cond]["_zibrato"]
        notes.append(f"broker {cond}: zibrato client sent {zr['sent']:,}, dropped {zr['dropped']:,} measurements")
        heavy = {k: v["outliers"] for k, v in ov[cond].items() if v["outliers"]}
        if heavy:
            notes.append(
                f"broker {cond}: spaced windows > 50 us left out (all repeats): "
                + ", ".join(f"{k} {n}" for k, n in heavy.items())
            )
    out += ["Notes: " + "; ".join(notes), ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (a few minutes)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--conditions", default="up,down")
    parser.add_argument(
        "--only",
        choices=["tight", "sender", "bound", "steady"],
        help="just one section (tight: the tight and spaced tables; steady: all-in at a steady rate)",
    )
    parser.add_argument(
        "--before", help="a checkout of an earlier commit: the steady-rate and sender sections compare with its client"
    )
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    tight_n, spaced_n = (10_000, 200) if args.quick else (200_000, 2_000)
    conditions = args.conditions.split(",")
    if args.only == "tight":
        print(f"## Client overhead (tight and spaced only)\n\n{c.machine()}\n")
        results = {cond: run_condition(cond, repeats, tight_n, spaced_n) for cond in conditions}
        return print(report(results, conditions))
    if args.only:
        return only(args.only, args.quick, args.before)
    print(
        f"## Client overhead\n\n{c.machine()}; {repeats} repeats of {tight_n:,} tight calls and "
        f"{spaced_n:,} calls spaced {GAP * 1e6:.0f} us apart, per instrument and condition.\n"
    )
    all_results = {}
    for cond in conditions:
        all_results[cond] = run_condition(cond, repeats, tight_n, spaced_n)
    seconds = 2.0 if args.quick else 10.0
    flat = {cond: flat_out(cond, seconds) for cond in conditions}
    all_results["_flat_out"] = flat
    bound_seconds = 1.0 if args.quick else 5.0
    bound = all_results["_at_bound"] = at_bound(bound_seconds)
    c.save_json("client" + ("-quick" if args.quick else ""), all_results)
    print(report(all_results, conditions))
    print(flat_out_report(flat, seconds))
    print(at_bound_report(bound, bound_seconds))
    only("sender", args.quick, args.before)
    only("steady", args.quick, args.before)
    print()
    print(otel.run(args.quick))  # issue 26: the OpenTelemetry SDK's Counter.add and Histogram.record as peers


def only(section: str, quick: bool, before: str | None = None) -> None:
    """One section alone (the README quotes the full run)."""
    if section == "sender":
        repeats = 3 if quick else 5
        out = sender_cost.measure(repeats, 5 if quick else 10, before)
        print(sender_cost.report(out, repeats))
    elif section == "steady":
        seconds, rounds = (2.0, 3) if quick else (6.0, 11)
        out = steady_rate.measure([100.0, 1000.0, 10000.0], seconds, rounds, before)
        c.save_json("steady" + ("-quick" if quick else ""), out)
        print(steady_rate.report(out, seconds, rounds))
    else:
        seconds = 1.0 if quick else 5.0
        print(at_bound_report(at_bound(seconds), seconds))


if __name__ == "__main__":
    main()
