"""Issue 19's "done when", end to end: a real broker and real zibrato-console workers (subprocesses).

One million lognormal timer values give every configured percentile within the
stated relative error of the exact nearest rank; the same values split across
two workers and merged through zibrato.sketch give the sketch of one worker
that saw them all.
"""

from __future__ import annotations

import math
import random
import signal
import time
from fractions import Fraction

import pytest
import zmq
from expecter import expect

from support.daemons import Daemon, free_ports, wait_until
from support.pipeline import DAY
from zibrato import protocol
from zibrato.aggregation import percentile_key
from zibrato.runtime import ask_status
from zibrato.sketch import Sketch

PERCENTILES = (50, 90, 95, 99, 99.9)
N = 1_000_000
PER_RECORD = 1_000  # what the client puts in one record at most (its batch)


def nearest_rank(ordered, pct):
    return ordered[max(1, math.ceil(Fraction(str(pct)) / 100 * len(ordered))) - 1]


class Workers:
    """A broker and console workers, each on its own levels with a status port."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.base = free_ports(8)
        self.broker = Daemon(tmp_path, "zibrato-broker", "--port", self.base, "--startup-grace", "0.1")
        self.workers: dict[str, tuple[Daemon, int]] = {}
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.linger = 0
        self.push.setsockopt(zmq.SNDHWM, 0)

    def start(self, **levels_by_name):
        self.broker.start().wait_for_log("broker ready")
        for i, (name, levels) in enumerate(levels_by_name.items()):
            status_port = self.base + 3 + i
            worker = Daemon(
                self.tmp_path,
                "zibrato-console",
                "--port",
                self.base + 1,
                "--format",
                "json",
                "--sketch",
                "--levels",
                levels,
                "--flush",
                DAY,
                "--status-port",
                status_port,
                "--no-self-metrics",
                "--percentiles",
                ",".join(map(str, PERCENTILES)),
            )
            self.workers[name] = (worker.start(), status_port)
        for worker, _ in self.workers.values():
            worker.wait_for_log("console worker")
        self.push.connect(f"tcp://127.0.0.1:{self.base}")
        return self

    def measurements(self, name):
        return ask_status("127.0.0.1", self.workers[name][1], timeout=5)["measurements"]

    def warm_up(self, level, name):
        """Send on ``level`` until ``name``'s subscription is live (ZeroMQ's slow joiner)."""

        def received():
            self.send(level, [("g", "warmup", [1], None, [])])
            return self.measurements(name) > 0

        wait_until(received, timeout=10, interval=0.1, message=f"{name} subscription")

    def send(self, level, records):
        self.push.send(protocol.encode(level, time.time(), records))

    def stop(self, name):
        worker, _ = self.workers[name]
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.stderr
        return {s["name"]: s for s in worker.json_lines()}

    def close(self):
        self.push.close(0)
        self.context.term()
        for worker, _ in self.workers.values():
            worker.stop()
        self.broker.stop()


@pytest.fixture
def workers(tmp_path):
    made = Workers(tmp_path)
    yield made
    made.close()


def test_a_million_lognormal_timer_values_keep_every_percentile_within_the_bound_and_merge(workers):
    workers.start(whole="all", first="alpha", second="beta")
    workers.warm_up("alpha", "first")
    workers.warm_up("beta", "second")
    baseline = {name: workers.measurements(name) for name in workers.workers}
    rng = random.Random(19)
    values = [rng.lognormvariate(-4.5, 1.2) for _ in range(N)]  # ~11 ms median, a long tail

    for i in range(0, N, PER_RECORD):  # alternate records between the two levels
        level = "alpha" if (i // PER_RECORD) % 2 == 0 else "beta"
        workers.send(level, [("t", "db.query", values[i : i + PER_RECORD], "api", [])])

    wait_until(
        lambda: workers.measurements("whole") >= baseline["whole"] + N,
        timeout=60,
        interval=0.2,
        message="a million values at the worker that takes every level",
    )
    for name in ("first", "second"):
        wait_until(
            lambda: workers.measurements(name) >= baseline[name] + N // 2,
            timeout=60,
            interval=0.2,
            message=f"half the values at {name}",
        )
    whole, first, second = (workers.stop(name)["db.query"] for name in ("whole", "first", "second"))

    ordered = sorted(values)
    expect((whole["count"], whole["min"], whole["max"], whole["exact"])) == (N, ordered[0], ordered[-1], False)
    assert math.isclose(whole["sum"], math.fsum(values), rel_tol=1e-9)
    bound = whole["relative_error"]
    expect(bound <= 0.01) == True  # the default --relative-error
    for pct in PERCENTILES:
        exact = nearest_rank(ordered, pct)
        got = whole[percentile_key(pct)]
        assert abs(got - exact) <= bound * exact * (1 + 1e-9), (pct, got, exact, bound)

    merged = Sketch.from_dict(first["sketch"]).merge(Sketch.from_dict(second["sketch"])).to_dict()
    expect({k: v for k, v in merged.items() if k != "sum"}) == {k: v for k, v in whole["sketch"].items() if k != "sum"}
    assert math.isclose(merged["sum"], whole["sketch"]["sum"], rel_tol=1e-12)
    expect((first["count"], second["count"])) == (N // 2, N // 2)
