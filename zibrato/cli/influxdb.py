"""zibrato-influxdb: the worker that writes each flush to InfluxDB (line protocol over HTTP)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..backends.influxdb import DEFAULT_BATCH_SIZE, DEFAULT_URL, TOKEN_ENV, InfluxDBDestination
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


@click.command("influxdb", cls=WorkerCommand, context_settings=CONTEXT_SETTINGS)
@worker_options(default_flush=10.0)
@click.option("--url", default=DEFAULT_URL, show_default=True, callback=url_callback(), help="InfluxDB's HTTP API.")
@click.option("--database", default=None, help="InfluxDB 1.x: the database to write to.")
@click.option("--org", default=None, help="InfluxDB 2.x: the organisation (with --bucket).")
@click.option("--bucket", default=None, help="InfluxDB 2.x: the bucket to write to.")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"File holding the API token (or set {TOKEN_ENV}; for 1.x, 'user:password').",
)
@click.option("--prefix", default="", show_default=True, help="Prepended to every measurement name.")
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    type=click.IntRange(1, None),
    help="Most points per write request.",
)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=POSITIVE_SECONDS,
    help="Seconds each write request may take in all: connect, send and the whole answer.",
)
@retry_options(first=0.5, cap=30.0)
def command(
    url: str,
    database: str | None,
    org: str | None,
    bucket: str | None,
    token_file: Path | None,
    prefix: str,
    batch_size: int,
    timeout: float,
    retry_delay: float,
    max_retry_delay: float,
    verbose: bool,
    **options: object,
) -> None:
    """Write each flush of the subscribed levels to InfluxDB, one point per series.

    The statistics are the point's fields, the tags (and source, level) its
    tags. 429, 5xx and connection errors are retried with backoff; other 4xx
    are logged with InfluxDB's message and dropped. See README, "Where the metrics go".
    """
    if bool(database) == bool(bucket):
        raise click.UsageError("give --database (InfluxDB 1.x) or --org and --bucket (2.x)")
    if bucket and not org:
        raise click.UsageError("--bucket needs --org")
    token = read_token(token_file)
    retries = backoff(retry_delay, max_retry_delay)
    run_worker(
        lambda: InfluxDBDestination(
            url,
            database=database,
            org=org,
            bucket=bucket,
            token=token,
            prefix=prefix,
            batch_size=batch_size,
            timeout=timeout,
        ),
        verbose,
        backoff=retries,
        **worker_kwargs(options),
    )


def read_token(token_file: Path | None) -> str | None:
    """The token from --token-file, else $INFLUXDB_TOKEN, else None (never from argv)."""
    env_token = os.environ.get(TOKEN_ENV, "").strip()
    if token_file is None:
        return _checked_token(env_token, TOKEN_ENV) if env_token else None
    if env_token:
        raise click.UsageError(f"give the token once: --token-file or {TOKEN_ENV}, not both")
    try:
        # utf-8-sig: Windows editors start a file with a BOM, which is not part of the token
        token = token_file.read_text(encoding="utf-8-sig").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise click.UsageError(f"cannot read --token-file {token_file}: {error}") from None
    if not token:
        raise click.UsageError(f"--token-file {token_file} is empty")
    return _checked_token(token, f"--token-file {token_file}")


def _checked_token(token: str, where: str) -> str:
    """A token an HTTP header can carry: printable ASCII without spaces (never echoed back)."""
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise click.UsageError(
            f"the token in {where} holds spaces, control or non-ASCII characters: is it the right file?"
        )
    return token


main = standalone(command, "zibrato-influxdb", "ZIBRATO_INFLUXDB")
