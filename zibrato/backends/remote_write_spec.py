"""zibrato-remote-write's settings and spec: the worker that sends each flush to a remote write 1.0 receiver."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..components.addresses import url_callback
from ..components.fields import embed, option, values
from ..components.settings import Retry, read_secret, secret_file, timeout
from ..components.spec import DestinationSpec
from .prometheus_spec import buckets, exposition_expiry, max_native_buckets, series_expire

PASSWORD_ENV = "ZIBRATO_REMOTE_WRITE_PASSWORD"
BEARER_TOKEN_ENV = "ZIBRATO_REMOTE_WRITE_BEARER_TOKEN"


@dataclass(frozen=True)
class RemoteWriteConfig:
    """Send each flush to a Prometheus remote write receiver (docs/REMOTE_WRITE.md).
    \f

    Samples are cumulative, as Prometheus stores them: counters as <name>_total
    since the start, gauges and sets their last value, timers (<name>_seconds)
    and histograms native histograms (and, with --classic-histograms, le
    buckets), all stamped with the interval's end. 429, 5xx and connection
    errors are retried with backoff (honouring Retry-After); a receiver that
    answers 500 to native histograms gets classic buckets from then on; other
    refusals are logged with the receiver's message and dropped.
    """

    url: str = option(
        None,
        "The receiver's write endpoint, e.g. http://127.0.0.1:9090/api/v1/write.",
        required=True,
        metavar="URL",
        callback=url_callback(),
    )
    header_file: str | None = option(
        None, "Extra headers, a 'Name: value' line each.", type=click.Path(exists=True, dir_okay=False)
    )
    username: str | None = option(None, f"Basic auth user; its password: --password-file or ${PASSWORD_ENV}.")
    password_file: str | None = secret_file("Basic auth password (first line).")
    bearer_token_file: str | None = secret_file(f"File holding a bearer token [default: ${BEARER_TOKEN_ENV}].")
    ca_file: str | None = option(
        None, "CAs to trust (PEM) [default: the system's].", type=click.Path(exists=True, dir_okay=False)
    )
    classic_histograms: bool = option(
        False, "Also classic le buckets.", secondary="--no-classic-histograms", show_default=False
    )
    buckets: tuple[Any, ...] = buckets()
    max_native_buckets: int = max_native_buckets()
    max_samples_per_request: int = option(2000, "Most samples in one request.", type=click.IntRange(1, 1_000_000))
    series_expire: dict[str, float] | None = series_expire("is no longer sent")
    timeout: float = timeout(10.0, "Seconds per answer.")
    retry: Retry = embed(Retry(1.0, 60.0))
    #: the expiry once resolved (from --series-expire or --expire)
    expire: Any = None


def read_header_file(path: str | Path) -> dict[str, str]:
    """'Name: value' (or 'name=value') per line; blank lines and # comments skipped. Errors never echo a value."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise click.UsageError(f"cannot read --header-file {path}: {error.__class__.__name__}") from None
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        colon, equals = line.find(":"), line.find("=")
        cut = colon if colon > 0 and (equals < 0 or colon < equals) else equals
        name, value = line[:cut].strip(), line[cut + 1 :].strip() if cut > 0 else ""
        if cut <= 0 or not name or any(c in name for c in ' \t()<>@,;\\"/[]?={}') or not value:
            raise click.UsageError(f"--header-file {path}, line {number}: expected 'Name: value'")
        headers[name] = value
    return headers


def credentials(
    username: str | None, password_file: str | Path | None, bearer_token_file: str | Path | None
) -> tuple[tuple[str, str] | None, str | None]:
    """(basic auth, bearer token), from files or the environment only; a usage error names no secret."""
    if password_file is not None and username is None:
        raise click.UsageError("--password-file needs --username")
    password = (
        read_secret(password_file, "--password-file", first_line=True)
        if password_file
        else os.environ.get(PASSWORD_ENV)
    )
    token = (
        read_secret(bearer_token_file, "--bearer-token-file", first_line=True)
        if bearer_token_file
        else os.environ.get(BEARER_TOKEN_ENV)
    )
    if username is not None and not password:
        raise click.UsageError(f"--username needs a password: --password-file or ${PASSWORD_ENV}")
    if username is not None and token:
        raise click.UsageError("basic auth or a bearer token, not both")
    return ((username, password) if username is not None and password else None), (token or None)


def resolve(config: RemoteWriteConfig, shared: Any, given: Callable[[str], bool]) -> tuple[Any, Any]:
    return dataclasses.replace(config, expire=exposition_expiry(config, shared)), shared


def build(config: RemoteWriteConfig) -> Any:
    try:
        from .remote_write import RemoteWriteDestination, check_url
    except ImportError as error:
        raise click.ClickException(
            f"zibrato-remote-write needs the remote-write extra ({error.name} is missing): "
            "pip install '.[remote-write]' in Zibrato's checkout"
        ) from None
    try:
        check_url(config.url)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--url") from None
    headers = read_header_file(config.header_file) if config.header_file is not None else {}
    auth, token = credentials(config.username, config.password_file, config.bearer_token_file)
    named = values(config, "ca_file", "timeout", "classic_histograms", "max_native_buckets", "expire")
    return RemoteWriteDestination(
        config.url,
        headers=headers,
        auth=auth,
        bearer_token=token,
        bucket_rules=config.buckets,
        max_samples=config.max_samples_per_request,
        **named,
    )


SPEC = DestinationSpec("remote-write", RemoteWriteConfig, build, 10.0, resolve=resolve)
