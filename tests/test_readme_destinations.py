"""The README's Graphite and InfluxDB commands ("Where the metrics go", the recipe) use only real flags."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from expecter import expect

from support.daemons import run_script

README = (Path(__file__).parent.parent / "README.md").read_text()


def commands(script: str) -> list[list[str]]:
    """Every `script ...` command line the README shows, split into arguments (env and & dropped)."""
    return [
        shlex.split(match.group(1))[1:] for match in re.finditer(rf"(?:^|`|\s)({script} --[^`\n&#]*)", README, re.M)
    ]


@pytest.mark.parametrize("script", ["zibrato-graphite", "zibrato-influxdb", "zibrato-remote-write"])
def test_every_command_shown_parses(script):
    shown = commands(script)
    expect(len(shown)) >= 1
    for args in shown:
        result = run_script(script, *args, "--help")  # click rejects an unknown flag before --help
        expect((args, result.returncode)) == (args, 0)


def test_the_destination_table_has_a_row_for_each():
    section = README.split("## Where the metrics go", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    for script in (
        "zibrato-console",
        "zibrato-statsd",
        "zibrato-graphite",
        "zibrato-influxdb",
        "zibrato-librato",
        "zibrato-remote-write",
    ):
        expect(sum(f"{script} --" in row for row in rows)) == 1
