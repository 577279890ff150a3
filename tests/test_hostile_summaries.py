"""Issue 22, items 1, 4, 5 and 10: forged summary records pushed into a real broker.

Each test runs ``zibrato-broker`` and a real worker, then pushes protocol 1.2
summary records through a raw ZeroMQ PUSH socket, as any client (or a
holder of an allowed CURVE key) can: a sketch of 3,500 contiguous buckets, a
bucket at index 2**62, a scale of 99, a zero_count of -5, a counter count of
-1e9, a gauge whose min is above its max, a gauge time of 1e300. Each forged
record travels in a message beside an honest counter. The worker must stay
up, count each forged record by reason in its status, and deliver the
honest series exact, in the same message and in later ones.
"""

from __future__ import annotations

import time

import pytest
import zmq
from expecter import expect

from support.daemons import wait_until
from support.fake_otlp import FakeOtlp
from support.pipeline import WorkerPipeline, pipelines
from zibrato import protocol

HONEST = "honest.requests"


def _interval(now: float) -> dict:
    return {"start": now - 1.0, "end": now}


def _timer(now: float, sketch: dict) -> dict:
    return {"kind": "t", **_interval(now), "sum_squares": 1.0, "sketch": sketch}


def _sketch(scale: int = 6, offset: int = 0, counts: tuple = (1,), zero_count: float = 0, count=None) -> dict:
    """A sketch dict whose counts add up, min and max inside its populated buckets."""
    low = 2.0 ** ((offset + 0.5) / 2**scale) if -1000 < offset / 2**scale < 1000 else 1.0
    high = 2.0 ** ((offset + len(counts) - 0.5) / 2**scale) if -1000 < (offset + len(counts)) / 2**scale < 1000 else 1.0
    total = zero_count + sum(counts)
    return {
        "scale": scale,
        "zero_count": zero_count,
        "positive": {"offset": offset, "counts": list(counts)},
        "negative": {"offset": 0, "counts": []},
        "count": total if count is None else count,
        "sum": 1.0,
        "min": 0.0 if zero_count else low,
        "max": high,
    }


def forged_records(now: float) -> dict[str, tuple[str, dict]]:
    """name -> (the reason the worker must count it under, the summary map)."""
    gauge = {"kind": "g", **_interval(now), "last": 1.0, "time": now, "count": 1, "min": 1.0, "max": 1.0, "sum": 1.0}
    return {
        "forged.wide": ("sketch_buckets", _timer(now, _sketch(counts=(1,) * 3500))),
        "forged.far": ("sketch_offset", _timer(now, _sketch(offset=2**62))),
        "forged.scale": ("sketch_scale", _timer(now, _sketch(scale=99))),
        "forged.zeros": ("negative_count", _timer(now, _sketch(counts=(), zero_count=-5))),
        "forged.count": ("negative_count", {"kind": "c", **_interval(now), "sum": 1.0, "count": -1e9}),
        "forged.extremes": ("min_above_max", {**gauge, "min": 2.0, "max": 1.0}),
        "forged.time": ("summary_time", {**gauge, "time": 1e300}),
    }


class Pusher:
    """A raw PUSH socket into the broker: what a forging client sends."""

    def __init__(self, port: int) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, 2000)
        self.socket.connect(f"tcp://127.0.0.1:{port}")
        self.honest_sent = 0

    def send(self, records: list, honest: int = 0) -> None:
        if honest:
            records = [*records, ("c", HONEST, (honest,), None, ())]
            self.honest_sent += honest
        self.socket.send(protocol.encode("info", time.time(), records))

    def close(self) -> None:
        self.socket.close()
        self.context.term()


class ConsolePipeline(WorkerPipeline):
    def __init__(self, tmp_path, *args, **kwargs):  # --sketch: the merged sketch in each JSON line
        super().__init__(tmp_path, "--format", "json", "--sketch", *args, **kwargs)

    def honest_total(self) -> float:
        return sum(s["value"] for s in self.worker.json_lines() if s.get("name") == HONEST)


