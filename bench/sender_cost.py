"""The sender thread's CPU per measurement, this tree against an earlier checkout (``--before DIR``).

Run through ``bench/run client`` or alone: ``bench/.venv/bin/python
bench/sender_cost.py [--quick] [--before DIR]``.

Each variant runs in its own process (so that the before and after clients
are each imported whole), with a real ``zibrato-broker`` up. The process
records a drain's worth with real ``@z.time_me`` functions (``series`` of
them, called round robin), wakes the sender and waits until it has counted
them all; the sender thread's CPU clock (``pthread_getcpuclockid``) is read
before and after, divided by the measurements it drained: taking them from
the queues, grouping per series, encoding (msgpack) and handing the frames
to ZeroMQ. The variants alternate within each repeat; each figure is the
median of the repeats.

Beside zibrato's sender, the same run measures the floor of a sender
written in Python that writes the same wire format (msgpack values;
``floor`` variants, :func:`floor_child`): the same
workload recorded into one plain deque per series by the same round-robin
calls, then taken with no care at all (``list`` and ``clear``, which loses
racing appends), put in one message with one msgpack call and sent: no
bound, no counting, no framing rule, no race safety. It is measured twice:
with the one-value tuples zibrato's bound rides on (module doc of
``zibrato.buffer``), and with the floats themselves. What zibrato's sender
cannot go below is what these cost. A third variant packs each lane's
floats in bulk instead of with msgpack's packer (an ``array('d')``,
byte-swapped, interleaved with msgpack's float marker by slice assignment):
does the per-value packing have a cheaper way in Python?
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import _common as c

if os.environ.get("ZIBRATO_BENCH_CLIENT_FROM"):  # a '(before)' variant: that checkout's client first
    sys.path.insert(0, os.environ["ZIBRATO_BENCH_CLIENT_FROM"])

WORKLOADS = [
    # (label, series, measurements per drain)
    ("1 series (a hot function), 10,000 a drain", 1, 10_000),
    ("1,000 series interleaved, 10,000 a drain", 1000, 10_000),
    ("1 series, 50 a drain (1,000 calls/s, drained every 50 ms: before the cadence followed the rate)", 1, 50),
    ("1 series, 1,000 a drain (1,000 calls/s, drained once a second: the cadence now)", 1, 1000),
    ("1,000 series, 1,000 a drain (1,000 calls/s spread over 1,000 series, drained once a second)", 1000, 1000),
]


def noop() -> None:
    pass


def child(port: int, series: int, per_drain: int, drains: int) -> list[float]:
    """Seconds of sender CPU per measurement, one figure per drain."""
    from zibrato import Zibrato

    z = Zibrato("127.0.0.1", port, interval=3600)  # the sender drains when woken, only
    z.count("info", "bench.start")
    z.flush(10)
    sender, tally = z._sender, z._tally
    clock = time.pthread_getcpuclockid(sender.ident)
    functions = [z.time_me("info", f"bench.sender.s{i}")(noop) for i in range(series)]
    calls = [functions[i % series] for i in range(per_drain)]
    out = []
    for _ in range(drains + 1):  # the first drain warms up
        gc.collect()
        before = tally.sent + tally.dropped
        for call in calls:
            call()
        start = time.clock_gettime(clock)
        sender._wake.put(True)  # what drain_now() does, without its wait for the writing
        c.wait_until(lambda: tally.sent + tally.dropped - before >= per_drain, 30, interval=0.0002, what="a drain")
        out.append((time.clock_gettime(clock) - start) / (tally.sent + tally.dropped - before))
    z.close(timeout=2.0)
    return out[1:]


#: how a floor variant holds and encodes its values
TUPLES, FLOATS, FLOATS_IN_BULK = 1, 0, 2


def floor_child(port: int, series: int, per_drain: int, drains: int, kind: int) -> list[float]:
    """Seconds of CPU per measurement of the least a Python sender can do (module doc), one per drain.

    ``kind``: :data:`TUPLES`, :data:`FLOATS`, or :data:`FLOATS_IN_BULK` (each
    lane's floats packed as msgpack float64 by an ``array('d')``, byte-swapped
    and interleaved with the float marker by slice assignment, instead of by
    msgpack's packer).
    """
    from array import array
    from collections import deque

    import msgpack
    import zmq

    from zibrato import protocol

    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.connect(f"tcp://127.0.0.1:{port}")
    lanes = [deque() for _ in range(series)]
    heads = [("t", f"bench.sender.s{i}") for i in range(series)]
    clock = time.perf_counter
    boxed = kind == TUPLES

    def recorder(append):  # a decorated call's recording: the clock read twice, one append
        def call() -> None:
            start = clock()
            append(((clock() - start),) if boxed else clock() - start)

        return call

    calls = [recorder(lanes[i % series].append) for i in range(per_drain)]
    topic = protocol.topic("info", None)
    packer = msgpack.Packer(use_bin_type=True)
    pack, header = packer.pack, packer.pack_array_header
    tails = pack(None) + pack(())

    def in_bulk(lane) -> bytes:  # msgpack: an array of float64 (0xcb, 8 bytes big-endian each)
        values = array("d", lane)
        values.byteswap()
        raw, count = values.tobytes(), len(values)
        out = bytearray(9 * count)
        out[0::9] = b"\xcb" * count
        for byte in range(8):
            out[1 + byte :: 9] = raw[byte::8]
        return header(count) + bytes(out)

    out = []
    for _ in range(drains + 1):
        gc.collect()
        for call in calls:
            call()
        start = time.thread_time()
        if kind == FLOATS_IN_BULK:
            parts = [header(3), pack(protocol.VERSION), pack(time.time()), header(series)]
            for (type_, name), lane in zip(heads, lanes):
                parts += (header(5), pack(type_), pack(name), in_bulk(lane), tails)
            frame = topic + b"".join(parts)
        else:
            if boxed:
                records = [
                    (type_, name, [value for (value,) in lane], None, ()) for (type_, name), lane in zip(heads, lanes)
                ]
            else:
                records = [(type_, name, list(lane), None, ()) for (type_, name), lane in zip(heads, lanes)]
            frame = topic + msgpack.packb([protocol.VERSION, time.time(), records], use_bin_type=True)
            del records
        for lane in lanes:
            lane.clear()
        push.send(frame, copy=len(frame) < 65536)
        del frame
        out.append((time.thread_time() - start) / per_drain)
    push.close(linger=5000)
    context.term()
    return out[1:]


#: the variants of a run: (label, what a child is run with)
FLOORS = [
    ("floor: one-value tuples", TUPLES),
    ("floor: floats", FLOATS),
    ("floor: floats packed in bulk", FLOATS_IN_BULK),
]


def measure(repeats: int, drains: int, before: str | None) -> dict:
    base = c.free_port_run(3)
    broker = c.start("zibrato-broker", "--port", base, "--status-port", 0, "--startup-grace", 0.1)
    variants: list[tuple[str, str | None]] = [("after", None)] + ([("before", before)] if before else [])
    variants += [(label, None) for label, _ in FLOORS]
    try:
        time.sleep(0.5)
        out: dict = {label: {v: [] for v, _ in variants} for label, _, _ in WORKLOADS}
        for label, series, per_drain in WORKLOADS:
            for repeat in range(repeats):
                for variant, path in variants[:: 1 if repeat % 2 else -1]:
                    env = dict(os.environ)
                    if path:
                        env["ZIBRATO_BENCH_CLIENT_FROM"] = path
                    args = [sys.executable, __file__, "--child", str(base), str(series), str(per_drain)]
                    args.append(str(drains if per_drain >= 1000 else drains * 20))
                    floor = dict(FLOORS).get(variant)
                    if floor is not None:
                        args[2:3] = ["--floor-child"]
                        args.append(str(floor))
                    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
                    if done.returncode:
                        raise RuntimeError(done.stderr[-2000:])
                    out[label][variant].append(c.median(json.loads(done.stdout.strip().splitlines()[-1])))
        return out
    finally:
        c.stop(broker)


def report(out: dict, repeats: int) -> str:
    before = any("before" in per for per in out.values())
    headers = ["workload", "sender CPU per measurement (ns; target <= 60)"]
    headers += ["before (ns)", "after / before"] if before else []
    headers += [f"{label} (ns)" for label, _ in FLOORS]
    rows = []
    for label, per in out.items():
        after = c.median(per["after"]) * 1e9
        row: list[object] = [label, after]
        if before:
            was = c.median(per["before"]) * 1e9
            row += [was, f"{after / was:.2f}x"]
        row += [c.median(per[label]) * 1e9 for label, _ in FLOORS]
        rows.append(row)
    return "\n".join(
        [
            "### The sender thread's CPU per measurement (broker up)",
            "",
            c.table(headers, rows),
            "",
            f"Median of {repeats} repeats, each its own process (before and after alternating), each the median "
            "of its drains: the sender thread's own CPU clock around each drain, divided by the measurements "
            "it drained (taking them, grouping, encoding, handing the frames to ZeroMQ). "
            "The floor columns: the same calls recorded into one plain deque per series, taken with `list` "
            "and `clear`, one msgpack call, one send; no bound, no counting, no framing, no race safety "
            "(`floor_child` in bench/sender_cost.py): what no Python sender of this wire format goes below. "
            "Command: `bench/run client` (or `bench/.venv/bin/python bench/sender_cost.py --before DIR`).",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--before", help="a checkout whose client the 'before' variant imports")
    parser.add_argument("--child", nargs=4, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor-child", nargs=5, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_child:
        print(json.dumps(floor_child(*args.floor_child)))
        return
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    repeats = args.repeats or (3 if args.quick else 5)
    out = measure(repeats, 5 if args.quick else 10, args.before)
    c.save_json("sender" + ("-quick" if args.quick else ""), out)
    print(report(out, repeats))


if __name__ == "__main__":
    main()
