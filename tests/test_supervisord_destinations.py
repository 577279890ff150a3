"""The OTLP, Graphite and InfluxDB programs shipped commented out in supervisord/zibrato.conf are valid once enabled."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from expecter import expect

from support.daemons import BIN, run_script

CONF = Path(__file__).parent.parent / "supervisord" / "zibrato.conf"
ENV = {"ZIBRATO_BIN": str(BIN), "ZIBRATO_BROKER_PUB_PORT": "5551", "ZIBRATO_LOG_DIR": "/tmp"}


def enabled_programs() -> configparser.ConfigParser:
    """zibrato.conf with the commented-out blocks enabled (one ';' removed from each line)."""
    text = "\n".join(
        line[1:] if line.startswith(";[program:") or (line.startswith(";") and not line.startswith("; ")) else line
        for line in CONF.read_text().splitlines()
    )
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=(";",), strict=True)
    parser.read_string(text)
    return parser


@pytest.mark.parametrize("program", ["zibrato-otlp", "zibrato-graphite", "zibrato-influxdb"])
def test_the_commented_out_program_runs_its_script_with_valid_flags(program):
    section = enabled_programs()[f"program:{program}"]
    expect(section["stopsignal"]) == "QUIT"
    expect(section["autostart"]) == "true"
    command = section["command"]
    for name, value in ENV.items():
        command = command.replace(f"%(ENV_{name})s", value)
    expect("%(" in command) == False  # only the variables every install sets
    script, *args = command.split()
    expect(Path(script).name) == program
    result = run_script(program, *args, "--help")  # click rejects an unknown flag before --help
    expect(result.returncode) == 0
