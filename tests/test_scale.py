"""Issue 15 without processes: summary records, merging per interval, shards, forwarder frames, CURVE keys."""

from __future__ import annotations

import os
import random
import stat

import msgpack
import pytest
import zmq
from click.testing import CliRunner

from zibrato import protocol
from zibrato.aggregation import Aggregator
from zibrato.cli import group
from zibrato.curve import ClientKeys, KeyFileError, create_keys, is_loopback, load_pair, load_public
from zibrato.destination import Interval
from zibrato.forward import Forwarder, LevelAggregators, interval_frames, summary_record
from zibrato.sender import Publisher, Tally, Transport
from zibrato.shard import Shard
from zibrato.sketch import Sketch
from zibrato.worker import parse_hosts


def host_interval(records: list, start: float = 0.0, end: float = 10.0, level: str = "info") -> Interval:
    """What a forwarder flushes for ``records`` (its per-level aggregator)."""
    levels = LevelAggregators(lambda: Aggregator(percentiles=(), max_exact=50, include_interval=True))
    levels.level(level).add_records(records)
    return Interval(start, end, levels.flush(end, end - start))


def merged_at_global(intervals: list[Interval], raw: list | None = None, **options) -> list[dict]:
    """A global aggregator fed every interval's summary messages (decoded from the wire) and raw records."""
    agg = Aggregator(**options)
    for interval in intervals:
        frames, _ = interval_frames(interval, interval.end + 0.1, protocol.MAX_MESSAGE_SIZE)
        for frame in frames:
            agg.add_records(protocol.decode_plain(frame).records)
    if raw:
        agg.add_records(raw)
    return agg.flush(10.0, 10.0)


def by_name(summaries: list[dict]) -> dict[str, dict]:
    return {s["name"]: s for s in summaries}


# --- the wire: summary records and shards ---------------------------------------------------


def test_a_summary_message_round_trips_through_the_decoder_and_is_sharded():
    interval = host_interval([("c", "hits", (1, 2, 3), "h1", ()), ("t", "db", (0.1, 0.2), None, ("a:b",))])
    frames, count = interval_frames(interval, 11.0, protocol.MAX_MESSAGE_SIZE)
    assert count == 2
    decoded = [protocol.decode_plain(f) for f in frames]
    records = {r[1]: r for b in decoded for r in b.records}
    assert records["hits"][0] == protocol.SUMMARY and records["hits"][2][0]["sum"] == 6
    for frame in frames:
        shard = protocol.frame_shard(frame)
        assert shard == protocol.record_shard(protocol.decode_plain(frame).records[0])
        assert frame.startswith(protocol.topic("info", shard))


@pytest.mark.parametrize(
    "summary, reason, text",
    [
        ({"kind": "x", "start": 0, "end": 1}, "summary_kind", "unknown summary kind"),
        ({"kind": "c", "start": 1, "end": 1, "sum": 1, "count": 1}, "summary_time", "start before its end"),
        ({"kind": "c", "start": 0, "end": 1, "sum": float("inf"), "count": 1}, "summary_number", "'sum'"),
        ({"kind": "t", "start": 0, "end": 1, "sum_squares": 1, "sketch": {"scale": 99}}, "sketch_scale", "scale"),
        ({"kind": "t", "start": 0, "end": 1, "sum_squares": 1}, "summary_shape", "needs a sketch map"),
        ({"kind": "c", "start": 0, "end": 1, "sum": 1, "count": 1, "unit": "ms"}, "summary_unit", "only a histogram"),
    ],
)
def test_a_bad_summary_is_refused_alone_with_its_reason(summary, reason, text):
    frame = protocol.encode("info", 1.0, [("m", "x", (summary,), None, ()), ("c", "honest", (1,), None, ())])
    batch = protocol.decode_plain(frame)
    assert [r[1] for r in batch.records] == ["honest"]
    [(name, problem)] = batch.refused
    assert name == "x" and problem.reason == reason and text in problem.message


def test_a_summary_record_must_carry_one_map():
    frame = protocol.encode("info", 1.0, [("m", "x", (1, 2), None, ())])
    batch = protocol.decode_plain(frame)
    assert batch.records == () and batch.refused[0][1].reason == "summary_shape"
    assert "exactly one map" in batch.refused[0][1].message


def test_a_bad_shard_byte_is_rejected_and_an_unsharded_frame_has_no_shard():
    frame = protocol.topic("info") + b"\x00\xff" + msgpack.packb([1, 1.0, []])
    with pytest.raises(protocol.ProtocolError, match="bad shard"):
        protocol.decode_plain(frame)
    assert protocol.frame_shard(protocol.encode("info", 1.0, [])) is None
    assert protocol.decode_plain(protocol.encode("info", 1.0, [("c", "a", (1,), None, ())], 7)).level == "info"