@pytest.fixture
def console(tmp_path):
    yield from pipelines(lambda *args, **kwargs: ConsolePipeline(tmp_path, *args, **kwargs))


def _push_the_attack(p: WorkerPipeline) -> tuple[Pusher, dict[str, int]]:
    """Each forged record in its own message beside an honest counter, then honest messages alone."""
    pusher = Pusher(p.base)
    expected: dict[str, int] = {}
    for name, (reason, summary) in forged_records(time.time()).items():
        pusher.send([("m", name, (summary,), None, ())], honest=1)
        expected[reason] = expected.get(reason, 0) + 1
    return pusher, expected


def _refusals_counted(p: WorkerPipeline, expected: dict[str, int]) -> dict:
    total = sum(expected.values())
    return wait_until(
        lambda: (s := p.status())["malformed_records"] >= total and s,
        timeout=15,
        message=f"{total} malformed records in the worker's status",
    )


def test_forged_summaries_are_refused_alone_and_the_console_worker_keeps_delivering(console):
    p = console(flush=1)
    pusher, expected = _push_the_attack(p)
    try:
        status = _refusals_counted(p, expected)
        expect(status["malformed_by_reason"]) == expected
        expect(status["malformed"]) == 0  # no whole message was refused
        flushes = status["flushes"]
        for i in range(3):  # later messages, across flushes
            pusher.send([], honest=10)
        wait_until(lambda: p.status()["flushes"] >= flushes + 2, timeout=15, message="two more flushes")
        wait_until(lambda: p.honest_total() == pusher.honest_sent, timeout=15, message="every honest count")
    finally:
        pusher.close()
    expect(p.worker.process.poll()) == None  # still running
    expect(p.status()["series_failed"]) == 0
    expect([s["name"] for s in p.worker.json_lines() if s["name"].startswith("forged.")]) == []
    expect(p.worker.stderr).contains("dropped malformed summary record")
    expect(p.worker.stderr).does_not_contain("Traceback")
    p.stop_worker()


def test_a_wide_but_honest_sketch_is_merged_without_stalling_the_worker(console):
    """2,048 contiguous buckets at scale 20 (the most a sketch may carry): accepted, merged in one pass."""
    p = console(flush=1)
    pusher = Pusher(p.base)
    try:
        now = time.time()
        wide = _timer(now, _sketch(scale=20, offset=-1024, counts=(1,) * 2048))
        pusher.send([("m", "wide", (wide,), None, ())], honest=1)
        wait_until(
            lambda: any(s["name"] == "wide" for s in p.worker.json_lines()), timeout=15, message="the wide series"
        )
        wait_until(lambda: p.honest_total() == 1, timeout=15, message="the honest count")
    finally:
        pusher.close()
    [wide] = [s for s in p.worker.json_lines() if s["name"] == "wide"]
    expect(wide["count"]) == 2048
    expect(-10 <= wide["sketch"]["scale"] <= 20) == True
    expect(p.status()["malformed_records"]) == 0
    p.stop_worker()


# --- OTLP, delta and cumulative: item 4 (zero_count -5) and item 9 (scale) ---------------------


class OtlpPipeline(WorkerPipeline):
    script = "zibrato-otlp"
    ready_log = "otlp worker"

    def __init__(self, tmp_path, fake, *args, **kwargs):
        self.fake = fake
        super().__init__(tmp_path, "--endpoint", fake.endpoint, *args, **kwargs)


@pytest.fixture
def otlp():
    with FakeOtlp() as fake:
        yield fake


@pytest.fixture
def otlp_pipeline(tmp_path, otlp):
    yield from pipelines(lambda *args, **kwargs: OtlpPipeline(tmp_path, otlp, *args, **kwargs))


