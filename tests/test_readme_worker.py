"""The README's "Writing a new worker" example, as printed, works: its --help, and a delivery."""
from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
import sys
from pathlib import Path

from expecter import expect

README = Path(__file__).resolve().parents[1] / "README.md"


def example_module(tmp_path: Path) -> Path:
    """The README's zibrato_graphite.py, written out as a file."""
    [code] = re.findall(r"```python\n(# zibrato_graphite\.py\n.*?)```", README.read_text(), re.S)
    path = tmp_path / "zibrato_graphite.py"
    path.write_text(code)
    return path


def test_the_example_worker_command_explains_its_flags(tmp_path):
    example_module(tmp_path)

    shown = subprocess.run([sys.executable, "-c", "import zibrato_graphite; zibrato_graphite.main()",
                            "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=30)

    expect(shown.returncode) == 0
    expect(shown.stdout).contains("Deliver each flush to Graphite")
    for flag in ("--levels", "--flush", "--percentiles", "--graphite-port"):
        expect(shown.stdout).contains(flag)


def test_the_example_backend_delivers_graphite_lines(tmp_path):
    spec = importlib.util.spec_from_file_location("zibrato_graphite", example_module(tmp_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with socket.socket() as carbon:
        carbon.bind(("127.0.0.1", 0))
        carbon.listen(1)
        carbon.settimeout(10)
        backend = module.GraphiteBackend(graphite=carbon.getsockname(), self_level=None)
        try:
            backend.connect()
            connection, _ = carbon.accept()
            backend.post(1700000000.0, [{"name": "signup", "value": 3},
                                        {"name": "db.query", "mean": 0.25, "p99": 0.5}])
            backend.sock.close()
            with connection:
                connection.settimeout(10)
                received = b""
                while chunk := connection.recv(4096):
                    received += chunk
        finally:
            backend._context.term()

    expect(received.decode().splitlines()) == ["signup.value 3 1700000000",
                                               "db.query.mean 0.25 1700000000",
                                               "db.query.p99 0.5 1700000000"]
