"""Issue 22, item 2: a listening port already in use makes every daemon exit non-zero at once.

Each daemon is started as its real console script with one of its ports held
by another socket (a plain TCP listener, as another program would hold it).
Before the fix the status REP socket stayed open after its bind failed and
``context.term()`` waited for it forever: the daemon hung, looking RUNNING to
supervisord. ``run_script``'s timeout turns such a hang into a failure.
"""

from __future__ import annotations

import socket

import pytest
from expecter import expect

from support.daemons import free_ports, run_script

HUNG = 30  # seconds: a daemon that has not exited by then hangs (it exits in 1-3 s)


@pytest.fixture
def held_port():
    """A loopback TCP port bound and listened on by this test: "in use" for every daemon."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def _exits_at_once_naming_the_port(script: str, port: int, *args: object) -> None:
    result = run_script(script, *args, timeout=HUNG)
    expect(result.returncode) == 1
    expect(result.stderr.lower()).contains("address already in use")
    expect(result.stderr).contains(str(port))
    expect(result.stderr).does_not_contain("Traceback")


WORKERS = {
    "zibrato-console": (),
    "zibrato-otlp": ("--endpoint", "http://127.0.0.1:9/v1/metrics"),
    "zibrato-prometheus": ("--listen", "127.0.0.1:0"),
    "zibrato-graphite": (),
    "zibrato-influxdb": ("--database", "zibrato"),
    "zibrato-statsd": (),
    "zibrato-librato": (),
    "zibrato-web": ("--listen", "127.0.0.1:0"),
    "zibrato-forward": ("--to", "127.0.0.1:9"),
}


@pytest.mark.parametrize("script", sorted(WORKERS))
def test_a_worker_whose_status_port_is_in_use_exits_1_at_once(script, held_port, tmp_path):
    extra = WORKERS[script]
    env = {}
    if script == "zibrato-librato":  # credentials come from the environment, never argv
        env = {"ZIBRATO_LIBRATO_USERNAME": "someone@example.com", "ZIBRATO_LIBRATO_APITOKEN": "not-a-real-token"}
    result = run_script(
        script, "--port", 9, "--status-port", held_port, "--no-self-metrics", *extra, timeout=HUNG, env=env
    )
    if result.returncode == 2:  # a usage error would hide the bind: show it
        pytest.fail(f"{script} refused its arguments:\n{result.stderr}")
    expect(result.returncode) == 1
    expect(result.stderr).contains(f"cannot bind tcp://127.0.0.1:{held_port}: address already in use")
    expect(result.stderr).does_not_contain("Traceback")


def test_zibrato_listen_whose_status_port_is_in_use_exits_1_at_once(held_port):
    _exits_at_once_naming_the_port("zibrato-listen", held_port, "--statsd", "127.0.0.1:0", "--status-port", held_port)


def test_zibrato_listen_whose_statsd_port_is_in_use_exits_1_at_once(held_port):
    _exits_at_once_naming_the_port(
        "zibrato-listen", held_port, "--statsd", f"127.0.0.1:{held_port}", "--status-port", 0
    )


def test_zibrato_listen_whose_drain_port_is_in_use_exits_1_at_once(held_port, tmp_path):
    token = tmp_path / "token"
    token.write_text("a-drain-token-for-tests\n")
    token.chmod(0o600)
    _exits_at_once_naming_the_port(
        "zibrato-listen",
        held_port,
        "--l2met",
        f"127.0.0.1:{held_port}",
        "--l2met-token-file",
        token,
        "--status-port",
        0,
    )


def test_the_broker_whose_status_port_is_in_use_exits_1_at_once(held_port):
    base = free_ports(2)  # a free pair of ports for PULL and PUB (the held one is not free)
    _exits_at_once_naming_the_port(
        "zibrato-broker", held_port, "--port", base, "--status-port", held_port, "--startup-grace", 0
    )


@pytest.mark.parametrize("which", ["pull", "pub"])
def test_the_broker_whose_client_or_worker_port_is_in_use_exits_1_at_once(which, held_port):
    port = held_port if which == "pull" else held_port - 1
    _exits_at_once_naming_the_port("zibrato-broker", held_port, "--port", port, "--status-port", 0)


@pytest.mark.parametrize("script", ["zibrato-web", "zibrato-prometheus"])
def test_a_worker_whose_http_port_is_in_use_exits_1_at_once(script, held_port):
    _exits_at_once_naming_the_port(script, held_port, "--port", 9, "--listen", f"127.0.0.1:{held_port}")
