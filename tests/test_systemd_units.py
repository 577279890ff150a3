"""The systemd units of deploy/systemd/: hardened, consistent with the commands, and valid for systemd itself.

``systemd-analyze verify`` (Debian's ``systemd`` package) checks each unit with
its ExecStart pointed at this test's virtualenv; without the tool that check is
skipped with the reason, the others still run.
"""

from __future__ import annotations

import configparser
import importlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from support.daemons import BIN

UNITS = Path(__file__).resolve().parents[1] / "deploy" / "systemd"
WORKERS = ("console", "prometheus", "otlp", "graphite", "influxdb", "statsd", "web", "forward")
HARDENING = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "NoNewPrivileges": "yes",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
}


def instances() -> dict[str, str]:
    """unit name -> its text, the worker template once per worker."""
    found = {path.name: path.read_text() for path in UNITS.glob("*.service") if "@" not in path.name}
    template = (UNITS / "zibrato-worker@.service").read_text()
    for name in WORKERS:
        found[f"zibrato-worker@{name}.service"] = template.replace("%i", name)
    return found


def service_section(text: str) -> configparser.SectionProxy:
    parser = configparser.RawConfigParser(strict=False, comment_prefixes=("#",))
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read_string(text)
    return parser["Service"]


@pytest.mark.parametrize("unit", sorted(instances()))
def test_each_unit_is_hardened_and_stops_within_its_timeout(unit):
    service = service_section(instances()[unit])
    for key, value in HARDENING.items():
        assert service.get(key) == value, (unit, key)
    argv = shlex.split(service["ExecStart"])
    script = Path(argv[0]).name
    module = importlib.import_module(f"zibrato.cli.{script.removeprefix('zibrato-')}")
    args = argv[1:] + (["--to", "upstream:5550"] if script == "zibrato-forward" else [])
    context = module.command.make_context(script, args)  # a usage error on a flag the command lacks
    stop_timeout = context.params.get("stop_timeout", 8.0)
    assert float(service["TimeoutStopSec"]) >= stop_timeout + 1, "systemd must not kill a worker mid-delivery"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent (apt-get install systemd)")
def test_systemd_analyze_verify_accepts_every_unit(tmp_path):
    paths = []
    for name, text in instances().items():
        path = tmp_path / name
        path.write_text(text.replace("/opt/zibrato/bin", str(BIN)))
        paths.append(str(path))
    result = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=120)
    ours = [line for line in (result.stdout + result.stderr).splitlines() if re.search(r"zibrato", line)]
    assert result.returncode == 0 and ours == [], result.stderr
