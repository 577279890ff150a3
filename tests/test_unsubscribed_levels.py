"""The broker learns the workers' subscriptions (XPUB) and counts measurements on levels nobody receives."""

from __future__ import annotations

import logging

import msgpack

from support.daemons import Daemon, free_ports, wait_until
from zibrato import Zibrato
from zibrato.runtime import ask_status
from zibrato.subscriptions import SubscriptionTable, UnsubscribedCount, measurements_in


def test_zibrato_status_lists_levels_no_worker_subscribes_to_with_their_counts(tmp_path):
    port = free_ports(4)
    broker = Daemon(tmp_path, "zibrato-broker", "--port", port, "--startup-grace", "0").start()
    worker = Daemon(
        tmp_path,
        "zibrato-console",
        "--broker",
        f"127.0.0.1:{port + 1}",
        "--levels",
        "info",
        "--flush",
        "0.3",
        "--format",
        "json",
    ).start()
    try:
        broker.wait_for_log("broker ready")
        worker.wait_for_log("console worker: levels info")
        wait_until(
            lambda: ask_status("127.0.0.1", port + 2)["subscribed_levels"] == ["info"],
            timeout=10,
            message="the broker seeing the worker's subscription",
        )
        with Zibrato(port=port) as z:
            for _ in range(5):
                z.count("info", "seen")
            for _ in range(7):
                z.count("debug", "unseen", 2)
            z.timing("crit", "unseen.timer", seconds=0.1)
            z.flush()
        seen: list = []

        def counted():
            seen.append(ask_status("127.0.0.1", port + 2, timeout=5)["unsubscribed_levels"])
            # only these levels: a stray daemon of another test on this shared machine may send its
            # self-metrics (level 'zibrato') to a port it used to know
            return {level: seen[-1].get(level) for level in ("debug", "crit", "info")} == {
                "debug": 7,
                "crit": 1,
                "info": None,
            }

        wait_until(
            counted, timeout=20, message=f"7 debug and 1 crit measurements counted as unsubscribed ({seen[-1:]})"
        )
        wait_until(
            lambda: any(s["name"] == "seen" for s in worker.json_lines()), timeout=10, message="info at the worker"
        )
    finally:
        worker.stop()
        broker.stop()
    assert "broker stopped" in broker.stderr


def test_a_worker_that_leaves_takes_its_subscription_with_it():
    table = SubscriptionTable()
    table.apply(b"\x01info\x00")
    table.apply(b"\x01info\x00")  # two workers on info
    table.apply(b"\x01warn\x00\x00\x03")  # a shard of warn
    assert table.covers(b"info") and table.covers(b"warn") and not table.covers(b"inf")
    table.apply(b"\x00info\x00")
    assert table.covers(b"info")
    table.apply(b"\x00info\x00")
    assert not table.covers(b"info") and table.levels() == ["warn"]
    table.apply(b"\x01")  # a worker with --levels all
    assert table.covers(b"anything") and table.levels() == ["*", "warn"]


def test_one_log_line_per_level_a_minute(caplog):
    now = [0.0]
    count = UnsubscribedCount(every=60.0, clock=lambda: now[0])
    count.add(b"debug", 1000)
    count.add(b"debug", 234)
    count.add(b"crit", 1)
    count.add(b"zibrato", 44)  # the daemons' own figures: counted, never logged about
    with caplog.at_level(logging.WARNING, logger="zibrato.broker"):
        count.report()  # not a minute yet
        now[0] = 61.0
        count.report()
        count.report()  # nothing new in this minute
    assert [r.getMessage()[:70] for r in caplog.records] == [
        "level 'crit': 1 measurements in the last minute, no worker subscribes ",
        "level 'debug': 1,234 measurements in the last minute, no worker subscr",
    ]
    assert count.totals == {"debug": 1234, "crit": 1, "zibrato": 44}


def test_measurements_are_counted_from_the_header_and_value_arrays_only():
    frame = b"debug\x00" + msgpack.packb([1, 1.5, [["c", "a", [1, 2, 3], None, []], ["t", "b", [0.1], "s", []]]])
    assert measurements_in(frame) == 4
    assert measurements_in(b"debug\x00not msgpack") == 0
