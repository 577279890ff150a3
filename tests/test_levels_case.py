"""Levels are case-insensitive everywhere: `--levels INFO`, the listener's `--level` and `level:` tags."""

from __future__ import annotations

from support import inprocess
from support.daemons import wait_until
from zibrato.listen.statsd import StatsdParser
from zibrato.worker import parse_levels


def test_levels_flag_is_lower_cased_and_deduplicated():
    assert parse_levels("INFO,Warn,info") == ("info", "warn")
    assert parse_levels("ALL") == ("all",)


def test_the_listener_lower_cases_its_level_and_level_tags():
    pending: dict = {}
    parser = StatsdParser(level="StatsD")
    parser.feed(b"a:1|c\nb:1|c|#level:WARN,env:prod", pending)
    levels = {series.name: series.level for series in pending}
    assert levels == {"a": "statsd", "b": "warn"}


def test_a_worker_given_levels_in_capitals_receives_lower_case_levels():
    """Broker and console worker in threads (support.inprocess): the worker's behaviour, not its script."""
    p = inprocess.ConsolePipeline(levels=("INFO",), flush=0.3)
    try:
        p.start()  # the warm-up is sent at level "info": it must arrive
        assert p.status()["levels"] == ["info"]

        def arrived():
            p.client.count("info", "case.hits")
            p.client.flush()
            return any(s["name"] == "case.hits" for s in p.json_lines())

        wait_until(arrived, timeout=20, interval=0.3, message="info measurements at a worker given INFO")
    finally:
        p.close()
