"""zibrato status: ask running daemons for their figures; the exit code says if they are healthy."""

from __future__ import annotations

import json

import click

from ..runtime import ask_status
from .common import CONTEXT_SETTINGS, Seconds

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_UNREACHABLE = 0, 1, 2


@click.command("status", context_settings=CONTEXT_SETTINGS)
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the daemons run.")
@click.option(
    "--port",
    "ports",
    multiple=True,
    type=click.IntRange(1, 65535),
    default=(5552,),
    show_default=True,
    help="Status port of a broker (its --port + 2) or a worker (its --status-port). Repeat for several.",
)
@click.option(
    "--timeout",
    default=2.0,
    show_default=True,
    type=Seconds(0, 3600, low_open=True),
    help="Seconds to wait for each (more than 0, at most 3600).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw figures as JSON.")
def command(host: str, ports: tuple[int, ...], timeout: float, as_json: bool) -> None:
    """Print each daemon's figures; exit 0 if all are healthy, 1 if one is not, 2 if one is silent."""
    code = EXIT_HEALTHY
    for port in ports:
        try:
            figures = ask_status(host, port, timeout)
        except TimeoutError as error:
            click.echo(f"{host}:{port}: UNREACHABLE ({error})")
            code = max(code, EXIT_UNREACHABLE)
            continue
        healthy = bool(figures.get("healthy"))
        if not healthy:
            code = max(code, EXIT_UNHEALTHY)
        if as_json:
            click.echo(json.dumps({"port": port, **figures}, sort_keys=True))
        else:
            click.echo(_describe(host, port, figures, healthy))
    raise SystemExit(code)


def _describe(host: str, port: int, figures: dict, healthy: bool) -> str:
    state = "OK" if healthy else "UNHEALTHY: " + "; ".join(figures.get("problems") or ["unknown"])
    lines = [f"{host}:{port} {figures.get('role', '?')} {state}"]
    for key in sorted(figures):
        if key not in ("role", "healthy", "problems"):
            lines.append(f"  {key}: {figures[key]}")
    return "\n".join(lines)