def test_the_shard_of_a_series_is_stable_and_spreads():
    assert protocol.shard_of("c", "hits", None, ()) == protocol.shard_of("c", "hits", None, ())
    shards = {protocol.shard_of("t", f"name.{i}", "host", ("k:v",)) for i in range(2000)}
    assert len(shards) == protocol.SHARDS
    # weight is not part of the series; unit is
    assert protocol.record_shard(("h", "n", (1,), None, (), 2, "ms")) == protocol.shard_of("h", "n", None, (), "ms")


# --- merging: exact totals, percentiles as one worker over all the data -----------------------


def test_merged_summaries_equal_one_worker_over_all_the_raw_data():
    rng = random.Random(7)
    hosts = [[rng.lognormvariate(-4, 1.5) for _ in range(3000)] for _ in range(3)]
    raw_direct = [rng.lognormvariate(-4, 1.5) for _ in range(500)]
    intervals = [
        host_interval(
            [
                ("t", "db", tuple(values), None, ()),
                ("c", "hits", (1,) * len(values), None, ()),
                ("s", "users", tuple(f"u{i % 700}" for i in range(len(values))), None, ()),
            ]
        )
        for values in hosts
    ]
    merged = by_name(
        merged_at_global(intervals, raw=[("t", "db", tuple(raw_direct), None, ())], percentiles=(50, 99, 99.9))
    )
    everything = [v for values in hosts for v in values] + raw_direct
    assert merged["hits"]["value"] == 9000 and merged["hits"]["count"] == 9000
    timer = merged["db"]
    assert timer["count"] == len(everything)
    assert timer["sum"] == pytest.approx(sum(everything), rel=1e-12)
    assert timer["min"] == min(everything) and timer["max"] == max(everything)
    one = Sketch(max_exact=0)
    for v in everything:
        one.add(v)
    ordered = sorted(everything)
    for key, q in (("p50", 0.5), ("p99", 0.99), ("p99_9", 0.999)):
        assert timer[key] == one.quantile(q)  # the same sketch as one worker's over all the data
        exact = ordered[-(-int(q * 1000) * len(ordered) // 1000) - 1]
        assert abs(timer[key] - exact) <= timer["relative_error"] * exact
    assert merged["users"]["value"] == 700


def test_gauges_merge_counts_and_extremes_and_keep_the_latest_last_value():
    agg = Aggregator()
    for last, when in ((5.0, 103.0), (7.0, 101.0)):
        summary = {
            "kind": "g",
            "start": 90.0,
            "end": 100.0,
            "last": last,
            "time": when,
            "count": 2,
            "min": last - 1,
            "max": last + 1,
            "sum": 2 * last,
        }
        agg.add_summary("temp", None, (), summary)
    gauge = agg.flush(100.0, 10.0)[0]
    assert (gauge["value"], gauge["count"], gauge["min"], gauge["max"], gauge["sum"]) == (5.0, 4, 4.0, 8.0, 24.0)
    assert gauge["last_time"] == 103.0


def test_summaries_join_their_interval_while_it_is_held_then_count_as_late():
    agg = Aggregator()
    agg.add_records([("c", "hits", (1,), None, ())])
    agg.hold(0.0, 10.0)
    agg.add_records([("c", "hits", (100,), None, ())])  # raw after the boundary: the next interval
    counter = {"kind": "c", "start": 0.0, "end": 10.0, "sum": 5, "count": 5}
    agg.add_summary("hits", None, (), counter)
    assert agg.late_summaries == 0
    held = agg.flush_held()
    assert held[0]["value"] == 6 and held[0]["time"] == 10.0
    agg.add_summary("hits", None, (), counter)  # too late: into the current interval, counted
    assert agg.late_summaries == 1
    assert agg.flush(20.0, 10.0)[0]["value"] == 105


def test_a_forwarder_keeps_levels_and_sources_unless_told_otherwise():
    levels = LevelAggregators(lambda: Aggregator(include_interval=True))
    levels.level("info").add_records([("c", "a", (1,), "web1", ())])
    levels.level("debug").add_records([("c", "a", (2,), None, ())])
    interval = Interval(0.0, 10.0, levels.flush(10.0, 10.0))
    assert {(s["level"], s["value"]) for s in interval.summaries} == {("info", 1.0), ("debug", 2.0)}
    keep = Forwarder("127.0.0.1:1", source="hostA")
    frames, _ = interval_frames(interval, 11.0, protocol.MAX_MESSAGE_SIZE, keep.fix_source)
    sources = {(protocol.decode_plain(f).level, protocol.decode_plain(f).records[0][3]) for f in frames}
    assert sources == {("info", "web1"), ("debug", "hostA")}
    drop = Forwarder("127.0.0.1:1", drop_source=True)
    frames, _ = interval_frames(interval, 11.0, protocol.MAX_MESSAGE_SIZE, drop.fix_source)
    assert {protocol.decode_plain(f).records[0][3] for f in frames} == {None}


def test_idle_series_forward_nothing_to_merge():
    assert (
        summary_record(
            {"type": "timer", "name": "t", "tags": [], "count": 0, "sum": 0.0, "sum_squares": 0.0, "exact": True},
            0,
            1,
            None,
        )
        is None
    )
    assert summary_record({"type": "set", "name": "s", "tags": [], "value": 0, "sketch": {}}, 0, 1, None) is None


def test_a_big_interval_is_split_into_messages_under_the_limit():
    interval = host_interval([("t", f"t{i}", tuple(float(j) for j in range(1, 60)), None, ()) for i in range(400)])
    frames, count = interval_frames(interval, 11.0, 64 * 1024, records_per_message=10_000)
    assert count == 400 and all(len(f) <= 64 * 1024 for f in frames)
    assert sum(len(protocol.decode_plain(f).records) for f in frames) == 400


def test_the_forwarder_resumes_an_interval_where_it_stopped_when_upstream_is_away():
    """IMMEDIATE=1 with no upstream: Again -> Retryable, and nothing is counted as forwarded."""
    from zibrato.delivery import Retryable

    forwarder = Forwarder("127.0.0.1:1")  # nobody listens there
    forwarder.connect()
    try:
        interval = host_interval([("c", "hits", (1,), None, ())])
        with pytest.raises(Retryable, match="not connected"):
            forwarder.post(interval)
        assert forwarder.counts["forwarded_messages"] == 0 and forwarder.counts["upstream_unavailable"] == 1
    finally:
        forwarder.close()


# --- shards -------------------------------------------------------------------------------------


def test_shard_workers_own_disjoint_shares_that_cover_every_series():
    workers = [Shard.parse(f"{k}/3") for k in range(3)]
    owned = [set(w.shards) for w in workers]
    assert set().union(*owned) == set(range(protocol.SHARDS))
    assert sum(len(o) for o in owned) == protocol.SHARDS
    records = [("c", f"n{i}", (1,), None, ()) for i in range(300)]
    kept = [w.own_records(records) for w in workers]
    assert sorted(r[1] for k in kept for r in k) == sorted(r[1] for r in records)


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "0/0", "0/65"])
def test_a_bad_shard_is_a_clear_error(text):
    with pytest.raises(ValueError):
        Shard.parse(text)


