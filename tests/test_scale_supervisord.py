"""The tier's supervisord configs: every program's command line is one its command accepts."""

from __future__ import annotations

import configparser
import importlib
import re
import shlex
from pathlib import Path

import pytest

CONF_DIR = Path(__file__).resolve().parent.parent / "supervisord"
ENVIRONMENT = {
    "ZIBRATO_BIN": "/opt/zibrato/bin",
    "ZIBRATO_LOG_DIR": "/var/log/zibrato",
    "ZIBRATO_BROKER_PORT": "5550",
    "ZIBRATO_BROKER_PUB_PORT": "5551",
    "ZIBRATO_FORWARD_TO": "global.example:5550",
    "ZIBRATO_FORWARD_SOURCE": "web1",
    "ZIBRATO_FORWARD_STATUS_PORT": "5556",
    "ZIBRATO_CONSOLE_STATUS_PORT": "5555",
    "ZIBRATO_STATSD_STATUS_PORT": "5554",
    "ZIBRATO_STATSD_STATSD_HOST": "127.0.0.1",
    "ZIBRATO_STATSD_STATSD_PORT": "8125",
}


def programs(conf: str) -> dict[str, list[str]]:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(CONF_DIR / conf)
    out = {}
    for section in parser.sections():
        command = re.sub(r"%\(ENV_(\w+)\)s", lambda m: ENVIRONMENT[m.group(1)], parser[section]["command"])
        argv = shlex.split(command)
        out[section.split(":", 1)[1]] = argv
    return out


@pytest.mark.parametrize(
    "conf, expected",
    [
        ("zibrato-tier-host.conf", {"zibrato-broker", "zibrato-forward"}),
        ("zibrato-tier-global.conf", {"zibrato-broker", "zibrato-console", "zibrato-statsd"}),
    ],
)
def test_each_program_of_the_tier_configs_parses_with_its_command(conf, expected):
    found = programs(conf)
    assert set(found) == expected
    for name, argv in found.items():
        assert argv[0] == f"/opt/zibrato/bin/{name}"
        module = importlib.import_module(f"zibrato.cli.{name.removeprefix('zibrato-')}")
        context = module.command.make_context(name, argv[1:])  # raises a usage error on a bad flag
        assert context.params
        assert not any("key" in arg and "/" in arg for arg in argv), "keys come from the environment"


def test_the_host_forwards_upstream_and_the_global_broker_listens_beyond_loopback():
    host, global_ = programs("zibrato-tier-host.conf"), programs("zibrato-tier-global.conf")
    host_broker = host["zibrato-broker"]
    assert "--to" in host["zibrato-forward"] and host_broker[host_broker.index("--host") + 1] == "127.0.0.1"
    assert global_["zibrato-broker"][global_["zibrato-broker"].index("--host") + 1] == "0.0.0.0"
