"""zibrato.otel against the OpenTelemetry SDK, and against the Zibrato client's own calls.

Run through ``bench/run client [--quick]`` (after the client's own tables, same run) or
alone through ``bench/run otel [--quick]``. In one process, with a real
``zibrato-broker`` listening, each statement runs in a tight ``timeit`` loop
(garbage collector on), timed as the *process's* CPU time (every thread:
Zibrato's sender thread and libzmq's I/O thread count, as do the SDK's), with
the work each library still holds at the end of a loop included (``z.flush``;
the SDK's reader collecting). Repeats are interleaved across statements, so a
noisy moment of the shared machine hits them all; each figure is the median,
minus the median of an empty statement.

The rows: ``Counter.add`` and ``Histogram.record`` with no attributes and with
three (a repeated dict, as an instrumented app passes per request; and two
sets in turn, the worst case of zibrato.otel's comparison with the last set), through
``zibrato.otel.MeterProvider`` and through the SDK's ``MeterProvider`` with an
in-memory reader; ``z.count`` and ``@z.time_me`` (minus the no-op it wraps) for
scale. The targets (issue 26): a tenth of the SDK's cost per record or less, and
``Counter.add(1, attrs)`` at most 2x ``z.count``.
"""

from __future__ import annotations

import argparse
import gc
import time
import timeit

import _common as c

ATTRS = {"http.request.method": "GET", "http.route": "/users/{id}", "http.response.status_code": 200}
OTHER = {"http.request.method": "GET", "http.route": "/users/{id}", "http.response.status_code": 404}
#: statements that make two calls (two attribute sets in turn): their figure is per call
TWO_CALLS = {"zo.add.alt", "sdk.add.alt"}

#: (key, label, statement, baseline key)
CASES = [
    ("empty", "empty statement", "pass", None),
    ("noop", "bare `noop()`", "noop()", "empty"),
    ("z.count", "`z.count('info', name)`", "z.count('info', 'bench.count')", "empty"),
    ("z.count.tags", "`z.count(...)` with 3 tags (a tuple)", "z.count('info', 'bench.count', 1, None, TAGS)", "empty"),
    ("z.timing", "`z.timing('info', name, s)`", "z.timing('info', 'bench.timing', 0.0042)", "empty"),
    ("z.time_me", "`@z.time_me` (minus the no-op)", "z_time_me()", "noop"),
    ("zo.add", "zibrato.otel `Counter.add(1)`", "zo_counter.add(1)", "empty"),
    ("zo.add.attrs", "zibrato.otel `Counter.add(1, attrs)`", "zo_counter.add(1, ATTRS)", "empty"),
    (
        "zo.add.alt",
        "zibrato.otel `Counter.add(1, attrs)`, 2 sets in turn",
        "zo_counter.add(1, ATTRS); zo_counter.add(1, OTHER)",
        "empty",
    ),
    ("zo.record", "zibrato.otel `Histogram.record(s)`", "zo_histogram.record(0.0042)", "empty"),
    ("zo.record.attrs", "zibrato.otel `Histogram.record(s, attrs)`", "zo_histogram.record(0.0042, ATTRS)", "empty"),
    ("sdk.add", "SDK `Counter.add(1)`", "sdk_counter.add(1)", "empty"),
    ("sdk.add.attrs", "SDK `Counter.add(1, attrs)`", "sdk_counter.add(1, ATTRS)", "empty"),
    (
        "sdk.add.alt",
        "SDK `Counter.add(1, attrs)`, 2 sets in turn",
        "sdk_counter.add(1, ATTRS); sdk_counter.add(1, OTHER)",
        "empty",
    ),
    ("sdk.record", "SDK `Histogram.record(s)`", "sdk_histogram.record(0.0042)", "empty"),
    ("sdk.record.attrs", "SDK `Histogram.record(s, attrs)`", "sdk_histogram.record(0.0042, ATTRS)", "empty"),
]
FINISH = {"z": "z.flush(10.0)", "zo": "z.flush(10.0)", "sdk": "sdk_reader.collect()"}
PAIRS = [  # (zibrato.otel, what it is compared with)
    ("zo.add", "sdk.add"),
    ("zo.add.attrs", "sdk.add.attrs"),
    ("zo.add.alt", "sdk.add.alt"),
    ("zo.record", "sdk.record"),
    ("zo.record.attrs", "sdk.record.attrs"),
    ("zo.add", "z.count"),
    ("zo.add.attrs", "z.count"),
    ("zo.add.attrs", "z.count.tags"),
    ("zo.add.alt", "z.count.tags"),
    ("zo.record", "z.timing"),
    ("zo.record", "z.time_me"),
]


