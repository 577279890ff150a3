"""zibrato-otlp and zibrato-prometheus say which extra is missing, instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from expecter import expect

RUN = (
    "import sys; sys.modules[{module!r}] = None; sys.argv[0] = {script!r}; "
    "from zibrato.cli.{command} import main; main()"
)


@pytest.mark.parametrize(
    "command, module, extra", [("otlp", "opentelemetry", "otlp"), ("prometheus", "prometheus_client", "prometheus")]
)
def test_a_missing_extra_is_named(command, module, extra):
    code = RUN.format(module=module, script=f"zibrato-{command}", command=command)
    run = subprocess.run([sys.executable, "-c", code, "--port", "5551"], capture_output=True, text=True, timeout=30)

    expect(run.returncode) == 1
    expect(run.stderr).contains(f"pip install '.[{extra}]' in Zibrato's checkout")
    expect(run.stderr).does_not_contain("Traceback")
