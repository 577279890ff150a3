"""zibrato-librato's settings and spec: the worker that posts each flush to a Librato-compatible API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from ..components.addresses import url_callback
from ..components.fields import embed, option, values
from ..components.settings import Retry, read_secret, secret_file, timeout
from ..components.spec import DestinationSpec
from .librato import APIS, DEFAULT_API_URL

USERNAME_ENV = "ZIBRATO_LIBRATO_USERNAME"
TOKEN_ENV = "ZIBRATO_LIBRATO_APITOKEN"


@dataclass(frozen=True)
class LibratoConfig:
    """Post each flush to a Librato-compatible API (the Librato service itself is retired).

    See docs/LIBRATO.md.
    \f

    Counters are sent as gauges of their per-flush sum, gauges as their last
    value, timers as a summary gauge plus one gauge per percentile (name.p95).
    """

    username: str | None = option(None, "Librato account e-mail.", envvar=USERNAME_ENV)
    apitoken: str | None = option(
        None,
        "Librato API token. Prefer the environment variable or --apitoken-file: "
        "an option is visible to every user in `ps`.",
        envvar=TOKEN_ENV,
        secret=True,
    )
    apitoken_file: str | None = secret_file(
        "File holding the API token (a UTF-8 BOM and surrounding whitespace are ignored)."
    )
    api_url: str = option(DEFAULT_API_URL, "Librato API base URL.", callback=url_callback())
    api: str = option(
        "legacy",
        "legacy: source-based POST /v1/metrics (tags folded into the source); "
        "tagged: POST /v1/measurements with Zibrato's tags.",
        type=click.Choice(APIS),
    )
    source: str | None = option(None, "Source for series sent without one (legacy API); the 'source' tag (tagged API).")
    batch_size: int = option(300, "Most measurements per POST.", type=click.IntRange(1, 100_000))
    timeout: float = timeout(
        5.0,
        "Seconds each request may take in all: connect, send and the whole answer (keep it below the 8 s stop window).",
    )
    retry: Retry = embed(Retry(1.0, 60.0))

    def __post_init__(self) -> None:
        if self.apitoken and self.apitoken_file:
            raise click.UsageError(f"give the API token once: --apitoken (or {TOKEN_ENV}) or --apitoken-file, not both")


def api_token(config: LibratoConfig) -> str:
    """The token from exactly one of --apitoken, $ZIBRATO_LIBRATO_APITOKEN, --apitoken-file."""
    if config.apitoken_file:
        return read_secret(config.apitoken_file, "--apitoken-file")
    if config.apitoken and config.apitoken.strip():
        return config.apitoken.strip()
    raise click.UsageError(
        f"no Librato API token: give --apitoken-file PATH, set {TOKEN_ENV}, or --apitoken (visible in `ps`)"
    )


def check(config: LibratoConfig, shared: Any, given: Callable[[str], bool]) -> tuple[Any, Any]:
    """Usage errors before anything starts: the token, the username, a flush Librato cannot stamp."""
    from .librato import check_credentials, flush_interval_problem

    token = api_token(config)
    if not config.username:
        raise click.UsageError(f"no Librato username: give --username or set {USERNAME_ENV}")
    problem = flush_interval_problem(shared.flush_interval)
    if problem:
        raise click.BadParameter(problem, param_hint="--flush")
    try:
        check_credentials(config.username, token)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    return config, shared


def build(config: LibratoConfig) -> Any:
    from .librato import Librato

    named = values(config, "api_url", "api", "source", "batch_size", "timeout")
    return Librato(config.username or "", api_token(config), **named)


SPEC = DestinationSpec("librato", LibratoConfig, build, 60.0, resolve=check)
