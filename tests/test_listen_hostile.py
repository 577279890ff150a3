"""Issue 22, item 3 and item 10 (listener part): zibrato-listen never publishes a non-finite value,
and the gauges it remembers for deltas are bounded.

Real broker, console worker and listener, in threads (tests/test_listen.py's pipeline):
a counter whose sample rate makes 1/rate infinite, a counter that overflows
once scaled, and a delta gauge that overflows (``g:+1e308|g`` twice) travel
in datagrams beside an honest counter. Before the fix the listener sent
infinities, the worker refused the whole message and the honest counts in
it were lost while the listener counted them as sent.
"""

from __future__ import annotations

from expecter import expect
from test_listen import listen_pipeline, send_udp  # noqa: F401 - the fixture and the sender

from support.daemons import wait_until

HONEST = b"honest:1|c"


def test_non_finite_results_are_refused_by_reason_and_the_rest_of_the_batch_arrives(listen_pipeline):  # noqa: F811
    p = listen_pipeline()
    datagrams = [
        HONEST + b"\nx:1|c|@1e-320\n" + HONEST,  # 1/rate is infinite
        HONEST + b"\ny:1e300|c|@1e-10\n" + HONEST,  # finite rate, infinite once scaled
        HONEST + b"\ng:+1e308|g\n" + HONEST,  # a delta gauge: fine once ...
        HONEST + b"\ng:+1e308|g\n" + HONEST,  # ... its sum overflows
        HONEST + b"\npacked:1:1e300|c|@1e-10\n" + HONEST,  # packed values, scaled
    ]
    for datagram in datagrams:
        send_udp(p.statsd_port, datagram)
    p.wait_lines(2 * len(datagrams) + 1)
    status = p.listen_status()
    expect(status["rejected"]) == {"bad rate": 1, "non-finite after rate": 2, "non-finite gauge": 1}
    send_udp(p.statsd_port, b"g:-1e308|g\n" + HONEST)  # the gauge kept its last finite value
    p.wait_values(2 * len(datagrams) + 1 + 2)
    worker = p.status()
    expect(worker["malformed"]) == 0  # the worker refused no message
    expect(worker["non_finite_dropped"]) == 0
    summaries = p.summaries()
    expect(summaries["honest"]["value"]) == 2 * len(datagrams) + 1
    expect(summaries["g"]["value"]) == 0.0
    expect(summaries["g"]["max"]) == 1e308
    expect(p.listener.running) == True


def test_idle_gauges_are_forgotten_and_counted(listen_pipeline):  # noqa: F811
    p = listen_pipeline(gauge_expire=1)
    send_udp(p.statsd_port, b"depth:5|g")
    p.wait_lines(1)
    wait_until(lambda: p.listen_status()["gauges_expired"] >= 1, timeout=10, message="the idle gauge forgotten")
    expect(p.listen_status()["gauges_held"]) == 0
    send_udp(p.statsd_port, b"depth:+1|g")  # a delta now starts from 0, as for a new gauge
    p.wait_lines(2)
    p.wait_values(2)
    expect(p.summaries()["depth"]["value"]) == 1.0


def test_the_gauges_remembered_are_bounded_by_max_gauges(listen_pipeline):  # noqa: F811
    p = listen_pipeline(max_gauges=10)
    for i in range(60):
        send_udp(p.statsd_port, b"g%d:1|g" % i)
        p.wait_lines(i + 1)
        expect(p.listen_status()["gauges_held"] <= 2 * 10 + 1) == True
    expect(p.listen_status()["gauges_expired"] >= 60 - 2 * 10 - 1) == True


def test_a_tag_without_a_key_is_a_bad_tag_and_a_bare_tag_is_kept(listen_pipeline):  # noqa: F811
    p = listen_pipeline()
    send_udp(p.statsd_port, b"x:1|c|#:prod\n" + HONEST + b"|#canary")
    p.wait_lines(1)
    expect(p.listen_status()["rejected"]) == {"bad tag": 1}
    p.wait_values(1)
    honest = p.summaries()["honest"]
    expect((honest["value"], honest["tags"])) == (1, ["canary"])
