"""The Etsy statsd harness (tests/support/etsy_statsd.py) against the real statsd 0.9.0.

Raw statsd lines are sent with plain sockets here; what statsd flushed is read
back through the capture backend. No fixed sleeps: everything polls.
"""

from __future__ import annotations

import math
import shutil
import socket

import pytest

from support.etsy_statsd import (
    INSTALL_COMMAND,
    EtsyStatsd,
    StatsdNotInstalled,
    Totals,
)

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None,
    reason=f"Node.js (node) is not on PATH; the real Etsy statsd needs it (then: {INSTALL_COMMAND})",
)

FLUSH_MS = 100


def send_udp(statsd: EtsyStatsd, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, (statsd.host, statsd.port))


def send_tcp(statsd: EtsyStatsd, payload: bytes) -> None:
    with socket.create_connection((statsd.host, statsd.port), timeout=5) as sock:
        sock.sendall(payload)


def wait_for_totals(statsd: EtsyStatsd, predicate, timeout: float = 10.0) -> Totals:
    """Wait until predicate(totals) holds; fail with what was captured if it never does."""
    if not statsd.wait_for(lambda flushes: predicate(statsd.totals(flushes)), timeout):
        pytest.fail(f"statsd never flushed the expected metrics; totals: {statsd.totals()}\n{statsd.log_tail()}")
    return statsd.totals()


@pytest.fixture
def udp_statsd(tmp_path):
    with EtsyStatsd(tmp_path, flush_interval_ms=FLUSH_MS) as statsd:
        yield statsd


@pytest.fixture
def tcp_statsd(tmp_path):
    with EtsyStatsd(tmp_path, flush_interval_ms=FLUSH_MS, protocol="tcp") as statsd:
        yield statsd


def test_udp_counters_gauges_timers_and_sets(udp_statsd):
    send_udp(
        udp_statsd,
        b"a:3|c",
        b"a:4|c\nb:1|c|@0.5",
        b"g:0|g",
        b"g:-5|g",
        b"t:20|ms\nt:10|ms\nt:30|ms",
        b"s:x|s\ns:y|s\ns:x|s",
    )

    totals = wait_for_totals(
        udp_statsd,
        lambda t: (
            t.counters == {"a": 7, "b": 2}
            and t.gauges.get("g") == -5
            and len(t.timers.get("t", [])) == 3
            and t.sets.get("s") == {"x", "y"}
        ),
    )

    assert sorted(totals.timers["t"]) == [10, 20, 30]
    assert totals.bad_lines_seen == 0
    [stats] = udp_statsd.timer_data("t")  # one datagram, so one flush
    assert stats["count"] == 3
    assert stats["lower"] == 10
    assert stats["upper"] == 30
    assert stats["mean"] == 20
    assert stats["median"] == 20
    assert stats["sum"] == 60
    assert stats["upper_90"] == 30  # round(0.9 * 3) = 3rd smallest
    assert stats["count_90"] == 3


def test_timer_data_keys_and_percentiles(udp_statsd):
    send_udp(udp_statsd, b"\n".join(b"t:%d|ms" % v for v in (7, 3, 10, 1, 5, 9, 2, 8, 4, 6)) + b"\nr:100|ms|@0.5")

    totals = wait_for_totals(udp_statsd, lambda t: len(t.timers.get("t", [])) == 10 and "r" in t.timers)

    assert totals.timers["t"] == list(range(1, 11))  # statsd sorts the raw values
    [stats] = udp_statsd.timer_data("t")
    assert set(stats) == {
        "count",
        "count_ps",
        "lower",
        "upper",
        "mean",
        "median",
        "sum",
        "sum_squares",
        "std",
        "count_90",
        "mean_90",
        "upper_90",
        "sum_90",
        "sum_squares_90",
        "count_95",
        "mean_95",
        "upper_95",
        "sum_95",
        "sum_squares_95",
    }
    assert (stats["count"], stats["lower"], stats["upper"]) == (10, 1, 10)
    assert stats["mean"] == 5.5
    assert stats["median"] == 5.5
    assert stats["sum"] == 55
    assert stats["sum_squares"] == 385
    assert stats["std"] == pytest.approx(math.sqrt(8.25))  # population standard deviation
    assert stats["count_ps"] == 10 / (FLUSH_MS / 1000)
    assert (stats["count_90"], stats["upper_90"], stats["mean_90"], stats["sum_90"]) == (9, 9, 5, 45)
    assert (stats["count_95"], stats["upper_95"]) == (10, 10)  # round(9.5) = 10
    # A sample rate scales the count only.
    assert totals.timers["r"] == [100]
    assert totals.timer_counts["r"] == 2
    [r_stats] = udp_statsd.timer_data("r")
    assert (r_stats["count"], r_stats["sum"], r_stats["upper_90"]) == (2, 100, 100)


def test_gauge_signs_are_deltas_unless_the_gauge_is_zero_or_new(udp_statsd):
    send_udp(udp_statsd, b"g:7|g", b"new:-3|g")
    wait_for_totals(udp_statsd, lambda t: t.gauges.get("g") == 7 and t.gauges.get("new") == -3)

    send_udp(udp_statsd, b"g:-5|g")  # the gauge exists: a delta
    wait_for_totals(udp_statsd, lambda t: t.gauges.get("g") == 2)

    send_udp(udp_statsd, b"g:0|g", b"g:-5|g")  # the negative-gauge rule
    totals = wait_for_totals(udp_statsd, lambda t: t.gauges.get("g") == -5)
    assert totals.gauges == {"g": -5, "new": -3}