@pytest.mark.parametrize("temporality", ["delta", "cumulative"])
def test_forged_summaries_never_poison_otlp_and_later_intervals_are_delivered(otlp_pipeline, otlp, temporality):
    p = otlp_pipeline("--temporality", temporality, flush=1)
    pusher, expected = _push_the_attack(p)
    try:
        status = _refusals_counted(p, expected)
        expect(status["malformed_by_reason"]) == expected
        for i in range(3):
            pusher.send([], honest=10)
        total = pusher.honest_sent

        def honest_delivered() -> bool:
            points = otlp.points(HONEST)
            if temporality == "cumulative":
                return bool(points) and points[-1].value == total
            return sum(point.value for point in points) == total

        otlp.wait_for(honest_delivered, timeout=15)
        flushes = p.status()["flushes"]
        pusher.send([], honest=5)  # and one interval more, after the running totals moved on
        total += 5
        otlp.wait_for(honest_delivered, timeout=15)
        expect(p.status()["flushes"] > flushes) == True
    finally:
        pusher.close()
    expect(otlp.violations) == []
    expect([pt.metric for pt in otlp.points() if pt.metric.startswith("forged.")]) == []
    expect(all(-10 <= pt.proto.scale <= 20 for pt in otlp.points() if pt.kind == "exponential_histogram")) == True
    expect(p.worker.process.poll()) == None
    p.stop_worker()


# --- Prometheus: item 9 --------------------------------------------------------------------------


class PrometheusPipeline(WorkerPipeline):
    script = "zibrato-prometheus"
    ready_log = "prometheus worker"

    def __init__(self, tmp_path, *args, **kwargs):
        super().__init__(tmp_path, "--listen", "127.0.0.1:0", *args, **kwargs)


@pytest.fixture
def prometheus(tmp_path):
    yield from pipelines(lambda *args, **kwargs: PrometheusPipeline(tmp_path, *args, **kwargs))


def test_forged_summaries_never_make_the_prometheus_worker_raise(prometheus):
    import urllib.request

    p = prometheus(flush=1)
    pusher, expected = _push_the_attack(p)
    try:
        status = _refusals_counted(p, expected)
        expect(status["malformed_by_reason"]) == expected
        pusher.send([], honest=10)
        url = f"http://{p.status()['listen']}/metrics"

        def honest_exposed() -> bool:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = answer.read().decode()
            return f'honest_requests_total{{level="info"}} {float(pusher.honest_sent)}' in text

        wait_until(honest_exposed, timeout=15, message="the honest counter on /metrics")
    finally:
        pusher.close()
    expect(p.worker.process.poll()) == None
    expect(p.worker.stderr).does_not_contain("Traceback")
    p.stop_worker()


# --- the web worker: item 1 (it exited 1 at the flush after the forged sketch) --------------------


class WebPipeline(WorkerPipeline):
    script = "zibrato-web"
    ready_log = "web worker"

    def __init__(self, tmp_path, *args, **kwargs):
        super().__init__(tmp_path, "--listen", "127.0.0.1:0", *args, **kwargs)


@pytest.fixture
def web(tmp_path):
    yield from pipelines(lambda *args, **kwargs: WebPipeline(tmp_path, *args, **kwargs))


def test_forged_summaries_never_stop_the_web_worker(web):
    p = web(flush=1)
    pusher, expected = _push_the_attack(p)
    try:
        status = _refusals_counted(p, expected)
        expect(status["malformed_by_reason"]) == expected
        flushes = status["flushes"]
        pusher.send([], honest=10)
        wait_until(lambda: p.status()["flushes"] >= flushes + 2, timeout=15, message="two more flushes")
        wait_until(lambda: p.status()["intervals_held"] >= 2, timeout=15, message="intervals in the page's history")
    finally:
        pusher.close()
    expect(p.worker.process.poll()) == None
    expect(p.status()["series_failed"]) == 0
    expect(p.worker.stderr).does_not_contain("Traceback")
    p.stop_worker()
