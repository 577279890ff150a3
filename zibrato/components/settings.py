"""Settings structs every spec shares, so "retry", "timeout" and "a secret file" mean the same.

Like the OpenTelemetry Collector's ``configretry.BackOffConfig`` and
``TimeoutConfig``: a destination embeds :class:`Retry` (with its own
defaults) instead of declaring --retry-delay again, and reads every secret
through :func:`read_secret`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .fields import POSITIVE_SECONDS, option


@dataclass(frozen=True)
class Retry:
    """--retry-delay and --max-retry-delay: the delivery backoff of a destination that retries."""

    retry_delay: float = option(0.5, "{scope}First delay before a retry; doubles (with jitter).", type=POSITIVE_SECONDS)
    max_retry_delay: float = option(
        30.0, "{scope}Cap on the delay between retries (Retry-After: up to 300 s).", type=POSITIVE_SECONDS
    )

    def __post_init__(self) -> None:
        if self.max_retry_delay < self.retry_delay:
            raise click.BadParameter("must not be less than --retry-delay", param_hint="--max-retry-delay")

    def backoff(self) -> Any:
        from ..delivery import Backoff

        return Backoff(self.retry_delay, self.max_retry_delay)


def timeout(default: float, help: str) -> Any:
    """--timeout: seconds for one delivery attempt (more than 0, at most an hour), help per destination."""
    return option(default, help, type=POSITIVE_SECONDS)


#: paths already warned about being world-readable (one line per file, not per read)
_WARNED: set[str] = set()


class SecretError(click.UsageError):
    """A secret file that cannot be used; the message names the flag and file, never the content."""


def read_secret(path: str | Path, flag: str, first_line: bool = False) -> str:
    """The secret in ``path``: UTF-8 with or without a BOM, surrounding whitespace stripped (or its first line).

    Windows editors start a file with a BOM, which is not part of the token
    (a BOM token made every l2met drain request answer 401). A file anyone may
    read is used but logged once. Errors name ``flag`` and the file, never
    what it holds.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise SecretError(f"cannot read {flag} {path}: {error.__class__.__name__}") from None
    secret = text.strip()
    if first_line and secret:
        secret = secret.splitlines()[0].strip()
    if not secret:
        raise SecretError(f"{flag} {path} is empty")
    _warn_if_world_readable(str(path), flag)
    return secret


def _warn_if_world_readable(path: str, flag: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & stat.S_IROTH and path not in _WARNED:
        _WARNED.add(path)
        click.echo(f"warning: {flag} {path} is readable by everyone (chmod o-r {path})", err=True)


def secret_file(help: str, **flag: Any) -> Any:
    """A flag naming a file that holds a secret (the path is the setting; :func:`read_secret` reads it)."""
    return option(None, help, type=click.Path(exists=True, dir_okay=False), metavar="FILE", **flag)


def key_file(help: str, directory: bool = False) -> Any:
    """A CURVE key file (or, ``directory``: a directory of public keys) flag: a path, never the key."""
    kind = click.Path(file_okay=False) if directory else click.Path(dir_okay=False)
    return option(None, help, type=kind, metavar="DIR" if directory else "FILE", show_default=False)


@dataclass(frozen=True)
class CurveClient:
    """--curve-secret-key / --curve-server-key of whatever connects to a broker (workers, listener)."""

    curve_secret_key: str | None = key_file("This process's CURVE secret key file (NAME.key_secret).")
    curve_server_key: str | None = key_file("The broker's CURVE public key file (NAME.key).")

    def keys(self) -> Any:
        """The :class:`~zibrato.curve.ClientKeys`, or None; a usage error when a file is unreadable."""
        from ..curve import ClientKeys, KeyFileError

        try:
            return ClientKeys.from_options(self.curve_secret_key, self.curve_server_key)
        except KeyFileError as error:
            raise click.BadParameter(str(error), param_hint="--curve-secret-key/--curve-server-key") from None
