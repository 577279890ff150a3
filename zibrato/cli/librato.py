"""zibrato-librato: the worker that posts each flush to Librato."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..backends.librato import APIS, DEFAULT_API_URL, Librato, check_credentials, flush_interval_problem
from .addresses import url_callback
from .common import (
    CONTEXT_SETTINGS,
    POSITIVE_SECONDS,
    WorkerCommand,
    backoff,
    retry_options,
    run_worker,
    standalone,
    worker_kwargs,
    worker_options,
)

USERNAME_ENV = "ZIBRATO_LIBRATO_USERNAME"
TOKEN_ENV = "ZIBRATO_LIBRATO_APITOKEN"


@click.command("librato", cls=WorkerCommand, context_settings=CONTEXT_SETTINGS)
@worker_options(default_flush=60.0)
@click.option("--username", envvar=USERNAME_ENV, show_envvar=True, help="Librato account e-mail.")
@click.option(
    "--apitoken",
    envvar=TOKEN_ENV,
    show_envvar=True,
    help="Librato API token. Prefer the environment variable or --apitoken-file: "
    "an option is visible to every user in `ps`.",
)
@click.option(
    "--apitoken-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the API token (a UTF-8 BOM and surrounding whitespace are ignored).",
)
@click.option(
    "--api-url", default=DEFAULT_API_URL, show_default=True, callback=url_callback(), help="Librato API base URL."
)
@click.option(
    "--api",
    type=click.Choice(APIS),
    default="legacy",
    show_default=True,
    help="legacy: source-based POST /v1/metrics (tags folded into the source); "
    "tagged: POST /v1/measurements with Zibrato's tags.",
)
@click.option(
    "--source", default=None, help="Source for series sent without one (legacy API); the 'source' tag (tagged API)."
)
@click.option(
    "--batch-size", default=300, show_default=True, type=click.IntRange(1, 100_000), help="Most measurements per POST."
)
@click.option(
    "--timeout",
    default=5.0,
    show_default=True,
    type=POSITIVE_SECONDS,
    help="Seconds each request may take in all: connect, send and the whole answer "
    "(keep it below the 8 s stop window).",
)
@retry_options(first=1.0, cap=60.0)
def command(
    username: str | None,
    apitoken: str | None,
    apitoken_file: Path | None,
    api_url: str,
    api: str,
    source: str | None,
    batch_size: int,
    timeout: float,
    retry_delay: float,
    max_retry_delay: float,
    verbose: bool,
    **options: Any,
) -> None:
    """Post each flush to a Librato-compatible API (the Librato service itself is retired).

    See docs/LIBRATO.md.
    \f

    Counters are sent as gauges of their per-flush sum, gauges as their last
    value, timers as a summary gauge plus one gauge per percentile (name.p95).
    See docs/LIBRATO.md.
    """
    token = _token(apitoken, apitoken_file)
    if not username:
        raise click.UsageError(f"no Librato username: give --username or set {USERNAME_ENV}")
    retries = backoff(retry_delay, max_retry_delay)
    flush_problem = flush_interval_problem(options["flush_interval"])
    if flush_problem:
        raise click.BadParameter(flush_problem, param_hint="--flush")
    try:
        check_credentials(username, token)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    run_worker(
        lambda: Librato(
            username, token, api_url=api_url, api=api, source=source, batch_size=batch_size, timeout=timeout
        ),
        verbose,
        backoff=retries,
        **worker_kwargs(options),
    )


def _token(apitoken: str | None, apitoken_file: Path | None) -> str:
    """The token from exactly one of --apitoken, $ZIBRATO_LIBRATO_APITOKEN, --apitoken-file."""
    if apitoken and apitoken_file:
        raise click.UsageError(f"give the API token once: --apitoken (or {TOKEN_ENV}) or --apitoken-file, not both")
    if apitoken_file:
        try:
            # utf-8-sig: Windows editors start a file with a BOM, which is not part of the token
            token = apitoken_file.read_text(encoding="utf-8-sig").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise click.UsageError(f"cannot read --apitoken-file {apitoken_file}: {error}") from None
        if not token:
            raise click.UsageError(f"--apitoken-file {apitoken_file} is empty")
        return token
    if apitoken and apitoken.strip():
        return apitoken.strip()
    raise click.UsageError(
        f"no Librato API token: give --apitoken-file PATH, set {TOKEN_ENV}, or --apitoken (visible in `ps`)"
    )


main = standalone(command, "zibrato-librato", "ZIBRATO_LIBRATO")
