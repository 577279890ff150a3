"""Scale: what the forwarder tier, shards and CURVE cost. Run through ``bench/run scale [--quick]``.

Four tables, each compared with its own baseline in the same run:

1. **Bytes per measurement on the wire** (in process, exact): a client's raw
   messages against the forwarder's summary messages for the same data
   (series x values per series per interval), so the reduction a host's
   forwarder brings to the link that crosses the network.
2. **CURVE overhead per measurement**: the same client messages through a
   real PUSH -> PULL over loopback TCP, plain and CURVE, timed end to end
   (send all, receive all); the difference per message and per measurement.
3. **Forwarder tier throughput**: two hosts (broker + ``zibrato-forward``,
   real processes) forward to a global broker and ``zibrato-console``; raw
   measurements blasted at both hosts; the time until the forwarders have
   ingested everything and until the global worker has merged it all,
   against one worker taking the same raw stream directly.
4. **N workers for one level**: a broker and N ``zibrato-console --shard K/N``
   workers, the same pre-encoded sharded stream; aggregate rate = all
   measurements / time until every worker ingested its share; ratio to N = 1.
   On a machine with C cores the ratio cannot exceed about C (the producer
   and the broker need a share too): the figures say how close it gets.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port_run, machine, save_json, start, status, stop, table, wait_until

from zibrato import protocol
from zibrato.aggregation import Aggregator
from zibrato.curve import ClientKeys, create_keys, load_pair
from zibrato.destination import Interval
from zibrato.forward import VALUES_UP_TO, LevelAggregators, interval_frames

RNG = random.Random(15)


def raw_frames(series: int, per_series: int, kind: str = "t", batch: int = 1000, shards: bool = False) -> list[bytes]:
    """A client's messages for ``series`` series of ``per_series`` values each (its batching)."""
    records = []
    for i in range(series):
        values = [round(RNG.lognormvariate(-4, 1), 6) if kind == "t" else 1 for _ in range(per_series)]
        records.append((kind, f"app.{kind}.series_{i}", values, "web-1", ("env:prod",)))
    groups: dict = {}
    for record in records:  # a sharding client sends one shard's records per message
        groups.setdefault(protocol.record_shard(record) if shards else None, []).append(record)
    frames = []
    for shard, group in groups.items():
        chunk, size = [], 0
        for record in group:
            if size + len(record[2]) > batch and chunk:
                frames.append(protocol.encode("info", time.time(), chunk, shard))
                chunk, size = [], 0
            chunk.append(record)
            size += len(record[2])
        if chunk:
            frames.append(protocol.encode("info", time.time(), chunk, shard))
    return frames


def wire_bytes(quick: bool) -> list[dict]:
    rows = []
    for kind, series, per_series in (
        ("c", 1000, 1),
        ("c", 100, 100),
        ("t", 1000, 1),
        ("t", 1000, 10),
        ("t", 100, 100),
        ("t", 10, 10_000),
    ):
        if quick and per_series > 1000:
            continue
        frames = raw_frames(series, per_series, kind)
        measurements = series * per_series
        levels = LevelAggregators(lambda: Aggregator(percentiles=(), include_interval=True, values_up_to=VALUES_UP_TO))
        for frame in frames:
            levels.level("info").add_records(protocol.decode_plain(frame).records)
        interval = Interval(0.0, 10.0, levels.flush(10.0, 10.0))
        summaries, count = interval_frames(interval, 10.1, protocol.MAX_MESSAGE_SIZE)
        raw, forwarded = sum(map(len, frames)), sum(map(len, summaries))
        rows.append(
            {
                "kind": {"c": "counter", "t": "timer"}[kind],
                "series": series,
                "values/series/interval": per_series,
                "raw bytes/measurement": raw / measurements,
                "summary bytes/series": forwarded / count,
                "forwarded bytes/measurement": forwarded / measurements,
                "reduction": raw / forwarded,
            }
        )
    return rows


