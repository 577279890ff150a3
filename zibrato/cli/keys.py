"""zibrato keys: write a CURVE key pair for a broker, a worker, a forwarder or a client."""

from __future__ import annotations

import click

from ..curve import KeyFileError, create_keys
from .common import CONTEXT_SETTINGS


@click.command("keys", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write NAME.key and NAME.key_secret in (created if missing).",
)
@click.option("--force", is_flag=True, help="Replace an existing key pair of that name.")
def command(name: str, directory: str, force: bool) -> None:
    """Write NAME.key (public) and NAME.key_secret (mode 600) in pyzmq's certificate format.

    Give the broker its NAME.key_secret (--curve-secret-key) and copy each
    client's public NAME.key into the broker's --curve-clients directory;
    clients get their own NAME.key_secret and the broker's NAME.key.
    """
    try:
        public, secret = create_keys(name, directory, force=force)
    except KeyFileError as error:
        raise click.UsageError(str(error)) from None
    click.echo(f"public key: {public}\nsecret key: {secret} (mode 600: keep it on this host)")
