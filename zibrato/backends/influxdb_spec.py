"""zibrato-influxdb's settings and spec: the worker that writes each flush to InfluxDB (line protocol)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..components.addresses import url_callback
from ..components.fields import embed, option, values
from ..components.settings import Retry, read_secret, secret_file, timeout
from ..components.spec import DestinationSpec
from .influxdb import DEFAULT_BATCH_SIZE, DEFAULT_URL, TOKEN_ENV


@dataclass(frozen=True)
class InfluxDBConfig:
    """Write each flush of the subscribed levels to InfluxDB, one point per series.

    The statistics are the point's fields, the tags (and source, level) its
    tags. 429, 5xx and connection errors are retried with backoff; other 4xx
    are logged with InfluxDB's message and dropped. See README, "Where the metrics go".
    """

    url: str = option(DEFAULT_URL, "InfluxDB's HTTP API.", callback=url_callback())
    database: str | None = option(None, "InfluxDB 1.x: the database to write to.")
    org: str | None = option(None, "InfluxDB 2.x: the organisation (with --bucket).")
    bucket: str | None = option(None, "InfluxDB 2.x: the bucket to write to.")
    token_file: str | None = secret_file(f"File holding the API token (or set {TOKEN_ENV}; for 1.x, 'user:password').")
    prefix: str = option("", "Prepended to every measurement name.")
    batch_size: int = option(DEFAULT_BATCH_SIZE, "Most points per write request.", type=click.IntRange(1, None))
    timeout: float = timeout(10.0, "Seconds each write request may take in all: connect, send and the whole answer.")
    retry: Retry = embed(Retry(0.5, 30.0))

    def __post_init__(self) -> None:
        if bool(self.database) == bool(self.bucket):
            raise click.UsageError("give --database (InfluxDB 1.x) or --org and --bucket (2.x)")
        if self.bucket and not self.org:
            raise click.UsageError("--bucket needs --org")


def read_token(token_file: str | Path | None) -> str | None:
    """The token from --token-file, else $INFLUXDB_TOKEN, else None (never from argv)."""
    env_token = os.environ.get(TOKEN_ENV, "").strip()
    if token_file is None:
        return _checked_token(env_token, TOKEN_ENV) if env_token else None
    if env_token:
        raise click.UsageError(f"give the token once: --token-file or {TOKEN_ENV}, not both")
    return _checked_token(read_secret(token_file, "--token-file"), f"--token-file {token_file}")


def _checked_token(token: str, where: str) -> str:
    """A token an HTTP header can carry: printable ASCII without spaces (never echoed back)."""
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise click.UsageError(
            f"the token in {where} holds spaces, control or non-ASCII characters: is it the right file?"
        )
    return token


def build(config: InfluxDBConfig) -> Any:
    from .influxdb import InfluxDBDestination

    named = values(config, "database", "org", "bucket", "prefix", "batch_size", "timeout")
    return InfluxDBDestination(config.url, token=read_token(config.token_file), **named)


SPEC = DestinationSpec("influxdb", InfluxDBConfig, build, 10.0)
