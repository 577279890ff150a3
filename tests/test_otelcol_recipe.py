"""docs/SCALING.md's Collector gateway recipe, run as printed: the config and the commands are
read from the doc; only its addresses are mapped to loopback ports (every one must be in the
doc, so a changed recipe fails here rather than silently running something else)."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
from expecter import expect

from support.daemons import Daemon, free_ports, stop_process, wait_until
from support.fake_otlp import FakeOtlp
from support.otelcol import READY, require_binary
from zibrato import Zibrato
from zibrato.runtime import ask_status

pytestmark = pytest.mark.timeout(120)
DOC = Path(__file__).resolve().parents[1] / "docs" / "SCALING.md"


def recipe() -> tuple[str, str]:
    """The recipe section's YAML config and its shell commands."""
    section = DOC.read_text().split("## The Collector gateway recipe", 1)[1].split("\n## ", 1)[0]
    [config] = re.findall(r"```yaml\n(.*?)```", section, re.S)
    [commands] = re.findall(r"```sh\n(.*?)```", section, re.S)
    return config, commands


def mapped(text: str, addresses: dict[str, str]) -> str:
    for printed, here in addresses.items():
        assert printed in text, f"{printed!r} is no longer in the recipe: update this test"
        text = text.replace(printed, here)
    return text


def test_the_collector_gateway_recipe_runs_as_printed(tmp_path):
    otelcol = require_binary()
    config, printed = recipe()
    gateway, base = free_ports(2), free_ports(4)
    host = {
        "--port 5550": f"--port {base}",
        "--port 5551": f"--port {base + 1}",
        "http://gateway:4318": f"http://127.0.0.1:{gateway}",
        "--status-port 5553": f"--status-port {base + 3}",
    }
    commands = [shlex.split(line) for line in mapped(printed, host).splitlines() if line.strip()]
    expect([argv[0] for argv in commands]) == ["otelcol", "zibrato-broker", "zibrato-otlp"]
    with FakeOtlp() as backend:
        (tmp_path / "gateway.yaml").write_text(
            mapped(
                config,
                {
                    "0.0.0.0:4318": f"127.0.0.1:{gateway}",
                    "https://otlp.backend.example": backend.endpoint,
                    "host: 0.0.0.0": "host: 127.0.0.1",
                    "port: 8888": f"port: {gateway + 1}",
                },
            )
        )
        collector_argv = [str(otelcol), *commands[0][1:]]
        expect(collector_argv[1]) == "--config=gateway.yaml"
        log = tmp_path / "otelcol.log"
        collector = subprocess.Popen(
            collector_argv, cwd=tmp_path, stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            wait_until(
                lambda: READY in log.read_text() or collector.poll() is not None, timeout=60, message="the gateway"
            )
            assert collector.poll() is None, log.read_text()
            broker = Daemon(tmp_path, "zibrato-broker", *commands[1][1:])
            broker.start().wait_for_log("broker ready")
            worker = Daemon(tmp_path, "zibrato-otlp", *commands[2][1:])
            worker.start().wait_for_log("otlp worker")
            client = Zibrato(port=base)
            try:

                def measurements() -> int:
                    return ask_status("127.0.0.1", base + 3)["measurements"]

                def subscribed() -> bool:  # ZeroMQ's slow joiner: warm up until the worker receives
                    client.count("debug", "warmup")
                    client.flush()
                    return measurements() > 0

                wait_until(subscribed, timeout=15, interval=0.1, message="the worker's subscription")
                last = [-1]

                def settled() -> bool:  # no warm-up still on its way
                    now = measurements()
                    done, last[0] = now == last[0], now
                    return done

                wait_until(settled, interval=0.3, message="the warm-up to settle")
                before = measurements()
                for _ in range(10):
                    client.count("info", "orders", 1)
                client.flush()
                wait_until(lambda: measurements() >= before + 10, message="10 orders at the worker")
                worker.signal(signal.SIGTERM)  # the stop signal flushes the interval
                expect(worker.wait(30)) == 0

                wait_until(lambda: backend.points("orders"), timeout=20, message="the orders at the backend")
                [point] = backend.points("orders")
                expect((point.value, point.resource["service.name"])) == (10, "checkout")
                expect(backend.violations) == []
            finally:
                client.close(timeout=1)
                worker.stop()
                broker.stop()
        finally:
            stop_process(collector)