def noop():
    pass


def build(port: int) -> tuple[dict, object]:
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from zibrato import Zibrato
    from zibrato.otel import MeterProvider

    z = Zibrato("127.0.0.1", port)
    zo_meter = MeterProvider(z).get_meter("bench")
    sdk_reader = InMemoryMetricReader()
    sdk_meter = SdkMeterProvider(metric_readers=[sdk_reader]).get_meter("bench")
    ns = {
        "noop": noop,
        "z": z,
        "TAGS": ("http.request.method:GET", "http.response.status_code:200", "http.route:/users/{id}"),
        "ATTRS": ATTRS,
        "OTHER": OTHER,
        "z_time_me": z.time_me("info", "bench.time_me")(noop),
        "zo_counter": zo_meter.create_counter("bench.otel.counter"),
        "zo_histogram": zo_meter.create_histogram("bench.otel.duration", unit="s"),
        "sdk_reader": sdk_reader,
        "sdk_counter": sdk_meter.create_counter("bench.sdk.counter"),
        "sdk_histogram": sdk_meter.create_histogram("bench.sdk.duration", unit="s"),
    }
    return ns, z


def measure(ns: dict, repeats: int, number: int) -> dict[str, list[float]]:
    """{key: [CPU seconds per call, one per repeat]}, finish included."""
    timers = {}
    for key, _label, stmt, _base in CASES:
        library = key.split(".")[0]
        finish = compile(FINISH.get(library, "pass"), key, "exec")
        timers[key] = (timeit.Timer(stmt, setup="import gc; gc.enable()", globals=ns), finish)
        exec(stmt, ns)  # the first call: starts the sender, validates, caches
    for timer, _finish in timers.values():  # warm up
        timer.timeit(min(number, 5000))
    results: dict[str, list[float]] = {key: [] for key in timers}
    for _ in range(repeats):
        for key, (timer, finish) in timers.items():
            ns["z"].flush(10.0)
            ns["sdk_reader"].collect()
            gc.collect()
            start = time.process_time()
            timer.timeit(number)
            exec(finish, ns)
            results[key].append((time.process_time() - start) / number)
    return results


def run(quick: bool, repeats: int | None = None) -> str:
    """The whole comparison against a broker of its own: its Markdown report (also saved as JSON).

    ``bench/run client`` prints it after the client's own tables (the SDK's peer rows, same
    run); ``bench/run otel`` runs it alone.
    """
    repeats = repeats or (3 if quick else 9)
    number = 20_000 if quick else 100_000

    port = c.free_port_run(3)
    broker = c.start("zibrato-broker", "--port", port, "--status-port", 0, "--startup-grace", 0.1)
    try:
        time.sleep(0.5)  # its start-up grace, and its PULL bound
        if broker.poll() is not None:
            raise RuntimeError("zibrato-broker exited at start")
        ns, z = build(port)
        results = measure(ns, repeats, number)
        z.flush(5.0)
        sent, dropped = z.sent, z.dropped
        z.close()
    finally:
        c.stop(broker)

    medians = {key: c.median(values) for key, values in results.items()}
    ns_per_call = {
        key: (medians[key] - (medians[base] if base else 0.0)) * 1e9 / (2 if key in TWO_CALLS else 1)
        for key, _label, _stmt, base in CASES
    }
    labels = {key: label for key, label, _stmt, _base in CASES}
    rows = []
    for mine, other in PAIRS:
        ratio = ns_per_call[mine] / ns_per_call[other] if ns_per_call[other] > 0 else float("nan")
        rows.append((labels[mine], labels[other], f"{ratio:.2f}x"))
    c.save_json("otel" + ("-quick" if quick else ""), {"ns_per_call": ns_per_call, "raw": results})
    return "\n".join(
        [
            f"## zibrato.otel vs the OpenTelemetry SDK\n\n{c.machine()}; {repeats} x {number:,} calls each.\n",
            "### ns per call (process CPU, median, minus the baseline)\n",
            c.table(["statement", "ns per call"], [(labels[k], ns_per_call[k]) for k, *_ in CASES if k != "empty"]),
            "\n### Ratios (same run)\n",
            c.table(["zibrato.otel", "compared with", "ratio"], rows),
            f"\nZibrato client: {sent:,} measurements sent, {dropped:,} dropped.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (a few seconds)")
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args()
    print(run(args.quick, args.repeats))


if __name__ == "__main__":
    main()