def curve_overhead(quick: bool, tmp: Path) -> list[dict]:
    create_keys("server", tmp, force=True)
    create_keys("client", tmp, force=True)
    server_public, server_secret = load_pair(tmp / "server.key_secret")
    client = ClientKeys.from_files(tmp / "client.key_secret", tmp / "server.key")
    rows = []
    for per_message in (1, 100, 1000):
        frames = raw_frames(200 if per_message > 1 else 2000, per_message, "t", batch=per_message)
        frames = (frames * (2000 // len(frames) + 1))[: 2000 if not quick else 500]
        measurements = per_message * len(frames)
        times = {}
        for mode in ("plain", "curve"):
            best = float("inf")
            for _ in range(2 if quick else 5):
                best = min(best, _push_pull(frames, mode == "curve", server_public, server_secret, client))
            times[mode] = best
        rows.append(
            {
                "measurements/message": per_message,
                "bytes/message": sum(map(len, frames)) / len(frames),
                "plain µs/message": times["plain"] / len(frames) * 1e6,
                "CURVE µs/message": times["curve"] / len(frames) * 1e6,
                "CURVE extra µs/measurement": (times["curve"] - times["plain"]) / measurements * 1e6,
                "CURVE/plain": times["curve"] / times["plain"],
            }
        )
    return rows


def _push_pull(frames: list[bytes], curve: bool, public: bytes, secret: bytes, client: ClientKeys) -> float:
    context = zmq.Context()
    pull, push = context.socket(zmq.PULL), context.socket(zmq.PUSH)
    pull.rcvhwm = push.sndhwm = 0  # everything is sent before anything is received
    try:
        if curve:  # no ZAP handler: any client key is accepted (the cost measured is the crypto)
            pull.curve_server, pull.curve_secretkey, pull.curve_publickey = True, secret, public
            client.apply(push)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        push.send(b"warm")
        pull.recv()
        started = time.perf_counter()
        for frame in frames:
            push.send(frame)
        for _ in frames:
            pull.recv()
        return time.perf_counter() - started
    finally:
        push.close(0)
        pull.close(0)
        context.term()


def _blast(port: int, frames: list[bytes]) -> None:
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.connect(f"tcp://127.0.0.1:{port}")
    for frame in frames:
        push.send(frame)
    push.close(linger=30_000)
    context.term()


def _measured(ports: list[int]) -> float:
    return sum(status(p)["measurements"] for p in ports)


def _warm(broker_port: int, status_ports: list[int], shards: bool) -> float:
    """Send warm-up frames for every shard until every worker has received one; their total."""
    frames = [
        protocol.encode("info", time.time(), [("c", "warmup", (1,), None, ())], s if shards else None)
        for s in range(protocol.SHARDS)
    ]
    wait_until(
        lambda: _blast(broker_port, frames) or all(status(p)["measurements"] > 0 for p in status_ports),
        30,
        0.2,
        "workers subscribed",
    )
    time.sleep(0.5)
    return _measured(status_ports)


def shard_scaling(quick: bool, tmp: Path, counts: list[int]) -> list[dict]:
    series, per_series = (50_000, 1) if quick else (200_000, 2)
    frames = raw_frames(series, per_series, "t", shards=True)
    total = series * per_series
    rows, one = [], None
    for n in counts:
        base = free_port_run(3 + n)
        broker = start(
            "zibrato-broker", "--port", base, "--startup-grace", "0.2", "--hwm", 10_000_000, log=tmp / f"broker-{n}.log"
        )
        workers = [
            start(
                "zibrato-console",
                "--port",
                base + 1,
                "--flush",
                86400,
                "--no-self-metrics",
                "--levels",
                "info",
                "--shard",
                f"{k}/{n}",
                "--status-port",
                base + 3 + k,
                log=tmp / f"worker-{n}-{k}.log",
            )
            for k in range(n)
        ]
        ports = [base + 3 + k for k in range(n)]
        try:
            wait_until(lambda: all(status(p) for p in ports), 30, 0.1, "workers up")
            before = _warm(base, ports, shards=True)
            started = time.perf_counter()
            _blast(base, frames)
            wait_until(lambda: _measured(ports) >= before + total, 300, 0.02, "every measurement")
            elapsed = time.perf_counter() - started
        finally:
            for process in [*workers, broker]:
                stop(process)
        rate = total / elapsed
        one = one or rate
        rows.append(
            {
                "workers": n,
                "measurements": total,
                "seconds": elapsed,
                "measurements/s": rate,
                "x one worker": rate / one,
                "ideal": float(n),
            }
        )
    return rows


def tier_throughput(quick: bool, tmp: Path) -> list[dict]:
    """Two hosts forwarding to a global worker, against one worker taking the raw stream directly."""
    series, per_series = (500, 200) if quick else (2000, 500)  # hot series: many values per interval
    rows = []
    frames = raw_frames(series, per_series, "t")
    total = series * per_series
    # one worker, the raw stream of both hosts directly
    base = free_port_run(4)
    broker = start("zibrato-broker", "--port", base, "--startup-grace", "0.2", "--hwm", 10_000_000)
    worker = start(
        "zibrato-console",
        "--port",
        base + 1,
        "--flush",
        1,
        "--no-self-metrics",
        "--levels",
        "info",
        "--status-port",
        base + 3,
    )
    try:
        wait_until(lambda: status(base + 3), 30, 0.1, "worker up")
        before = _warm(base, [base + 3], shards=False)
        started = time.perf_counter()
        _blast(base, frames + frames)
        wait_until(lambda: _measured([base + 3]) >= before + 2 * total, 300, 0.02, "every measurement")
        direct = time.perf_counter() - started
    finally:
        stop(worker)
        stop(broker)
    rows.append(
        {
            "path": "one worker, raw from both hosts",
            "raw measurements": 2 * total,
            "ingested in s": direct,
            "measurements/s": 2 * total / direct,
            "at the global tier in s": None,
            "bytes to the global tier": sum(map(len, frames)) * 2,
        }
    )
    # the tier: two hosts, two forwarders, a global broker and worker
    g = free_port_run(4)
    hosts = [free_port_run(4) for _ in range(2)]
    processes = [
        start("zibrato-broker", "--port", g, "--startup-grace", "0.2", log=tmp / "global.log"),
        start(
            "zibrato-console",
            "--port",
            g + 1,
            "--flush",
            1,
            "--lateness",
            0.4,
            "--no-self-metrics",
            "--levels",
            "info",
            "--status-port",
            g + 3,
            log=tmp / "global-worker.log",
        ),
    ]
    for h in hosts:
        processes += [
            start("zibrato-broker", "--port", h, "--startup-grace", "0.2", "--hwm", 10_000_000),
            start(
                "zibrato-forward",
                "--port",
                h + 1,
                "--to",
                f"127.0.0.1:{g}",
                "--flush",
                1,
                "--no-self-metrics",
                "--levels",
                "info",
                "--status-port",
                h + 3,
                log=tmp / f"forward-{h}.log",
            ),
        ]
    try:
        wait_until(lambda: all(status(h + 3) for h in hosts) and status(g + 3), 30, 0.1, "tier up")
        forwarded_before = [_warm(h, [h + 3], shards=False) for h in hosts]
        wait_until(lambda: status(g + 3)["measurements"] >= sum(forwarded_before), 30, 0.1, "warm-up upstream")
        global_before = status(g + 3)["measurements"]
        bytes_before = sum(status(h + 3)["forwarded_bytes"] for h in hosts)
        started = time.perf_counter()
        for h in hosts:
            _blast(h, frames)
        wait_until(
            lambda: all(status(h + 3)["measurements"] >= b + total for h, b in zip(hosts, forwarded_before)),
            300,
            0.02,
            "forwarders ingested",
        )
        ingested = time.perf_counter() - started
        wait_until(lambda: status(g + 3)["measurements"] >= global_before + 2 * total, 60, 0.02, "global merged")
        merged = time.perf_counter() - started
        forwarded_bytes = sum(status(h + 3)["forwarded_bytes"] for h in hosts) - bytes_before
    finally:
        for process in processes:
            stop(process)
    rows.append(
        {
            "path": "two hosts' forwarders -> global worker",
            "raw measurements": 2 * total,
            "ingested in s": ingested,
            "measurements/s": 2 * total / ingested,
            "at the global tier in s": merged,
            "bytes to the global tier": forwarded_bytes,
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", default="1,2,4", help="N values for the shard scaling table")
    parser.add_argument("--only", default="bytes,curve,tier,shards")
    args = parser.parse_args()
    tmp = Path(__file__).resolve().parent / "results" / "scale-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    print(f"# Scale: forwarder tier, shards, CURVE\n\n{machine()}\n")
    results = {}
    if "bytes" in only:
        results["bytes"] = rows = wire_bytes(args.quick)
        print("## Bytes per measurement on the wire: raw client messages vs forwarded summaries\n")
        print(table(list(rows[0]), [r.values() for r in rows]) + "\n")
    if "curve" in only:
        results["curve"] = rows = curve_overhead(args.quick, tmp)
        print("## CURVE overhead: PUSH -> PULL over loopback TCP, best of several runs\n")
        print(table(list(rows[0]), [r.values() for r in rows]) + "\n")
    if "tier" in only:
        results["tier"] = rows = tier_throughput(args.quick, tmp)
        print("## Forwarder tier: two hosts to a global worker, against one worker taking it all raw\n")
        print(table(list(rows[0]), [r.values() for r in rows]) + "\n")
    if "shards" in only:
        counts = [int(n) for n in args.workers.split(",")]
        results["shards"] = rows = shard_scaling(args.quick, tmp, counts)
        print("## N workers for one level (--shard K/N), timer records of one or two values\n")
        print(table(list(rows[0]), [r.values() for r in rows]) + "\n")
    save_json("scale", results)


if __name__ == "__main__":
    main()