def test_a_sharding_client_sends_each_series_under_its_shard_prefix():
    class Frames(Transport):
        frames: list = []

        def send(self, frame: bytes, last: bool = True) -> bool:
            self.frames.append(frame)
            return True

    transport = Frames()
    publisher = Publisher(transport, Tally(), 1000, protocol.MAX_MESSAGE_SIZE, shards=True)
    items = [(("info", "c", f"n{i}", None, (), None, None), 1) for i in range(50)]
    publisher.publish(items)
    frames = transport.frames
    assert len(frames) > 1
    for frame in frames:
        shard = protocol.frame_shard(frame)
        assert all(protocol.record_shard(r) == shard for r in protocol.decode_plain(frame).records)
    assert sum(len(protocol.decode_plain(f).records) for f in frames) == 50


def test_a_sharded_worker_subscribes_to_its_shards_and_to_unsharded_messages():
    worker = Shard.parse("1/4")
    prefixes = worker.subscriptions("info")
    assert protocol.topic("info", 1) in prefixes and protocol.topic("info", 0) not in prefixes
    assert protocol.topic("info") + b"\x93" in prefixes
    assert protocol.encode("info", 1.0, []).startswith(protocol.topic("info") + protocol.UNSHARDED_MARK)
    assert not any(p.startswith(b"information") for p in prefixes)


# --- several brokers -----------------------------------------------------------------------------


def test_hosts_parse_as_repeated_or_comma_lists_with_ports():
    assert parse_hosts(["10.0.0.1,10.0.0.2:6551", "[::1]:7000", "10.0.0.1"], 5551) == [
        "tcp://10.0.0.1:5551",
        "tcp://10.0.0.2:6551",
        "tcp://[::1]:7000",
    ]
    for bad in (["a:0"], ["a:x"], [","], ["[::1]x"]):
        with pytest.raises(ValueError):
            parse_hosts(bad, 5551)


# --- CURVE keys ---------------------------------------------------------------------------------


