"""What a worker crash (SIGKILL, an OOM kill) loses under a steady stream, through a real broker.

    .venv/bin/python bench/worker_crash.py [--rate 20000] [--seconds 8] [--down 1] [--flush 1]

Starts ``zibrato-broker`` and ``zibrato-console --format json --flush F``,
sends counter increments at a steady rate from one client, SIGKILLs the
worker after a quarter of the run, restarts it ``--down`` seconds later
(as supervisord's autorestart would), and at the end counts what the two
workers printed against what was sent. What is lost: the interval the
killed worker had aggregated but not flushed, everything published while
no worker was subscribed (PUB keeps nothing for an absent subscriber), and
the new worker's start-up until its subscription is live. docs/OPERATIONS.md
quotes the result.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from zibrato import Zibrato
from zibrato.runtime import ask_status

BIN = Path(sys.executable).parent


def free_base(count: int = 4) -> int:
    """A port such that it and the next ``count - 1`` are free on loopback."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count < 65535 and all(_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no free ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start(argv: list, log: Path) -> subprocess.Popen:
    with open(log, "ab") as err:
        return subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)


def wait_answering(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ask_status("127.0.0.1", port, 0.5)
            return
        except TimeoutError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answers on status port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=20_000, help="measurements per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the stream")
    parser.add_argument("--down", type=float, default=1.0, help="seconds between the kill and the restart")
    parser.add_argument("--flush", type=float, default=1.0, help="the worker's flush interval")
    args = parser.parse_args()

    base = free_base()
    folder = Path(tempfile.mkdtemp(prefix="zibrato-crash-"))
    broker = start([BIN / "zibrato-broker", "--port", base, "--startup-grace", "0.1"], folder / "broker.err")
    worker_argv = [
        BIN / "zibrato-console",
        "--port",
        base + 1,
        "--format",
        "json",
        "--flush",
        args.flush,
        "--no-self-metrics",
        "--status-port",
        base + 3,
    ]
    outputs: list[bytes] = []
    workers = [start(worker_argv, folder / "worker.err")]
    readers = [threading.Thread(target=lambda p=workers[0]: outputs.append(p.stdout.read()))]
    readers[0].start()
    wait_answering(base + 2)
    wait_answering(base + 3)
    client = Zibrato(port=base)
    # warm the subscription up (ZeroMQ's slow joiner) with another name
    while ask_status("127.0.0.1", base + 3)["measurements"] == 0:
        client.count("info", "warmup")
        client.flush()
        time.sleep(0.05)

    sent = 0
    started = time.monotonic()
    kill_at, restart_at = started + args.seconds / 4, started + args.seconds / 4 + args.down
    killed = restarted = False
    while (now := time.monotonic()) < started + args.seconds:
        due = int((now - started) * args.rate)
        while sent < due:
            client.count("info", "load", 1)
            sent += 1
        if not killed and now >= kill_at:
            os.kill(workers[0].pid, signal.SIGKILL)
            workers[0].wait()
            killed = True
        if killed and not restarted and now >= restart_at:
            workers.append(start(worker_argv, folder / "worker.err"))
            readers.append(threading.Thread(target=lambda p=workers[1]: outputs.append(p.stdout.read())))
            readers[1].start()
            restarted = True
        time.sleep(0.001)
    client.flush()
    time.sleep(1.0)  # what is in flight reaches the worker
    workers[-1].send_signal(signal.SIGTERM)
    workers[-1].wait(30)
    for reader in readers:
        reader.join(10)
    client.close(timeout=1)
    broker.send_signal(signal.SIGTERM)
    broker.wait(30)

    delivered = 0.0
    for output in outputs:
        for line in output.decode().splitlines():
            if line.startswith("{"):
                summary = json.loads(line)
                if summary["name"] == "load":
                    delivered += summary["value"]
    lost = sent - int(delivered)
    print(
        f"rate {args.rate:g}/s for {args.seconds:g} s, worker SIGKILLed and restarted {args.down:g} s later, "
        f"flush {args.flush:g} s: sent {sent:,}, delivered {int(delivered):,}, lost {lost:,} "
        f"({100 * lost / sent:.1f} %, {lost / args.rate:.2f} s of the stream)"
    )


if __name__ == "__main__":
    main()
