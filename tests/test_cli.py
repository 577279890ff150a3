"""Every command's usage errors and help, through click's CliRunner (in-process, fast).

Every numeric flag has a range: a value out of it, NaN or infinity is a usage
error (exit 2) that names the flag, never a daemon that spins or waits forever.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from expecter import expect

from zibrato.cli import group

CASES = [
    (["broker", "--port", "abc"], "is not a valid integer"),
    (["broker", "--bogus"], "No such option"),
    (["broker", "--port", "65534"], "PORT + 2 = 65536"),
    (["broker", "--startup-grace", "nan"], "not a finite number"),
    (["broker", "--startup-grace", "inf"], "not a finite number"),
    (["broker", "--startup-grace", "-1"], "out of range"),
    (["console", "--levels", ","], "no level given"),
    (["console", "--levels", "in fo"], "invalid level"),
    (["console", "--flush", "0"], "out of range"),
    (["console", "--flush", "nan"], "not a finite number"),
    (["console", "--flush", "inf"], "not a finite number"),
    (["console", "--flush", "1e-6"], "out of range"),
    (["console", "--flush", "soon"], "not a number"),
    (["console", "--percentiles", "50,101"], "outside (0, 100]"),
    (["console", "--percentiles", "nan"], "outside (0, 100]"),
    (["console", "--format", "xml"], "xml"),
    (["console", "--stop-timeout", "nan"], "not a finite number"),
    (["console", "--drop", " "], "empty pattern"),
    (["status", "--timeout", "-1"], "out of range"),
    (["status", "--timeout", "0"], "out of range"),
    (["status", "--timeout", "nan"], "not a finite number"),
    (["statsd", "--timeout", "inf"], "not a finite number"),
    (["statsd", "--protocol", "sctp"], "sctp"),
    (["statsd", "--mtu", "20"], "20"),
    (["statsd", "--source-as", "label"], "label"),
    (["statsd", "--tags", "influx"], "influx"),
    (["statsd", "--retry-delay", "nan"], "not a finite number"),
    (["statsd", "--max-retry-delay", "0.1", "--retry-delay", "1"], "must not be less than"),
    (["librato", "--username", "u", "--apitoken", "t", "--timeout", "nan"], "not a finite number"),
    (["librato", "--username", "u", "--apitoken", "t", "--flush", "1.5"], "whole number"),
    (["librato", "--username", "u", "--apitoken", "t", "--flush", "0.5"], "whole number"),
    (["graphite", "--timeout", "nan"], "not a finite number"),
    (["graphite", "--retry-delay", "inf"], "not a finite number"),
    (["influxdb", "--database", "m", "--timeout", "nan"], "not a finite number"),
    (["influxdb", "--database", "m", "--max-retry-delay", "0.1", "--retry-delay", "1"], "must not be less than"),
    (["otlp", "--timeout", "nan"], "not a finite number"),
    (["otlp", "--max-retry-delay", "0.5"], "must not be less than"),
    (["listen", "--flush-interval", "nan"], "not a finite number"),
    (["listen", "--timestamp-window", "inf"], "not a finite number"),
    (["demo", "--flush", "nan"], "not a finite number"),
    (["demo", "--duration", "inf"], "not a finite number"),
]


@pytest.mark.parametrize("argv, complaint", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_flags_exit_with_a_usage_message(argv, complaint):
    result = CliRunner().invoke(group, argv, prog_name="zibrato")
    expect(result.exit_code) == 2
    expect(result.output).contains("Usage:")
    expect(result.output).contains(complaint)


@pytest.mark.parametrize(
    "command",
    [
        "broker",
        "console",
        "statsd",
        "librato",
        "otlp",
        "prometheus",
        "remote-write",
        "graphite",
        "influxdb",
        "listen",
        "web",
        "forward",
        "keys",
        "status",
        "demo",
    ],
)
def test_every_command_explains_itself(command):
    result = CliRunner().invoke(group, [command, "--help"], prog_name="zibrato")
    expect(result.exit_code) == 0
    expect(result.output).contains("Usage:")


def test_worker_help_lists_the_shared_flags_and_the_series_rules():
    shown = CliRunner().invoke(group, ["console", "--help"]).output
    for flag in ("--levels", "--flush", "--percentiles", "--keep", "--drop", "--drop-tags", "--stop-timeout"):
        expect(shown).contains(flag)


def test_a_token_file_with_a_bom_and_whitespace_gives_the_bare_token(tmp_path):
    from zibrato.backends.librato_spec import LibratoConfig, api_token

    path = tmp_path / "token"
    path.write_bytes("\ufefftok-123\r\n".encode("utf-8"))
    expect(api_token(LibratoConfig(apitoken_file=str(path)))) == "tok-123"


@pytest.mark.parametrize("token", ["tok\u20ac123", "tok\u200b123", "tok\x07123"])
def test_a_token_http_basic_auth_cannot_send_is_a_startup_usage_error(tmp_path, token):
    path = tmp_path / "token"
    path.write_text(token, encoding="utf-8")
    result = CliRunner().invoke(
        group, ["librato", "--username", "ops@example.com", "--apitoken-file", str(path)], prog_name="zibrato"
    )
    expect(result.exit_code) == 2
    expect(result.output).contains("API token")
    expect(result.output).does_not_contain(token)
