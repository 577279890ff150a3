"""zibrato-remote-write: the worker that sends each flush to a Prometheus remote write 1.0 receiver."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import click

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
from .prometheus import _own_expire, _shared_params, buckets_option, max_native_buckets_option

PASSWORD_ENV = "ZIBRATO_REMOTE_WRITE_PASSWORD"
BEARER_TOKEN_ENV = "ZIBRATO_REMOTE_WRITE_BEARER_TOKEN"


@click.command("remote-write", cls=WorkerCommand, context_settings=CONTEXT_SETTINGS)
@_own_expire
@worker_options(default_flush=10.0)
@click.option(
    "--url",
    required=True,
    metavar="URL",
    callback=url_callback(),
    help="The receiver's write endpoint, e.g. http://127.0.0.1:9090/api/v1/write.",
)
@click.option(
    "--header-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Extra headers, a 'Name: value' line each.",
)
@click.option("--username", default=None, help=f"Basic auth user; its password: --password-file or ${PASSWORD_ENV}.")
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Basic auth password (first line).",
)
@click.option(
    "--bearer-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"File holding a bearer token [default: ${BEARER_TOKEN_ENV}].",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    help="CAs to trust (PEM) [default: the system's].",
)
@click.option(
    "--classic-histograms/--no-classic-histograms",
    default=False,
    show_default=True,
    help="Also classic le buckets.",
)
@buckets_option
@max_native_buckets_option
@click.option(
    "--max-samples-per-request",
    default=2000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Most samples in one request.",
)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=POSITIVE_SECONDS,
    help="Seconds per answer.",
)
@retry_options(first=1.0, cap=60.0)
def command(
    url: str,
    header_file: Path | None,
    username: str | None,
    password_file: Path | None,
    bearer_token_file: Path | None,
    ca_file: str | None,
    classic_histograms: bool,
    buckets: tuple,
    max_native_buckets: int,
    max_samples_per_request: int,
    timeout: float,
    retry_delay: float,
    max_retry_delay: float,
    verbose: bool,
    **options: object,
) -> None:
    """Send each flush of the subscribed levels to a Prometheus remote write receiver.

    See docs/REMOTE_WRITE.md.
    \f

    Samples are cumulative, as Prometheus stores them: counters as <name>_total
    since the start, gauges and sets their last value, timers (<name>_seconds)
    and histograms native histograms (and, with --classic-histograms, le
    buckets), all stamped with the interval's end. 429, 5xx and connection
    errors are retried with backoff (honouring Retry-After); a receiver that
    answers 500 to native histograms gets classic buckets from then on; other
    refusals are logged with the receiver's message and dropped.
    """
    try:
        from ..backends.remote_write import RemoteWriteDestination, check_url
    except ImportError as error:
        raise click.ClickException(
            f"zibrato-remote-write needs the remote-write extra ({error.name} is missing): "
            "pip install '.[remote-write]' in Zibrato's checkout"
        ) from None
    try:
        check_url(url)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--url") from None
    headers = read_header_file(header_file) if header_file is not None else {}
    auth, token = _credentials(username, password_file, bearer_token_file)
    expire = cast(
        "float | dict[str, float]", options["expire"] if "expire" in _shared_params() else options.pop("expire")
    )
    retries = backoff(retry_delay, max_retry_delay)
    run_worker(
        lambda: RemoteWriteDestination(
            url,
            headers=headers,
            auth=auth,
            bearer_token=token,
            ca_file=ca_file,
            timeout=timeout,
            max_samples=max_samples_per_request,
            classic_histograms=classic_histograms,
            bucket_rules=buckets,
            max_native_buckets=max_native_buckets,
            expire=expire,
        ),
        verbose,
        backoff=retries,
        **worker_kwargs(options),
    )


def read_header_file(path: Path) -> dict[str, str]:
    """'Name: value' (or 'name=value') per line; blank lines and # comments skipped. Errors never echo a value."""
    try:
        text = path.read_text(encoding="utf-8")
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
        if "\r" in value or "\n" in value:
            raise click.UsageError(f"--header-file {path}, line {number}: a value cannot hold a line break")
        headers[name] = value
    return headers


def _credentials(
    username: str | None, password_file: Path | None, bearer_token_file: Path | None
) -> tuple[tuple[str, str] | None, str | None]:
    """(basic auth, bearer token), from files or the environment only; a usage error names no secret."""
    password = _secret(password_file, "--password-file") if password_file else os.environ.get(PASSWORD_ENV)
    token = _secret(bearer_token_file, "--bearer-token-file") if bearer_token_file else os.environ.get(BEARER_TOKEN_ENV)
    if password_file is not None and username is None:
        raise click.UsageError("--password-file needs --username")
    if username is not None and not password:
        raise click.UsageError(f"--username needs a password: --password-file or ${PASSWORD_ENV}")
    if username is not None and token:
        raise click.UsageError("basic auth or a bearer token, not both")
    return ((username, password) if username is not None and password else None), (token or None)


def _secret(path: Path, flag: str) -> str:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise click.UsageError(f"cannot read {flag} {path}: {error.__class__.__name__}") from None
    if not lines or not lines[0].strip():
        raise click.UsageError(f"{flag} {path} is empty")
    return lines[0].strip()


main = standalone(command, "zibrato-remote-write", "ZIBRATO_REMOTE_WRITE")
