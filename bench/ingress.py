"""Ingress: the highest loss-free rate of statsd lines into zibrato-listen and into Etsy statsd.

Run through ``bench/run ingress [--quick]``.

The same stream of statsd lines goes to each receiver, in two shapes:

* **packed**: lines joined by ``\\n`` into datagrams of at most 1,432 bytes,
  as DogStatsD's buffering client (and pystatsd's pipeline) sends them;
* **one line per datagram**: what pystatsd and an unbuffered DogStatsd send.

The lines mix counters (some sampled), timers, gauges and tags
(``|#env:prod,route:/a``), all valid for both receivers (Etsy statsd 0.9.0
folds the tags into the name). One sender process paces datagrams in bursts
about every millisecond at the step's rate (lines per second) for a fixed
duration. Steps alternate between the receivers (zibrato-listen at rate R,
Etsy at R, then the next rate), so a noisy moment of the shared machine
does not favour one.

The receivers:

* ``zibrato-listen`` publishing to a real ``zibrato-broker`` (the whole
  path: receive, parse, batch, encode, send); "received" is its ``lines``
  figure from ``zibrato status``, and its publisher must have dropped
  nothing; its receive buffer is its default (8 MiB, sized on purpose);
* the same with ``--receive-buffer`` at the kernel's default (what Etsy
  statsd gets), to show what the buffer buys;
* Etsy statsd 0.9.0 (npm, run by tests/support/etsy_statsd.py), whose
  receive buffer is node's default (the kernel's ``rmem_default``; 0.9.0
  has no setting for it); "received" is its ``metrics_received`` minus
  ``bad_lines_seen``, from its flushes.

"kernel drops" is the ``drops`` column of /proc/net/udp for the receiver's
port: datagrams the kernel dropped because the socket's buffer was full.
A rate is loss-free when every line sent was received and the sender
reached at least 95% of the rate. "CPU" is the receiver's own CPU time for
the step (until its last line was counted) over the step's duration (1.00 =
one core busy), and per line received: on a shared machine a receiver may
get less than a core, and CPU per line is what says how many lines one core
would take.

Finally each stage of the listener alone (receive, parse, publish; CPU time
in this process) says where its CPU goes per line, and so how many lines one
core can take when it has the core to itself.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

import _common as c

from tests.support.etsy_statsd import EtsyStatsd

MAX_DATAGRAM = 1432  # DogStatsD's UDP buffer, Etsy's advice for a LAN
BURST = 0.001
GIVE_UP = 0.2  # a receiver that lost this share at one rate is not tried at higher ones
KERNEL_DEFAULT_BUFFER = int(Path("/proc/sys/net/core/rmem_default").read_text())


# --- the stream --------------------------------------------------------------------


def stream_lines(count: int = 2000, seed: int = 14) -> list[bytes]:
    """Realistic statsd lines, valid for both receivers."""
    rng = random.Random(seed)
    routes = ["/", "/login", "/cart", "/checkout", "/api/items", "/api/users"]
    lines = []
    for i in range(count):
        kind = rng.random()
        name = f"app.{rng.choice(['web', 'db', 'cache', 'queue'])}.{rng.choice(['a', 'b', 'c', 'd'])}{i % 25}"
        tags = f"|#env:prod,route:{rng.choice(routes)}" if rng.random() < 0.5 else ""
        if kind < 0.4:
            line = f"{name}.hits:1|c" + ("|@0.5" if rng.random() < 0.2 else "")
        elif kind < 0.8:
            line = f"{name}.time:{rng.lognormvariate(3, 1):.3f}|ms"
        else:
            line = f"{name}.depth:{rng.randint(0, 500)}|g"
        lines.append((line + tags).encode())
    return lines


def packed(lines: list[bytes]) -> list[tuple[bytes, int]]:
    """(datagram, lines in it): lines joined up to MAX_DATAGRAM bytes."""
    datagrams, current, size = [], [], 0
    for line in lines:
        if current and size + 1 + len(line) > MAX_DATAGRAM:
            datagrams.append((b"\n".join(current), len(current)))
            current, size = [], 0
        current.append(line)
        size += len(line) + (1 if size else 0)
    if current:
        datagrams.append((b"\n".join(current), len(current)))
    return datagrams


def single(lines: list[bytes]) -> list[tuple[bytes, int]]:
    return [(line, 1) for line in lines]


# --- the sender (a child process) ------------------------------------------------------


def send(port: int, shape: str, rate: float, duration: float, start_at: float, results) -> None:
    """Send ``rate`` lines per second for ``duration`` seconds, in bursts every BURST seconds."""
    datagrams = (packed if shape == "packed" else single)(stream_lines())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sendto = sock.send
    total = int(rate * duration)
    index, sent, n = 0, 0, len(datagrams)
    while time.time() < start_at:
        time.sleep(0.001)
    started = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            datagram, lines = datagrams[index]
            index = (index + 1) % n
            try:
                sendto(datagram)
            except OSError:
                continue
            sent += lines
        time.sleep(BURST)
    results.put({"sent": sent, "elapsed": time.perf_counter() - started})


def run_sender(port: int, shape: str, rate: float, duration: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=send, args=(port, shape, rate, duration, time.time() + 1.0, results))
    proc.start()
    out = results.get(timeout=duration * 5 + 60)
    proc.join(30)
    out["achieved"] = out["sent"] / out["elapsed"]
    return out


# --- kernel figures ----------------------------------------------------------------------


def udp_drops_at(port: int) -> int:
    """The drops column of /proc/net/udp for the socket bound to 127.0.0.1:port."""
    wanted = f":{port:04X}"
    for row in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = row.split()
        if fields[1].endswith(wanted):
            return int(fields[12])
    return 0


# --- the receivers -------------------------------------------------------------------------


class Listen:
    """zibrato-listen -> zibrato-broker (nothing subscribed: the broker's PUB drops)."""

    def __init__(self, workdir: Path, name: str, *args: object) -> None:
        self.name = name
        base = c.free_port_run(5)  # the broker takes base .. base + 2 (PULL, PUB, status)
        self.port, self.status_port = base + 3, base + 4
        self.broker = c.start(
            "zibrato-broker", "--port", base, "--startup-grace", 0, log=workdir / f"{name}-broker.log"
        )
        self.listen = c.start(
            "zibrato-listen",
            "--statsd",
            f"127.0.0.1:{self.port}",
            "--broker",
            f"127.0.0.1:{base}",
            "--status-port",
            self.status_port,
            "--no-self-metrics",
            *args,
            log=workdir / f"{name}.log",
        )
        c.wait_until(lambda: c.status(self.status_port), 15, what=f"{name} status")
        self.pid = self.listen.pid

    def received(self) -> int:
        return c.status(self.status_port)["lines"]

    def lost_elsewhere(self) -> int:
        figures = c.status(self.status_port)
        return figures["values_dropped"] + sum(figures["rejected"].values())

    def close(self) -> None:
        c.stop(self.listen)
        c.stop(self.broker)


class Etsy:
    """The real Etsy statsd 0.9.0, flushing every 500 ms to the capture backend."""

    name = "Etsy statsd 0.9.0"

    def __init__(self, workdir: Path) -> None:
        self.statsd = EtsyStatsd(workdir, flush_interval_ms=500).start()
        self.port = self.statsd.port
        self.pid = self.statsd._proc.pid

    def received(self) -> int:
        totals = self.statsd.totals()
        return totals.metrics_received - totals.bad_lines_seen

    def lost_elsewhere(self) -> int:
        return self.statsd.totals().bad_lines_seen

    def close(self) -> None:
        self.statsd.stop()


def step(receiver, shape: str, rate: float, duration: float) -> dict:
    before, drops_before = receiver.received(), udp_drops_at(receiver.port)
    cpu_before = cpu_seconds(receiver.pid)
    out = run_sender(receiver.port, shape, rate, duration)
    # wait until everything sent is counted, or nothing more arrives for a second
    last, quiet_since = -1, time.monotonic()
    while True:
        got = receiver.received() - before
        if got >= out["sent"]:
            break
        if got != last:
            last, quiet_since = got, time.monotonic()
        elif time.monotonic() - quiet_since > 1.5:
            break
        time.sleep(0.1)
    cpu = cpu_seconds(receiver.pid) - cpu_before  # what receiving the step's lines cost, all of it
    out.update(
        rate=rate,
        received=got,
        kernel_drops=udp_drops_at(receiver.port) - drops_before,
        cpu=cpu / out["elapsed"],
        cpu_us_per_line=cpu / max(got, 1) * 1e6,
        other_loss=receiver.lost_elsewhere(),
    )
    return out


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loss(run: dict) -> float:
    return 1 - run["received"] / max(run["sent"], 1)


def loss_free(run: dict) -> bool:
    return run["received"] == run["sent"] and run["other_loss"] == 0 and run["achieved"] >= 0.95 * run["rate"]


# --- where the CPU goes, per line (in this process, CPU time) -------------------------------------


def cost_breakdown(shape: str, seconds: float) -> dict:
    """µs of CPU per line for each stage of the listener, measured alone.

    receive: draining datagrams from a loopback UDP socket (recv per datagram);
    parse: StatsdParser.feed over a wake's worth of datagrams joined (what the
    listener does); publish: encoding and sending one 50 ms flush of those
    lines to a PUSH socket (Publisher.publish). CPU time, not wall time: on a
    shared machine the wall clock also counts the other tenants' turns.
    """
    import zmq

    from zibrato.listen.publisher import Publisher
    from zibrato.listen.statsd import StatsdParser

    datagrams = (packed if shape == "packed" else single)(stream_lines())
    per_datagram = sum(n for _, n in datagrams) / len(datagrams)
    raw = [d for d, _ in datagrams]
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname())
    received, cpu = 0, 0.0
    while cpu < seconds:
        for i in range(1000):
            sender.send(raw[i % len(raw)])
        started = time.process_time()
        while True:
            try:
                receiver.recv(65536)
            except BlockingIOError:
                break
            received += 1
        cpu += time.process_time() - started
    receive = cpu / (received * per_datagram) * 1e6
    parser, pending = StatsdParser(), {}
    wake = b"\n".join(raw[:2000])  # the whole stream: the same lines for both shapes
    started = time.process_time()
    while time.process_time() - started < seconds:
        parser.feed(wake, pending)
        pending = {}
    parse = (time.process_time() - started) / parser.lines * 1e6
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    publisher = Publisher(context, f"tcp://127.0.0.1:{port}", hwm=1_000_000)
    flush_lines = 15_000  # 50 ms at 300,000 lines/s
    published, cpu = 0, 0.0
    while cpu < seconds:
        pending, parser = {}, StatsdParser()
        while parser.lines < flush_lines:
            parser.feed(wake, pending)
        started = time.process_time()
        publisher.publish(pending)
        cpu += time.process_time() - started
        published += parser.lines
        while pull.poll(0):
            pull.recv()
    publisher.close(0)
    context.destroy(linger=0)
    return {"receive": receive, "parse": parse, "publish": cpu / published * 1e6}


