"""zibrato-console's settings and spec: the worker that prints each flush to the terminal."""

from __future__ import annotations

from dataclasses import dataclass

import click

from ..components.fields import option
from ..components.spec import DestinationSpec
from .console import FORMATS


@dataclass(frozen=True)
class ConsoleConfig:
    """Print each flush of the subscribed levels to standard output.

    An interval in which nothing arrived prints nothing; but with --levels all
    and self-metrics on (the defaults), the worker's own figures arrive every
    flush under the level 'zibrato' (--no-self-metrics, or --levels without
    zibrato, hides them).
    """

    format_: str = option(
        "table",
        "A readable table, or one JSON object per series per flush.",
        flag="--format",
        type=click.Choice(FORMATS),
    )
    sketch: bool = option(
        False,
        'With --format json, include each sketched series\' whole distribution ("sketch").',
        is_flag=True,
    )


def build(config: ConsoleConfig):
    from .console import Console

    return Console(format=config.format_, sketch=config.sketch)


SPEC = DestinationSpec("console", ConsoleConfig, build, 10.0)