def test_tcp_server_takes_newline_terminated_lines(tcp_statsd):
    send_tcp(tcp_statsd, b"a:3|c\ng:0|g\ng:-5|g\nt:10|ms\nt:20|ms\nt:30|ms\nt:40|ms\n")
    send_tcp(tcp_statsd, b"a:4|c\nlast:1|c")  # the unterminated last line is never parsed

    wait_for_totals(tcp_statsd, lambda t: t.counters.get("a") == 7 and len(t.timers.get("t", [])) == 4)
    tcp_statsd.stop()  # flushes whatever is left

    totals = tcp_statsd.totals()
    assert totals.counters == {"a": 7}
    assert totals.gauges == {"g": -5}
    assert sorted(totals.timers["t"]) == [10, 20, 30, 40]
    [stats] = tcp_statsd.timer_data("t")
    assert (stats["count"], stats["lower"], stats["upper"], stats["mean"]) == (4, 10, 40, 25)
    assert stats["upper_90"] == 40  # round(3.6) = 4th smallest


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_restart_on_the_same_ports(tmp_path, protocol):
    send = send_udp if protocol == "udp" else lambda s, line: send_tcp(s, line + b"\n")
    statsd = EtsyStatsd(tmp_path, flush_interval_ms=FLUSH_MS, protocol=protocol)
    with statsd:
        ports = (statsd.port, statsd.mgmt_port)
        send(statsd, b"a:1|c")
        wait_for_totals(statsd, lambda t: t.counters.get("a") == 1)
    assert not statsd.running

    with statsd:
        assert (statsd.port, statsd.mgmt_port) == ports
        send(statsd, b"a:2|c")
        wait_for_totals(statsd, lambda t: t.counters.get("a") == 3)

    assert len({flush["pid"] for flush in statsd.flushes()}) == 2


def test_explicit_ports_are_used(tmp_path, udp_statsd):
    # The ports udp_statsd has just released are free: hand them over explicitly.
    port, mgmt_port = udp_statsd.port, udp_statsd.mgmt_port
    udp_statsd.stop()
    with EtsyStatsd(tmp_path, flush_interval_ms=FLUSH_MS, port=port, mgmt_port=mgmt_port) as statsd:
        assert (statsd.port, statsd.mgmt_port) == (port, mgmt_port)
        send_udp(statsd, b"x:1|c")
        wait_for_totals(statsd, lambda t: t.counters.get("x") == 1)


def test_stop_flushes_what_was_received_and_admin_console(tmp_path):
    # A flush interval far longer than the test: only stop() can flush.
    with EtsyStatsd(tmp_path, flush_interval_ms=60_000) as statsd:
        assert statsd.admin("health") == "health: up\n"
        send_udp(statsd, b"pending:5|c\nlevel:42|g")
        # The admin console shows the current, not yet flushed, interval.
        assert statsd.wait_for(lambda _: "pending: 5" in statsd.admin("counters"), timeout=10)
        assert "level: 42" in statsd.admin("gauges")
        assert "messages.bad_lines_seen: 0" in statsd.admin("stats")
        assert statsd.admin("nonsense") == "ERROR\n"
        assert statsd.flushes() == []

    [flush] = statsd.flushes()
    assert flush["counters"] == {"pending": 5}
    assert flush["gauges"] == {"level": 42}


def test_statsd_internal_metrics_are_kept_apart(udp_statsd):
    send_udp(udp_statsd, b"bad:zz|ms\nok:1|c\nalso_bad|c")

    totals = wait_for_totals(udp_statsd, lambda t: t.bad_lines_seen == 2 and t.counters.get("ok") == 1)

    assert totals.counters == {"ok": 1}
    assert totals.packets_received == 1
    assert totals.metrics_received == 3


def test_idle_counters_timers_and_sets_disappear_but_gauges_stay(udp_statsd):
    send_udp(udp_statsd, b"c:1|c\nt:5|ms\ns:a|s\ng:3|g")

    def seen_then_idle(flushes):
        seen = [i for i, f in enumerate(flushes) if "c" in f["counters"]]
        return bool(seen) and len(flushes) > seen[0] + 1

    assert udp_statsd.wait_for(seen_then_idle)
    flushes = udp_statsd.flushes()
    first = next(i for i, f in enumerate(flushes) if "c" in f["counters"])
    idle = flushes[first + 1]
    assert (idle["counters"], idle["timers"], idle["timer_data"], idle["sets"]) == ({}, {}, {}, {})
    assert idle["gauges"] == {"g": 3}


def test_missing_npm_install_names_the_install_command(tmp_path):
    statsd = EtsyStatsd(tmp_path, statsd_dir=tmp_path / "not-installed")
    with pytest.raises(StatsdNotInstalled, match="npm ci --prefix tests/statsd"):
        statsd.start()
    assert not statsd.running


def test_missing_node_is_reported(tmp_path):
    statsd = EtsyStatsd(tmp_path, node="no-such-node-binary")
    with pytest.raises(StatsdNotInstalled, match="not on PATH"):
        statsd.start()
