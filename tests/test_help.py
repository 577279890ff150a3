"""Each destination's --help: its own flags first, under 40 lines, then the shared worker flags under a title."""

from __future__ import annotations

import pytest

from support.daemons import run_script

DESTINATIONS = (
    "console",
    "otlp",
    "librato",
    "statsd",
    "prometheus",
    "remote-write",
    "graphite",
    "influxdb",
    "web",
    "forward",
)
TITLE = "Shared worker options"


@pytest.mark.parametrize("name", DESTINATIONS)
def test_help_shows_the_destinations_own_flags_first_in_under_40_lines(name):
    text = run_script(f"zibrato-{name}", "--help", env={"COLUMNS": "80"}).stdout
    own, _, shared = text.partition(TITLE)
    assert shared, text
    own = own.partition("HTTP server limits")[0]  # zibrato-prometheus and -web: their server's limits apart
    assert len(own.splitlines()) < 40, own
    assert "--levels TEXT" in shared and "--flush SECONDS" in shared and "--levels TEXT" not in own
    assert "Options:" in own


def test_the_umbrella_command_groups_the_same_way():
    text = run_script("zibrato", "console", "--help").stdout
    assert text.index("--format") < text.index(TITLE) < text.index("--levels TEXT")
