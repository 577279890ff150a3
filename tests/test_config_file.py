"""--config FILE for every daemon: TOML keys are the long flags; flags and the environment override the file.

Real subprocesses of the console scripts; a running worker's settings are
read back with `zibrato status --json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from expecter import expect

from support.daemons import Daemon, free_ports, run_script
from zibrato.components.config_file import read_config

SUPERVISORD = Path(__file__).parent.parent / "supervisord"


def test_the_file_sets_flags_and_the_command_line_and_environment_override_it(tmp_path):
    base = free_ports(4)
    config = tmp_path / "console.toml"
    config.write_text(
        f'broker = "127.0.0.1:{base + 1}"\nstatus-port = {base + 3}\nflush = 7\nlevels = "info,zibrato"\n'
        'lateness = 1\nself-metrics = false\nkeep = ["db.*"]\nformat = "json"\n'
    )
    broker = Daemon(tmp_path, "zibrato-broker", "--port", base, "--startup-grace", "0.1").start()
    worker = Daemon(
        tmp_path, "zibrato-console", "--config", config, "--flush", 4, env={"ZIBRATO_CONSOLE_LATENESS": "2"}
    )
    try:
        broker.wait_for_log("broker ready")
        worker.start().wait_for_log("console worker")
        status = run_script("zibrato", "status", "--json", "--port", base + 3)
        figures = json.loads(status.stdout)
        expect(figures["flush_interval"]) == 4.0  # the flag, over the file's 7
        expect(figures["lateness"]) == 2.0  # the environment, over the file's 1
        expect(figures["levels"]) == ["info", "zibrato"]  # the file
        expect(figures["format"]) == "json"
    finally:
        worker.stop()
        broker.stop()


def test_the_broker_takes_a_config_file_too(tmp_path):
    base = free_ports(3)
    config = tmp_path / "broker.toml"
    config.write_text(f'port = {base}\nstartup-grace = 0.1\nhost = "127.0.0.1"\n')
    broker = Daemon(tmp_path, "zibrato-broker", "--config", config).start()
    try:
        broker.wait_for_log("broker ready")
        status = json.loads(run_script("zibrato", "status", "--json", "--port", base + 2).stdout)
        expect(status["healthy"]) == True
    finally:
        broker.stop()


def test_the_listener_takes_a_config_file_too(tmp_path):
    config = tmp_path / "listen.toml"
    config.write_text(f'stdin = true\ntee = true\nbroker = "127.0.0.1:{free_ports(1)}"\nlevel = "app"\n')
    result = run_script("zibrato-listen", "--config", config, input="measure#job.seconds=2s\n")
    expect(result.returncode) == 0
    expect(result.stdout) == "measure#job.seconds=2s\n"


@pytest.mark.parametrize(
    "script, text, complaint",
    [
        ("zibrato-console", "flsh = 1\n", "unknown key 'flsh' in --config"),
        ("zibrato-console", "flsh = 1\n", "did you mean 'flush'?"),
        ("zibrato-statsd", 'statsd_host = "x"\n', "did you mean 'statsd-host'?"),
        ("zibrato-broker", "prot = 5550\n", "did you mean 'port'?"),
        ("zibrato-listen", "gauge-expiry = 10\n", "did you mean 'gauge-expire'?"),
        ("zibrato-console", "flush = 0\n", "out of range"),
        ("zibrato-console", "flush = [1, 2]\n", "one value, not a list"),
        ("zibrato-console", "flush = \n", "not valid TOML"),
        ("zibrato-librato", 'apitoken = "s3cret"\n', "give the file that holds it ('apitoken-file')"),
    ],
)
def test_a_bad_config_file_is_a_usage_error_that_names_the_key(tmp_path, script, text, complaint):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = run_script(script, "--config", config)
    expect(result.returncode) == 2
    expect(result.stderr).contains(complaint)
    expect(result.stderr).does_not_contain("s3cret")


@pytest.mark.parametrize("path", sorted(SUPERVISORD.glob("*.toml")), ids=lambda p: p.name)
def test_each_sample_config_file_of_supervisord_parses_with_its_command(path):
    from zibrato.components.builder import command_named

    name = path.stem.removeprefix("zibrato-")
    command = command_named(name)
    assert command is not None, name
    values = read_config(command, str(path))
    expect(values) != {}
    context = command.make_context(f"zibrato-{name}", ["--config", str(path)])  # every value converts
    for key, value in values.items():
        expect(context.get_parameter_source(key).name) == "DEFAULT_MAP"
        expect(context.params[key] is not None or value is None) == True