# --- report ----------------------------------------------------------------------------------


def report(runs: dict, shapes: list[str], duration: float, ceilings: dict) -> str:
    out = [
        "# Ingress: statsd lines into zibrato-listen and Etsy statsd\n",
        f"{c.machine()}; {duration:g} s per step; kernel rmem_default {KERNEL_DEFAULT_BUFFER:,} bytes.\n",
    ]
    for shape in shapes:
        title = (
            "packed datagrams (<= 1,432 bytes, DogStatsD's buffering)"
            if shape == "packed"
            else "one line per datagram (pystatsd, unbuffered DogStatsd)"
        )
        out.append(f"\n## {title}\n")
        rows, best = [], {}
        for name, shape_runs in runs.items():
            for run in shape_runs.get(shape, []):
                rows.append(
                    [
                        name,
                        run["rate"],
                        run["achieved"],
                        run["received"],
                        f"{loss(run):.2%}",
                        run["kernel_drops"],
                        run["cpu"],
                        run["cpu_us_per_line"],
                        "yes" if loss_free(run) else "no",
                    ]
                )
                if loss_free(run):
                    best[name] = max(best.get(name, 0), run["rate"])
        out.append(
            c.table(
                [
                    "receiver",
                    "target lines/s",
                    "sent lines/s",
                    "received",
                    "loss",
                    "kernel drops",
                    "CPU (cores)",
                    "CPU µs/line",
                    "loss-free",
                ],
                rows,
            )
        )
        out.append("\nHighest loss-free rate:\n")
        etsy = best.get(Etsy.name)
        summary = []
        for name in runs:
            rate = best.get(name)
            ratio = f"{rate / etsy:.1f}x Etsy" if rate and etsy else "-"
            summary.append([name, rate, ratio])
        out.append(c.table(["receiver", "lines/s", "ratio"], summary))
        cost = ceilings[shape]
        total = sum(cost.values())
        out.append(
            f"\nzibrato-listen's stages alone, CPU µs per line: receive {cost['receive']:.2f}, "
            f"parse {cost['parse']:.2f}, publish {cost['publish']:.2f}; total {total:.2f}, "
            f"i.e. {1e6 / total:,.0f} lines per CPU second.\n"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: short steps, few rates")
    parser.add_argument("--duration", type=float, default=None, help="seconds per step")
    parser.add_argument("--shapes", default="packed,single")
    args = parser.parse_args()
    duration = args.duration or (1.5 if args.quick else 5.0)
    shapes = [s for s in args.shapes.split(",") if s]
    rates = {
        "packed": [100_000, 300_000, 600_000]
        if args.quick
        else [50_000, 100_000, 200_000, 300_000, 400_000, 500_000, 600_000, 800_000, 1_000_000],
        "single": [20_000, 60_000]
        if args.quick
        else [10_000, 20_000, 30_000, 40_000, 60_000, 80_000, 100_000, 150_000, 200_000],
    }
    workdir = Path(tempfile.mkdtemp(prefix="zibrato-bench-ingress-"))
    receivers = [
        Listen(workdir, "zibrato-listen"),
        Listen(workdir, "zibrato-listen, kernel-default buffer", "--receive-buffer", max(65536, KERNEL_DEFAULT_BUFFER)),
        Etsy(workdir),
    ]
    runs: dict = {r.name: {} for r in receivers}
    try:
        for shape in shapes:
            given_up: set = set()
            for rate in rates[shape]:
                for receiver in receivers:
                    if receiver.name in given_up:
                        continue
                    run = step(receiver, shape, rate, duration)
                    runs[receiver.name].setdefault(shape, []).append(run)
                    print(
                        f"  {shape:7} {receiver.name:40} {rate:>9,}/s: sent {run['achieved']:>9,.0f}/s "
                        f"loss {loss(run):6.2%} drops {run['kernel_drops']:>7,} cpu {run['cpu']:.2f}",
                        file=sys.stderr,
                    )
                    if loss(run) > GIVE_UP:
                        given_up.add(receiver.name)
    finally:
        for receiver in receivers:
            receiver.close()
    ceilings = {shape: cost_breakdown(shape, 0.5 if args.quick else 2.0) for shape in shapes}
    c.save_json("ingress" + ("-quick" if args.quick else ""), {"runs": runs, "parser": ceilings})
    print(report(runs, shapes, duration, ceilings))


if __name__ == "__main__":
    main()
