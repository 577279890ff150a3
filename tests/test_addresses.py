"""Every destination's URL, host and port is checked at start by one shared check (exit 2, a usage message).

A worker started with an address that can never work used to retry it
forever; each script's click command is run in-process as its entry point
runs it, and one case through the real console script.
"""

from __future__ import annotations

import importlib
import socket
import subprocess

import msgpack
import pytest
import zmq
from click.testing import CliRunner

from support.daemons import BIN, run_script, wait_until
from zibrato.cli.addresses import check_url, split_host_port

# (script, arguments, what the usage message must say)
BAD_ADDRESSES = [
    ("zibrato-influxdb", ["--url", "ftp://x"], "ftp://"),
    ("zibrato-influxdb", ["--url", "http://influx:99999"], "port out of range"),
    ("zibrato-librato", ["--api-url", "metrics-api.librato.com/v1/"], "no scheme"),
    ("zibrato-otlp", ["--endpoint", "ftp://collector:4318"], "http:// or https://"),
    ("zibrato-remote-write", ["--url", "http://prometheus:99999/api/v1/write"], "port out of range"),
    ("zibrato-prometheus", ["--listen", "127.0.0.1:99999"], "port 99999 out of range"),
    ("zibrato-web", ["--listen", "127.0.0.1:99999"], "port 99999 out of range"),
    ("zibrato-graphite", ["--graphite", "carbon:70000"], "port 70000 out of range"),
    ("zibrato-graphite", ["--graphite", "tcp://carbon:2003"], "without a scheme"),
    ("zibrato-statsd", ["--statsd-host", "http://statsd"], "not a host name"),
    ("zibrato-statsd", ["--statsd-port", "99999"], "99999"),
    ("zibrato-forward", ["--to", "upstream:99999"], "port 99999 out of range"),
    ("zibrato-listen", ["--statsd", "127.0.0.1:99999"], "port 99999 out of range"),
    ("zibrato-listen", ["--broker", "127.0.0.1:123456"], "port 123456 out of range"),
]


#: credentials are given so that nothing but the address can be wrong
CREDENTIALS = {"ZIBRATO_LIBRATO_USERNAME": "ops@example.com", "LIBRATO_TOKEN": "t", "ZIBRATO_LIBRATO_APITOKEN": "t"}


@pytest.mark.parametrize("script, args, message", BAD_ADDRESSES, ids=lambda v: v if isinstance(v, str) else None)
def test_an_address_that_can_never_work_is_a_usage_error_at_start(script, args, message):
    """The script's own click command, in-process, with its environment prefix (as its entry point runs it)."""
    name = script.removeprefix("zibrato-")
    command = importlib.import_module(f"zibrato.cli.{name.replace('-', '_')}").command
    prefix = "ZIBRATO_" + name.upper().replace("-", "_")
    result = CliRunner().invoke(
        command, [*args, "--status-port", "0"], prog_name=script, auto_envvar_prefix=prefix, env=CREDENTIALS
    )
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Usage:" in result.output and message in result.output, result.output


def test_the_script_itself_exits_2_on_an_address_that_can_never_work():
    script, args, message = BAD_ADDRESSES[0]
    result = run_script(script, *args, "--status-port", "0", timeout=20, env=CREDENTIALS)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Usage:" in result.stderr and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://x", "expected a http:// or https:// URL"),
        ("example.com/v1", "no scheme"),
        ("http://:80/", "no host"),
        ("https://h:0/", "port 0 out of range"),
        ("https://user:secret@h:70000/", "port out of range"),
    ],
)
def test_check_url_names_what_is_wrong_and_never_shows_a_password(url, message):
    with pytest.raises(ValueError) as raised:
        check_url(url, "--url")
    assert message in str(raised.value) and "secret" not in str(raised.value)


def test_split_host_port_accepts_the_usual_forms():
    assert split_host_port("carbon:2003", "--graphite") == ("carbon", 2003)
    assert split_host_port("[::1]:2003", "--graphite") == ("::1", 2003)
    assert split_host_port("carbon", "--graphite", default_port=2003) == ("carbon", 2003)
    assert check_url("https://metrics-api.librato.com/v1/", "--api-url") == "https://metrics-api.librato.com/v1/"


def _occupy(port: int) -> list[socket.socket]:
    """Hold UDP and TCP ``port`` on 127.0.0.1 (if someone else holds one, it is just as taken)."""
    held = []
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.bind(("127.0.0.1", port))
            if kind == socket.SOCK_STREAM:
                sock.listen()
            held.append(sock)
        except OSError:
            sock.close()
    return held


def test_stdin_alone_reads_standard_input_without_binding_the_statsd_port():
    held = _occupy(8125)  # the default --statsd port: --stdin alone must not need it
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.linger = 0
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    try:
        result = subprocess.run(
            [str(BIN / "zibrato-listen"), "--stdin", "--no-self-metrics", "--broker", f"127.0.0.1:{port}"],
            input=b"count#job.done=3 source=w1\n",
            capture_output=True,
            timeout=20,
        )
        assert result.returncode == 0, result.stderr.decode()
        frames: list = []

        def received():
            while pull.poll(10):
                _, _, payload = pull.recv().partition(b"\x00")
                frames.extend(msgpack.unpackb(payload, raw=False)[2])
            return frames

        records = wait_until(received, timeout=5, message="the stdin line at the broker")
        assert [(name, values) for _, name, values, *_ in records] == [("job.done", [3.0])]
    finally:
        context.destroy(linger=0)
        for sock in held:
            sock.close()


def test_stdin_with_an_explicit_statsd_still_binds_it():
    held = _occupy(8125)
    try:
        result = run_script("zibrato-listen", "--stdin", "--statsd", "127.0.0.1:8125", "--no-self-metrics", input="")
        assert result.returncode != 0 and "8125" in result.stderr, result.stderr
    finally:
        for sock in held:
            sock.close()
