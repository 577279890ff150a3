"""Histograms, sets, sample rates and float counters from the client through a real broker and
a real console worker (protocol 1.1 end to end)."""

from __future__ import annotations

import signal

import pytest
from expecter import expect

from support.pipeline import WorkerPipeline, pipelines
from zibrato import Zibrato


class Pipeline(WorkerPipeline):
    """A broker and one console worker printing JSON lines."""

    def __init__(self, tmp_path, *worker_args, **kwargs):
        super().__init__(tmp_path, "--format", "json", *worker_args, **kwargs)

    def stop_worker(self, signum=signal.SIGTERM):
        super().stop_worker(signum)
        return {(s["type"], s["name"]): s for s in self.worker.json_lines() if s["name"] != "warmup"}


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: Pipeline(tmp_path, *args, **kwargs))


def test_new_kinds_and_sample_rates_arrive_and_are_weighted(pipeline):
    p = pipeline()
    draws = iter([0.05, 0.5] * 10)  # one call in two passes rate 0.1
    z = Zibrato(port=p.client.port, random=lambda: next(draws))  # the draws sampling compares with the rate
    for size in (5120, 880, 3000):
        z.histogram("info", "response.size", size, unit="bytes")
    for member in ("u-17", "u-42", "u-17", 99):
        z.set("info", "users.active", member)
    z.count("info", "ratio", 0.25)
    z.count("info", "ratio", 0.5)
    for _ in range(10):
        z.count("info", "cache.miss", 1, rate=0.1)
    for _ in range(4):
        z.timing("info", "db", 0.002, rate=0.1)
    z.close()
    p.wait_measurements(3 + 4 + 2 + 5 + 2)

    summaries = p.stop_worker()
    histogram = summaries["histogram", "response.size"]
    expect((histogram["count"], histogram["sum"], histogram["min"], histogram["max"])) == (3, 9000, 880, 5120)
    expect(histogram["unit"]) == "bytes"
    expect(summaries["set", "users.active"]["value"]) == 3
    expect(summaries["counter", "ratio"]["value"]) == 0.75
    expect(summaries["counter", "cache.miss"]["value"]) == 50  # 5 kept, each counting 10
    expect(summaries["timer", "db"]["count"]) == 20  # 2 kept, each 10 observations