def test_keys_are_written_in_pyzmq_format_with_a_private_secret(tmp_path):
    result = CliRunner().invoke(group, ["keys", "broker", "--dir", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    public, secret = tmp_path / "k" / "broker.key", tmp_path / "k" / "broker.key_secret"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert zmq.auth.load_certificate(str(public))[1] is None
    assert load_pair(secret)[0] == load_public(public)
    again = CliRunner().invoke(group, ["keys", "broker", "--dir", str(tmp_path / "k")])
    assert again.exit_code == 2 and "already exists" in again.output


def test_client_keys_need_both_files_and_real_certificates(tmp_path):
    create_keys("c", tmp_path)
    (tmp_path / "junk").write_text("not a key")
    assert ClientKeys.from_options(None, None) is None
    with pytest.raises(KeyFileError, match="both"):
        ClientKeys.from_options(tmp_path / "c.key_secret", None)
    with pytest.raises(KeyFileError, match="no secret"):
        ClientKeys.from_options(tmp_path / "c.key", tmp_path / "c.key")
    with pytest.raises(KeyFileError):
        ClientKeys.from_options(tmp_path / "junk", tmp_path / "c.key")


def test_loopback_is_recognised():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "example.com", "*"))


def test_few_values_travel_as_values_and_stay_exact_upstream():
    levels = LevelAggregators(lambda: Aggregator(percentiles=(), include_interval=True, values_up_to=64))
    levels.level("info").add_records(
        [("t", "db", (0.3, 0.1, 0.2), None, ()), ("h", "size", (5, 7), None, (), None, "bytes")]
    )
    interval = Interval(0.0, 10.0, levels.flush(10.0, 10.0))
    frames, _ = interval_frames(interval, 10.1, protocol.MAX_MESSAGE_SIZE)
    maps = [r[2][0] for f in frames for r in protocol.decode_plain(f).records]
    assert all("values" in m and "sketch" not in m for m in maps)
    agg = Aggregator(percentiles=(50, 100))
    for frame in frames:
        agg.add_records(protocol.decode_plain(frame).records)
    agg.add_records([("t", "db", (0.4,), None, ())])
    merged = by_name(agg.flush(10.0, 10.0))
    assert merged["db"]["exact"] and (merged["db"]["p50"], merged["db"]["count"]) == (0.2, 4)
    assert merged["size"]["unit"] == "bytes" and merged["size"]["sum"] == 12


def test_a_forwarder_sends_the_time_of_each_gauge_s_last_value():
    levels = LevelAggregators(lambda: Aggregator(include_interval=True))
    agg = levels.level("info")
    agg.add_records([("g", "temp", (3, 4), None, ())])
    agg.stamp_gauges([("g", "temp", (3, 4), None, ())], 105.5)
    interval = Interval(100.0, 110.0, levels.flush(110.0, 10.0))
    record = summary_record(interval.summaries[0], 100.0, 110.0, None)
    assert (record[2][0]["last"], record[2][0]["time"], record[2][0]["count"]) == (4, 105.5, 2)


def test_a_worker_holds_intervals_open_once_summaries_arrive():
    """Before any summary, a boundary flushes at once; after one, the interval waits for its lateness."""
    from zibrato.destination import Destination
    from zibrato.worker import Worker

    class Nowhere(Destination):
        name = "nowhere"

    now = [100.0]
    worker = Worker(Nowhere(), flush_interval=10.0, lateness=3.0, clock=lambda: now[0], self_level=None)
    worker.ingest(protocol.encode("info", 95.0, [("c", "raw", (1,), None, ())]))
    assert worker.close_interval(90.0, 100.0) is not None  # no summary yet: flushed on the boundary
    summary = {"kind": "c", "start": 100.0, "end": 110.0, "sum": 5, "count": 5}
    worker.ingest(protocol.encode("info", 109.0, [("m", "hits", (summary,), "h1", ())], 3))
    now[0] = 110.0
    assert worker.close_interval(100.0, 110.0) is None  # held for summaries still on their way
    worker.ingest(protocol.encode("info", 110.5, [("m", "hits", (summary,), "h2", ())], 3))
    worker.ingest(protocol.encode("info", 110.6, [("c", "raw", (1,), None, ())]))  # raw: the next interval
    now[0] = 113.0
    held = worker.flush_held()
    assert {(s["name"], s["source"]) for s in held.summaries} == {("hits", "h1"), ("hits", "h2")}
    assert worker.figures()["late_summaries"] == 0 and worker.figures()["summaries_merged"] == 2
    worker.ingest(protocol.encode("info", 113.5, [("m", "hits", (summary,), "h3", ())], 3))  # too late
    assert worker.figures()["late_summaries"] == 1
    final = worker.flush(110.0, 120.0)
    assert {(s["name"], s["source"]) for s in final.summaries} == {("raw", None), ("hits", "h3")}
