"""zibrato-otlp: the worker that posts each flush to an OTLP/HTTP endpoint (an OpenTelemetry Collector)."""

from __future__ import annotations

import os
from pathlib import Path

import click

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

HEADERS_ENV = "OTEL_EXPORTER_OTLP_HEADERS"
METRICS_HEADERS_ENV = "OTEL_EXPORTER_OTLP_METRICS_HEADERS"


@click.command("otlp", cls=WorkerCommand, context_settings=CONTEXT_SETTINGS)
@worker_options(default_flush=60.0)
@click.option(
    "--endpoint",
    default=None,
    metavar="URL",
    help="OTLP/HTTP base URL; /v1/metrics is appended unless present "
    "[default: $OTEL_EXPORTER_OTLP_METRICS_ENDPOINT as is, else "
    "$OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318].",
)
@click.option(
    "--headers-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of request headers (the auth token), key=value per line or comma-separated; "
    f"added to ${HEADERS_ENV}. Headers are never taken from the command line.",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM file of the CAs to trust for https [default: the system's CAs].",
)
@click.option("--service-name", default=None, help="Resource service.name [default: $OTEL_SERVICE_NAME, else zibrato].")
@click.option(
    "--temporality",
    type=click.Choice(["delta", "cumulative"]),
    default="delta",
    show_default=True,
    help="Sums and histograms per interval, or running totals per series.",
)
@click.option(
    "--compression",
    type=click.Choice(["gzip", "none"]),
    default="gzip",
    show_default=True,
    help="Request body encoding.",
)
@click.option(
    "--max-points",
    default=1000,
    show_default=True,
    type=click.IntRange(1, None),
    help="Most data points per request; an interval with more is split.",
)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=POSITIVE_SECONDS,
    help="Seconds each request may take in all: connect, send and the whole answer "
    "(keep it below the 8 s stop window).",
)
@retry_options(first=1.0, cap=60.0)
def command(
    endpoint: str | None,
    headers_file: Path | None,
    ca_file: str | None,
    service_name: str | None,
    temporality: str,
    compression: str,
    max_points: int,
    timeout: float,
    retry_delay: float,
    max_retry_delay: float,
    verbose: bool,
    **options: object,
) -> None:
    """Post each flush of the subscribed levels to an OTLP/HTTP endpoint.

    See docs/OTLP.md.
    \f

    Counters become Sums (delta by default), gauges Gauges, timers and
    histograms ExponentialHistograms, sets Gauges of their unique count.
    429, 502, 503, 504 and connection errors are retried with backoff
    (honouring Retry-After); other refusals are logged with the server's
    message and dropped. See README, "zibrato-otlp".
    """
    try:
        from ..backends.otlp import OtlpDestination, metrics_url
        from ..backends.otlp_mapping import resource_attributes
    except ImportError as error:
        raise click.ClickException(
            f"zibrato-otlp needs the otlp extra ({error.name} is missing): pip install '.[otlp]' in Zibrato's checkout"
        ) from None

    try:
        url = metrics_url(endpoint)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--endpoint") from None
    headers = _headers(headers_file)
    try:
        resource = resource_attributes(service_name)
    except ValueError as error:
        raise click.UsageError(f"OTEL_RESOURCE_ATTRIBUTES: {error}") from None
    retries = backoff(retry_delay, max_retry_delay)
    run_worker(
        lambda: OtlpDestination(
            url,
            headers=headers,
            temporality=temporality,
            resource=resource,
            compression=compression,
            ca_file=ca_file,
            timeout=timeout,
            max_points=max_points,
        ),
        verbose,
        backoff=retries,
        **worker_kwargs(options),
    )


def _headers(headers_file: Path | None) -> dict[str, str]:
    """Headers from the environment, then the file (which wins); errors never echo a value."""
    from ..backends.otlp_mapping import parse_key_values

    headers: dict[str, str] = {}
    for variable in (HEADERS_ENV, METRICS_HEADERS_ENV):
        try:
            headers.update(parse_key_values(os.environ.get(variable)))
        except ValueError as error:
            raise click.UsageError(f"${variable}: {error}") from None
    if headers_file is not None:
        try:
            text = headers_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise click.UsageError(f"cannot read --headers-file {headers_file}: {error.__class__.__name__}") from None
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        try:
            headers.update(parse_key_values(",".join(lines)))
        except ValueError as error:
            raise click.UsageError(f"--headers-file {headers_file}: {error}") from None
    return headers


main = standalone(command, "zibrato-otlp", "ZIBRATO_OTLP")
