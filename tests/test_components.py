"""The component registry: every built-in registered once, a third-party destination built from one spec.

Real subprocesses of the console scripts and a real broker: the toy
destination (tests/support/toy_destination.py) is registered through a
temporary dist-info, as a package would register it, and everything else
(command, --help, docs/CLI.md section, --config file, `zibrato status`) is
built from its spec.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from expecter import expect

from support.daemons import BIN, Daemon, free_ports, run_script, wait_until
from zibrato import Zibrato
from zibrato.components.spec import GROUP, DestinationSpec, find

SUPPORT = Path(__file__).parent / "support"
BUILT_IN = {
    "console",
    "statsd",
    "librato",
    "graphite",
    "influxdb",
    "web",
    "otlp",
    "prometheus",
    "remote-write",
    "forward",
}


def test_every_built_in_destination_is_registered_through_the_entry_point_group():
    registered = {entry.name: entry.value for entry in entry_points(group=GROUP)}
    expect(BUILT_IN - set(registered)) == set()
    for name in BUILT_IN:
        spec = find(name)
        expect(isinstance(spec, DestinationSpec) and spec.name == name) == True
        expect((BIN / spec.script).exists()) == True
        # the console script's module names the same spec the entry point registers
        script = importlib.import_module(f"zibrato.cli.{name.replace('-', '_')}")
        expect((name, script.command.name)) == (name, name)
        expect(find(registered[name]) is spec) == True


@pytest.fixture
def toy_path(tmp_path):
    """A temporary dist-info registering the toy destination: PYTHONPATH for the subprocesses."""
    site = tmp_path / "site"
    info = site / "zibrato_toy-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zibrato-toy\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\ntoy = toy_destination:SPEC\n")
    return os.pathsep.join([str(site), str(SUPPORT)])


def _python(toy_path: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": toy_path, "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_a_toy_destination_gets_a_command_help_docs_config_and_status_from_one_spec(tmp_path, toy_path):
    env = {"PYTHONPATH": toy_path, "COLUMNS": "100"}
    # the command and its --help: own flags, the shared retry pair, the shared worker flags
    shown = run_script("zibrato", "toy", "--help", env=env)
    expect(shown.returncode) == 0
    for text in ("--output FILE", "--greeting [hello|hi]", "--retry-delay", "Shared worker options", "--flush"):
        expect(shown.stdout).contains(text)
    listed = run_script("zibrato", "--help", env=env).stdout
    expect(listed).contains("toy")
    # its docs/CLI.md section, generated: the same help, its variables and config keys
    docs = _python(toy_path, "from zibrato.components.docs import section; print(section('toy'), end='')")
    expect(docs.returncode) == 0
    expect(docs.stdout).contains("## `zibrato-toy` (`zibrato toy`)")
    expect(docs.stdout).contains(shown.stdout.replace("Usage: zibrato toy", "Usage: zibrato-toy"))
    expect(docs.stdout).contains("`ZIBRATO_TOY_GREETING`")
    expect(docs.stdout).contains("`greeting`")
    # a --config file, a real broker, a client: the worker runs and `zibrato status --json` shows it
    base = free_ports(4)
    output = tmp_path / "toy.jsonl"
    config = tmp_path / "toy.toml"
    config.write_text(
        f'output = "{output}"\ngreeting = "hi"\nbroker = "127.0.0.1:{base + 1}"\n'
        f"status-port = {base + 3}\nflush = 0.5\nself-metrics = false\n"
    )
    broker = Daemon(tmp_path, "zibrato-broker", "--port", base, "--startup-grace", "0.1").start()
    worker = Daemon(tmp_path, "zibrato", "toy", "--config", config, env=env)
    try:
        broker.wait_for_log("broker ready")
        worker.start().wait_for_log("toy worker")
        client = Zibrato(port=base)

        def delivered() -> bool:
            client.count("info", "toy.hits")
            client.flush()
            return output.exists() and "toy.hits" in output.read_text()

        wait_until(delivered, timeout=30, message="the toy's JSON line")
        status = run_script("zibrato", "status", "--json", "--port", base + 3)
        expect(status.returncode) == 0
        figures = json.loads(status.stdout)
        expect((figures["greeting"], figures["flush_interval"], figures["healthy"])) == ("hi", 0.5, True)
        expect(figures["intervals_written"]) >= 1
        client.close()
    finally:
        worker.stop()
        broker.stop()
    expect(json.loads(output.read_text().splitlines()[0])["greeting"]) == "hi"


def test_a_toy_config_key_that_is_not_a_flag_names_the_closest(tmp_path, toy_path):
    config = tmp_path / "toy.toml"
    config.write_text('outptu = "x"\n')
    result = run_script("zibrato", "toy", "--config", config, env={"PYTHONPATH": toy_path})
    expect(result.returncode) == 2
    expect(result.stderr).contains("unknown key 'outptu'")
    expect(result.stderr).contains("did you mean 'output'?")


# --- the shared settings: one secret-file helper, one retry pair -----------------------------------------


def test_the_secret_helper_strips_a_bom_warns_once_on_a_world_readable_file_and_never_echoes(tmp_path, capsys):
    import click

    from zibrato.components.settings import read_secret

    path = tmp_path / "secret"
    path.write_bytes(b"\xef\xbb\xbf  s3cret-value \r\n")
    path.chmod(0o644)
    expect(read_secret(path, "--token-file")) == "s3cret-value"
    expect(read_secret(path, "--token-file")) == "s3cret-value"
    warnings = capsys.readouterr().err
    expect(warnings.count("readable by everyone")) == 1
    expect("s3cret" in warnings) == False
    path.chmod(0o600)
    (tmp_path / "empty").write_text("\ufeff \n")
    with pytest.raises(click.UsageError, match="--token-file .* is empty"):
        read_secret(tmp_path / "empty", "--token-file")
    (tmp_path / "latin").write_bytes(b"s3cret\xff")
    with pytest.raises(click.UsageError) as caught:
        read_secret(tmp_path / "latin", "--token-file")
    expect("s3cret" in str(caught.value)) == False


def test_forward_has_the_shared_retry_pair_and_retry_cap_is_a_deprecated_alias(tmp_path):
    shown = run_script("zibrato-forward", "--help").stdout
    expect(shown).contains("--retry-delay")
    expect(shown).contains("--max-retry-delay")
    expect(shown).does_not_contain("--retry-cap")
    from zibrato.components.builder import build_command, flag_given
    from zibrato.components.fields import build_config
    from zibrato.components.worker_flags import worker_config
    from zibrato.forward_spec import SPEC

    def backoff(*args):
        ctx = build_command(SPEC).make_context("zibrato-forward", ["--to", "up:5550", *args])
        with ctx:
            config, _ = SPEC.resolve(build_config(SPEC.config, ctx.params), worker_config(ctx.params, []), flag_given)
        return SPEC.delivery_backoff(config)

    expect((backoff().base, backoff().cap)) == (0.5, 10.0)
    expect(backoff("--max-retry-delay", "30").cap) == 30.0
    expect(backoff("--retry-cap", "2").cap) == 2.0
    # the deprecated alias still starts the forwarder, with a deprecation line in its log
    base = free_ports(2)
    forwarder = Daemon(
        tmp_path, "zibrato-forward", "--to", f"127.0.0.1:{base}", "--broker", f"127.0.0.1:{base + 1}", "--retry-cap", 2
    ).start()
    try:
        forwarder.wait_for_log("--retry-cap is deprecated")
        forwarder.wait_for_log("forward worker")
    finally:
        forwarder.stop()


def test_remote_writes_password_and_token_files_are_read_without_a_bom(tmp_path):
    from zibrato.backends.remote_write_spec import credentials

    token, password = tmp_path / "token", tmp_path / "password"
    token.write_bytes(b"\xef\xbb\xbftok-1\r\n")
    password.write_bytes(b"\xef\xbb\xbfpw\r\nsecond line\r\n")
    token.chmod(0o600)
    password.chmod(0o600)
    expect(credentials(None, None, token)) == (None, "tok-1")
    expect(credentials("me", password, None)) == (("me", "pw"), None)
