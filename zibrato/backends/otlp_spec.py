"""zibrato-otlp's settings and spec: the worker that posts each flush to an OTLP/HTTP endpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..components.fields import embed, option, values
from ..components.settings import Retry, timeout
from ..components.spec import DestinationSpec

HEADERS_ENV = "OTEL_EXPORTER_OTLP_HEADERS"
METRICS_HEADERS_ENV = "OTEL_EXPORTER_OTLP_METRICS_HEADERS"


@dataclass(frozen=True)
class OtlpConfig:
    """Post each flush of the subscribed levels to an OTLP/HTTP endpoint.

    See docs/OTLP.md.
    \f

    Counters become Sums (delta by default), gauges Gauges, timers and
    histograms ExponentialHistograms, sets Gauges of their unique count.
    429, 502, 503, 504 and connection errors are retried with backoff
    (honouring Retry-After); other refusals are logged with the server's
    message and dropped.
    """

    endpoint: str | None = option(
        None,
        "OTLP/HTTP base URL; /v1/metrics is appended unless present "
        "[default: $OTEL_EXPORTER_OTLP_METRICS_ENDPOINT as is, else "
        "$OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318].",
        metavar="URL",
    )
    headers_file: str | None = option(
        None,
        "File of request headers (the auth token), key=value per line or comma-separated; "
        f"added to ${HEADERS_ENV}. Headers are never taken from the command line.",
        type=click.Path(exists=True, dir_okay=False),
    )
    ca_file: str | None = option(
        None,
        "PEM file of the CAs to trust for https [default: the system's CAs].",
        type=click.Path(exists=True, dir_okay=False),
    )
    service_name: str | None = option(None, "Resource service.name [default: $OTEL_SERVICE_NAME, else zibrato].")
    temporality: str = option(
        "delta",
        "Sums and histograms per interval, or running totals per series.",
        type=click.Choice(["delta", "cumulative"]),
    )
    compression: str = option("gzip", "Request body encoding.", type=click.Choice(["gzip", "none"]))
    max_points: int = option(
        1000, "Most data points per request; an interval with more is split.", type=click.IntRange(1, None)
    )
    timeout: float = timeout(
        10.0,
        "Seconds each request may take in all: connect, send and the whole answer (keep it below the 8 s stop window).",
    )
    retry: Retry = embed(Retry(1.0, 60.0))


def build(config: OtlpConfig) -> Any:
    try:
        from .otlp import OtlpDestination, metrics_url
        from .otlp_mapping import resource_attributes
    except ImportError as error:
        raise click.ClickException(
            f"zibrato-otlp needs the otlp extra ({error.name} is missing): pip install '.[otlp]' in Zibrato's checkout"
        ) from None
    try:
        url = metrics_url(config.endpoint)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--endpoint") from None
    headers = read_headers(config.headers_file)
    try:
        resource = resource_attributes(config.service_name)
    except ValueError as error:
        raise click.UsageError(f"OTEL_RESOURCE_ATTRIBUTES: {error}") from None
    named = values(config, "temporality", "compression", "ca_file", "timeout", "max_points")
    return OtlpDestination(url, headers=headers, resource=resource, **named)


def read_headers(headers_file: str | Path | None) -> dict[str, str]:
    """Headers from the environment, then the file (which wins); errors never echo a value."""
    from .otlp_mapping import parse_key_values

    headers: dict[str, str] = {}
    for variable in (HEADERS_ENV, METRICS_HEADERS_ENV):
        try:
            headers.update(parse_key_values(os.environ.get(variable)))
        except ValueError as error:
            raise click.UsageError(f"${variable}: {error}") from None
    if headers_file is not None:
        try:
            text = Path(headers_file).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise click.UsageError(f"cannot read --headers-file {headers_file}: {error.__class__.__name__}") from None
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        try:
            headers.update(parse_key_values(",".join(lines)))
        except ValueError as error:
            raise click.UsageError(f"--headers-file {headers_file}: {error}") from None
    return headers


SPEC = DestinationSpec("otlp", OtlpConfig, build, 60.0)
