"""All-in at a steady rate: what one instrument costs a whole process at the rates applications run.

Run through ``bench/run client`` (the "all-in at a steady rate" table) or
alone: ``bench/.venv/bin/python bench/steady_rate.py [--quick] [--seconds S]
[--rounds R] [--rates 100,1000,10000] [--before DIR]``.

Tight loops spread the sender's per-drain and per-wake costs over thousands
of measurements; an application recording a few hundred measurements a
second pays them in full. So each variant runs in **its own process**,
calling one instrument at a steady rate (an absolute schedule: the next call
is due ``1 / rate`` after the previous one was due; the process sleeps in
between) for ``seconds``, with a real ``zibrato-broker`` and a real
``zibrato-console`` worker up. The figure is the process's CPU time
(``time.process_time``: every thread, so the calling thread, Zibrato's
sender, ZeroMQ's I/O thread and pyzmq's collector all count), including the
final ``flush()``, minus that of a **control** process running the same loop
around a plain function, divided by the calls: the CPU each call adds to the
process, all-in.

In each round every variant runs once, **all at the same time** (separate
processes, each paced on its own): at these rates they use a fraction of a
core each, and running together they share the moment's machine (its load,
its caches, the hypervisor's mood), which cancels in (variant - control).
Run one after another (``--apart``, the first method, order rotated from
round to round), the control's own CPU moved by tens of percent from one run
to the next on this VM: at 100 and 1,000 calls/s that was ±10 µs a call,
more than the differences measured. Each figure is the median over rounds of
(variant - control of the same round) / calls. ``--before DIR``
adds Zibrato variants that import the client from DIR (a checkout of an
earlier commit), interleaved in the same rounds.

The **idle** row: a process that records once, flushes, and then records
nothing for ``seconds``: its CPU per second minus the control's (sleeping
the same way, no client), in milliseconds per second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import _common as c

if os.environ.get("ZIBRATO_BENCH_CLIENT_FROM"):  # a '(before)' variant: that checkout's client first
    sys.path.insert(0, os.environ["ZIBRATO_BENCH_CLIENT_FROM"])

#: variant -> (label, the set-up code, the call); the call runs at the steady rate
VARIANTS = {
    "control": ("control: a plain function", "", "noop()"),
    "z.time_me": ("`@z.time_me`", "f = z.time_me('info', 'bench.steady.timer')(noop)", "f()"),
    "z.count": ("`z.count(...)`", "", "z.count('info', 'bench.steady.count')"),
    "prom.hist": ("prometheus_client `@Histogram.time()`", "f = HIST.time()(noop)", "f()"),
    "prom.inc": ("prometheus_client `Counter.inc()`", "", "COUNTER.inc()"),
}
ZIBRATO = ("z.time_me", "z.count")


def noop() -> None:
    pass


def child(variant: str, rate: float, seconds: float, port: int, idle: bool) -> dict:
    """One variant in this process: warm up, then call at ``rate`` for ``seconds``; CPU all-in."""
    namespace: dict = {"noop": noop}
    z = None
    if variant.startswith("z.") or (idle and variant != "control"):
        from zibrato import Zibrato

        z = namespace["z"] = Zibrato("127.0.0.1", port)
    if variant.startswith("prom."):
        import prometheus_client

        registry = prometheus_client.CollectorRegistry()
        namespace["HIST"] = prometheus_client.Histogram("bench_steady_seconds", "bench", registry=registry)
        namespace["COUNTER"] = prometheus_client.Counter("bench_steady", "bench", registry=registry)
    setup, call = VARIANTS[variant][1:]
    exec(setup, namespace)
    loop = compile(
        "def run(calls, period, _pc=_pc, _sleep=_sleep):\n"
        "    due = _pc()\n"
        "    for _ in range(calls):\n"
        f"        {call}\n"
        "        due += period\n"
        "        delay = due - _pc()\n"
        "        if delay > 0:\n"
        "            _sleep(delay)\n",
        "<steady>",
        "exec",
    )
    namespace.update(_pc=time.perf_counter, _sleep=time.sleep)
    exec(loop, namespace)
    run = namespace["run"]
    period = 1.0 / rate
    run(max(10, int(rate * 0.3)), period)  # warm up: the sender started, caches filled
    if z is not None:
        z.flush(5)
    if idle:  # one measurement, then nothing: what an idle client costs
        time.sleep(0.5)  # past the sender's first idle wakes
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        return {"cpu": cpu, "wall": wall, "calls": 0}
    calls = int(rate * seconds)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run(calls, period)
    if z is not None:
        z.flush(5)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    out = {"cpu": cpu, "wall": wall, "calls": calls}
    if z is not None:
        out["sent"], out["dropped"] = z.sent, z.dropped
    return out


def start(variant: str, rate: float, seconds: float, port: int, idle: bool, path: str | None) -> subprocess.Popen:
    """One variant's process, started (:func:`result` waits for it)."""
    env = dict(os.environ)
    if path:
        env["ZIBRATO_BENCH_CLIENT_FROM"] = path
    args = [sys.executable, __file__, "--child", variant, "--rate", str(rate), "--seconds", str(seconds)]
    args += ["--port", str(port)] + (["--idle"] if idle else [])
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(process: subprocess.Popen, seconds: float) -> dict:
    """What a variant's process printed, once it has ended."""
    try:
        stdout, stderr = process.communicate(timeout=seconds * 4 + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    if process.returncode:
        raise RuntimeError(f"{process.args[3]} at {process.args[5]}/s failed: {stderr[-2000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def run_round(
    runs: list[tuple[str, str | None]], rate: float, seconds: float, port: int, idle: bool, together: bool
) -> dict:
    """Each of ``runs`` (name, checkout) once: all at the same time, or one after another."""
    if together:
        started = [(name, start(name.split(" ")[0], rate, seconds, port, idle, path)) for name, path in runs]
        return {name: result(process, seconds) for name, process in started}
    return {name: result(start(name.split(" ")[0], rate, seconds, port, idle, path), seconds) for name, path in runs}


def measure(rates: list[float], seconds: float, rounds: int, before: str | None, together: bool = True) -> dict:
    """Every variant (and, with ``before``, the Zibrato ones from that checkout), interleaved rounds."""
    base = c.free_port_run(3)
    broker = c.start("zibrato-broker", "--port", base, "--status-port", 0, "--startup-grace", 0.1)
    console = c.start("zibrato-console", "--port", base + 1, "--flush", 1.0)
    runs: list[tuple[str, str | None]] = [(v, None) for v in VARIANTS]
    if before:
        runs += [(v + " (before)", before) for v in ZIBRATO]
    loads = []
    try:
        time.sleep(0.5)
        out: dict = {"rates": {}, "idle": {}}
        for rate in rates:
            per = out["rates"][rate] = {name: [] for name, _ in runs}
            for round_ in range(rounds):
                loads.append(os.getloadavg()[0])
                shift = round_ % len(runs)
                for name, done in run_round(runs[shift:] + runs[:shift], rate, seconds, base, False, together).items():
                    per[name].append(done)
        idle_runs = [("control", None), ("z.count", None)] + ([("z.count (before)", before)] if before else [])
        out["idle"] = {name: [] for name, _ in idle_runs}
        for round_ in range(rounds):
            order = idle_runs[round_ % 2 :] + idle_runs[: round_ % 2]
            for name, done in run_round(order, 100, seconds, base, True, together).items():
                out["idle"][name].append(done)
        out["load"] = loads
        out["together"] = together
        return out
    finally:
        c.stop(console)
        c.stop(broker)


def added(results: dict, name: str) -> float:
    """Median over rounds of (variant - control of the same round) per call, in microseconds."""
    pairs = zip(results[name], results["control"])
    return c.median((v["cpu"] - ctl["cpu"]) / v["calls"] for v, ctl in pairs) * 1e6


def report(out: dict, seconds: float, rounds: int) -> str:
    before = any("(before)" in k for per in out["rates"].values() for k in per)
    headers = ["rate", "`@z.time_me`", "prometheus `@Histogram.time()`", "ratio (target <= 0.5)"]
    headers += ["`z.count`", "prometheus `Counter.inc()`", "ratio (target <= 1, or <= 1 us)"]
    if before:
        headers += ["`@z.time_me` before", "`z.count` before"]
    rows = []
    for rate, per in out["rates"].items():
        t, h, n, i = (added(per, k) for k in ("z.time_me", "prom.hist", "z.count", "prom.inc"))
        row: list[object] = [f"{rate:,.0f} calls/s", t, h, _ratio(t, h), n, i, _ratio(n, i)]
        if before:
            row += [added(per, "z.time_me (before)"), added(per, "z.count (before)")]
        rows.append(row)
    idle = out["idle"]
    control = [r["cpu"] / r["wall"] for r in idle["control"]]
    idle_rows = []
    for name in idle:
        if name == "control":
            continue
        per_second = [r["cpu"] / r["wall"] - ctl for r, ctl in zip(idle[name], control)]
        idle_rows.append([f"idle client, {name.replace('z.count', 'after one z.count')}", c.median(per_second) * 1e3])
    loads = out.get("load", [])
    return "\n".join(
        [
            "### All-in at a steady rate (whole process, every thread)",
            "",
            c.table(headers, rows),
            "",
            c.table(["idle", "CPU (ms per second; target <= 0.1)"], idle_rows),
            "",
            f"Added CPU per call in microseconds: each variant its own process calling one instrument at a "
            f"steady rate for {seconds:g} s (a broker and a console worker up), its process CPU time "
            "(time.process_time, every thread, the final flush() included) minus that of a control process "
            "running the same loop around a plain function, per call; "
            + ("a round's variants run at the same time" if out.get("together", False) else "one after another")
            + f"; median of {rounds} rounds. "
            f"Load average during the rounds: {min(loads, default=0):.1f}-{max(loads, default=0):.1f} (2 CPUs shared). "
            "Command: `bench/run client` (or `bench/.venv/bin/python bench/steady_rate.py`).",
            "",
        ]
    )


def _ratio(mine: float, peer: float) -> str:
    return f"{mine / peer:.2f}x" if peer > 0 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per run, 3 rounds (a few minutes)")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--rates", default="100,1000,10000")
    parser.add_argument("--before", help="a checkout whose client the '(before)' variants import")
    parser.add_argument(
        "--apart", action="store_true", help="run a round's variants one after another (the first method), not together"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--idle", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 6.0)
    if args.child:
        print(json.dumps(child(args.child, args.rate, seconds, args.port, args.idle)))
        return
    rounds = args.rounds or (3 if args.quick else 11)
    rates = [float(r) for r in args.rates.split(",")]
    out = measure(rates, seconds, rounds, args.before, together=not args.apart)
    c.save_json("steady" + ("-quick" if args.quick else ""), out)
    print(report(out, seconds, rounds))


if __name__ == "__main__":
    main()
