"""supervisord/ as shipped comes up green on a machine with nothing else on it.

The test follows supervisord/README.md's "Quick start" from a copy of the
checkout's supervisord/ folder: a `.venv` beside it (a link to this test's
virtualenv, where `pip install '.[otlp,prometheus]' supervisor` was run),
`mkdir -p var/log`, `supervisord -c supervisord/supervisord.conf`. Every
program must be RUNNING and `zibrato status` healthy. Only when the shipped
ports are taken on this shared machine are they moved (the environment= line's
port values, nothing else).
"""

from __future__ import annotations

import configparser
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from support.daemons import BIN, run_script, wait_until

CHECKOUT = Path(__file__).resolve().parents[1]
SHIPPED_PROGRAMS = {"zibrato-broker", "zibrato-console", "zibrato-prometheus"}
SHIPPED_PORTS = {"ZIBRATO_BROKER_PORT": 5550, "ZIBRATO_BROKER_PUB_PORT": 5551}
README = CHECKOUT / "supervisord" / "README.md"

pytestmark = pytest.mark.skipif(not (BIN / "supervisord").exists(), reason="needs supervisord (bin/setup --test)")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_base(count: int) -> int:
    for base in range(20_000, 30_000, 17):
        if all(_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no run of free ports")


def quick_start_commands() -> list[str]:
    """The shell lines of the README's quick start block (after the venv is made)."""
    text = README.read_text()
    block = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.strip().splitlines() if line.split("#")[0].strip()]


@pytest.fixture
def checkout():
    """A copy of supervisord/ in a short path (unix socket paths are short) with .venv beside it."""
    root = Path(tempfile.mkdtemp(prefix="zsh-", dir="/tmp"))
    shutil.copytree(CHECKOUT / "supervisord", root / "supervisord")
    (root / ".venv").symlink_to(BIN.parent)
    yield root
    if (root / "var" / "supervisor.sock").exists():
        subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(root / "supervisord" / "supervisord.conf"), "shutdown"],
            capture_output=True,
            timeout=60,
        )
        wait_until(lambda: not (root / "var" / "supervisord.pid").exists(), timeout=40, message="supervisord gone")
    shutil.rmtree(root, ignore_errors=True)


def _ports_in_use() -> bool:
    return not all(_free(port) for port in (5550, 5551, 5552, 5555, 5557, 9464))


def _move_ports(conf: Path) -> dict[str, int]:
    """Shift the environment= line's ports (only when the shipped ones are taken here); the status ports."""
    base = _free_base(8)
    text = conf.read_text()
    moved = {
        "ZIBRATO_BROKER_PORT": str(base),
        "ZIBRATO_BROKER_PUB_PORT": str(base + 1),
        "ZIBRATO_CONSOLE_STATUS_PORT": str(base + 5),
        "ZIBRATO_PROMETHEUS_STATUS_PORT": str(base + 7),
        "ZIBRATO_PROMETHEUS_LISTEN": f"127.0.0.1:{base + 6}",
    }
    for key, value in moved.items():
        text, count = re.subn(rf'{key}="[^"]*"', f'{key}="{value}"', text)
        assert count == 1, key
    conf.write_text(text)
    return {"broker": base + 2, "console": base + 5, "prometheus": base + 7, "scrape": base + 6}


def test_the_shipped_supervisord_config_comes_up_green(checkout):
    commands = quick_start_commands()
    assert any("pip install '.[otlp,prometheus]' supervisor" in line for line in commands)
    ports = {"broker": 5552, "console": 5555, "prometheus": 5557, "scrape": 9464}
    if _ports_in_use():
        ports = _move_ports(checkout / "supervisord" / "supervisord.conf")
    ran = []
    for line in commands:
        if line.startswith(("python3 -m venv", ".venv/bin/pip ")):
            continue  # done once for the whole test suite: .venv is this test's virtualenv
        if " status --port" in line:
            line = re.sub(
                r"--port \d+ --port \d+ --port \d+", "--port {broker} --port {console} --port {prometheus}", line
            )
            line = line.format(**ports)
        ran.append(subprocess.run(line, shell=True, cwd=checkout, capture_output=True, text=True, timeout=60))
        if "zibrato status" in line:
            break
        if line.startswith(".venv/bin/supervisord "):
            assert ran[-1].returncode == 0, ran[-1].stderr
            _wait_all_running(checkout)
    status = ran[-1]
    assert status.returncode == 0, (status.stdout, status.stderr, _logs(checkout))
    assert status.stdout.count(" OK") == 3, status.stdout
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['scrape']}/metrics", timeout=10) as answer:
        assert answer.status == 200


def _states(root: Path) -> dict[str, str]:
    result = subprocess.run(
        [str(BIN / "supervisorctl"), "-c", str(root / "supervisord" / "supervisord.conf"), "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return dict(line.split()[:2] for line in result.stdout.splitlines() if len(line.split()) >= 2)


def _wait_all_running(root: Path) -> None:
    def all_running():
        states = _states(root)
        assert not {"FATAL", "BACKOFF", "EXITED"} & set(states.values()), (states, _logs(root))
        return set(states) == SHIPPED_PROGRAMS and set(states.values()) == {"RUNNING"}

    wait_until(all_running, timeout=60, interval=0.3, message="every shipped program RUNNING")


def _logs(root: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in (root / "var" / "log").glob("*"))


def test_librato_is_out_of_the_default_config_and_kept_as_a_retired_example():
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(CHECKOUT / "supervisord" / "zibrato.conf")
    assert {s.split(":", 1)[1] for s in parser.sections()} == SHIPPED_PROGRAMS
    example = (CHECKOUT / "supervisord" / "zibrato-librato.example.conf").read_text()
    assert "retired service, for compatible endpoints" in example.splitlines()[0]
    shipped = (CHECKOUT / "supervisord" / "zibrato.conf").read_text()
    assert ';environment=OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318"' in shipped
    assert "pip install zibrato" not in README.read_text().replace("pip install zibrato-", "")


def test_the_example_programs_run_their_scripts_with_valid_flags():
    env = {
        "ZIBRATO_BIN": str(BIN),
        "ZIBRATO_BROKER_PUB_PORT": "5551",
        "ZIBRATO_LIBRATO_STATUS_PORT": "5553",
        "ZIBRATO_STATSD_STATUS_PORT": "5554",
        "ZIBRATO_STATSD_STATSD_HOST": "127.0.0.1",
        "ZIBRATO_STATSD_STATSD_PORT": "8125",
    }
    for name in ("librato", "statsd"):
        parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
        parser.read(CHECKOUT / "supervisord" / f"zibrato-{name}.example.conf")
        command = parser[f"program:zibrato-{name}"]["command"]
        command = re.sub(r"%\(ENV_(\w+)\)s", lambda m: env[m.group(1)], command)
        script, *args = command.split()
        assert run_script(Path(script).name, *args, "--help").returncode == 0
