"""The l2met parser alone: log lines and logplex drain bodies in, series and values out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.lanes import examples
from zibrato.listen.l2met import L2metParser, syslog_header
from zibrato.listen.series import Rejects, Series


def frame(message: str, app: str = "app", procid: str = "web.1") -> bytes:
    """One logplex frame: octet count, then RFC5424 without structured data."""
    body = f"<40>1 2026-12-02T06:45:29+00:00 host {app} {procid} - {message}".encode()
    return b"%d %s" % (len(body), body)


def line(text: str, **options) -> tuple[L2metParser, dict]:
    parser = L2metParser(level="logs")
    pending: dict = {}
    parser.feed_line(text, pending, **options)
    return parser, pending


def by_name(pending: dict) -> dict:
    return {s.name: (s.type, s.source, s.unit, v) for s, v in pending.items()}


def test_conventions():
    _, pending = line(
        "at=info measure#db.latency=4ms measure#db.rows=12rows count#hits "
        "count#errors=3 sample#db.size=100GB measure.legacy=2s source=prod source=ignored"
    )
    assert by_name(pending) == {
        "db.latency": ("t", "prod", None, [0.004]),
        "db.rows": ("h", "prod", "rows", [12.0]),
        "hits": ("c", "prod", None, [1.0]),
        "errors": ("c", "prod", None, [3.0]),
        "db.size": ("g", "prod", None, [100.0]),
        "legacy": ("t", "prod", None, [2.0]),
    }
    assert all(s.level == "logs" for s in pending)


@pytest.mark.parametrize("text,seconds", [("5ns", 5e-9), ("5us", 5e-6), ("5ms", 0.005), ("5s", 5.0)])
def test_time_units_become_seconds(text, seconds):
    _, pending = line(f"measure#t={text}")
    assert by_name(pending)["t"] == ("t", None, None, [pytest.approx(seconds)])


def test_a_histogram_unit_is_part_of_the_series_and_no_unit_is_none():
    _, pending = line("measure#size=5MB measure#size=7kB measure#size=3")
    units = sorted((s.unit or "", v) for s, v in pending.items())
    assert units == [("", [3.0]), ("MB", [5.0]), ("kB", [7.0])]
    assert all(s.needs_1_1 for s in pending)


def test_negative_values_parse():
    _, pending = line("sample#temp=-4.5 count#balance=-3 measure#delta=-2.5e3bytes")
    assert by_name(pending) == {
        "temp": ("g", None, None, [-4.5]),
        "balance": ("c", None, None, [-3.0]),
        "delta": ("h", None, "bytes", [-2500.0]),
    }


def test_a_bad_tuple_is_counted_and_skipped_the_rest_kept():
    seen = []
    parser = L2metParser(rejects=Rejects(lambda why, what: seen.append((why, what))))
    pending: dict = {}
    accepted = parser.feed_line(
        "measure#a=abc count#b=2 measure#c=1e999 sample#=3 measure#d=4\u00b5s measure#e=1ms", pending
    )
    assert accepted == 2 and by_name(pending).keys() == {"b", "e"}
    assert dict(parser.rejects.counts) == {"bad value": 1, "non-finite value": 1, "bad name": 1, "bad unit": 1}
    assert ("bad value", "measure#a=abc") in seen


def test_drain_body_frames_router_lines_and_options():
    body = (
        frame("measure#db.latency=4ms source=api")
        + frame(
            'at=info method=GET path="/" host=x.herokuapp.com connect=1ms service=18ms status=200 bytes=13',
            app="heroku",
            procid="router",
        )
        + frame("just a log line")
        + b"\n"
    )
    parser = L2metParser()
    pending: dict = {}
    assert parser.feed_drain(body, pending, prefix="shop", source_prefix="eu") == 4
    assert by_name(pending) == {
        "shop.db.latency": ("t", "eu.api", None, [0.004]),
        "shop.router.connect": ("t", "eu", None, [0.001]),
        "shop.router.service": ("t", "eu", None, [pytest.approx(0.018)]),
        "shop.router.bytes": ("h", "eu", "bytes", [13.0]),
    }
    assert parser.lines == 3 and parser.rejects.total == 0


def test_router_keys_in_an_application_line_are_not_router_measurements():
    parser = L2metParser()
    pending: dict = {}
    parser.feed_drain(frame("connect=1ms service=2ms"), pending)
    assert pending == {}


def test_a_broken_frame_ends_the_body_and_is_counted_what_came_before_kept():
    parser = L2metParser()
    pending: dict = {}
    parser.feed_drain(frame("count#a=1") + b"999 <40>1 truncated", pending)
    assert by_name(pending) == {"a": ("c", None, None, [1.0])}
    assert dict(parser.rejects.counts) == {"bad frame": 1}


def test_syslog_header_with_and_without_structured_data():
    assert syslog_header("<1>1 ts h app proc - msg here") == ("app", "proc", "msg here")
    assert syslog_header("<1>1 ts h app proc id - msg") == ("app", "proc", "msg")
    assert syslog_header('<1>1 ts h app proc id [x a="b"] msg') == ("app", "proc", "msg")
    assert syslog_header("no header") is None


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=2000))
def test_drain_never_raises_on_any_bytes(data):
    parser = L2metParser()
    parser.feed_drain(data, {})
    parser.feed_drain(b"%d %s" % (len(data), data), {})


_tokens = st.sampled_from(
    [
        "measure#",
        "count#",
        "sample#",
        "measure.",
        "source=",
        "=",
        "ms",
        "-",
        "1",
        "2.5",
        "e",
        "x",
        " ",
        "#",
        "nan",
        "GB",
        "\t",
    ]
)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(_tokens, max_size=40).map("".join), st.booleans())
def test_lines_never_raise_and_accept_only_valid_series(text, router):
    parser, pending = L2metParser(), {}
    parser.feed_line(text, pending, prefix="p", router=router)
    for series, values in pending.items():
        assert isinstance(series, Series) and series.name.startswith("p.")
        assert all(v - v == 0 for v in values)
