"""A third-party destination in one module: a config dataclass, a Destination, one spec.

tests/test_components.py registers it through a temporary dist-info
(``[zibrato.destinations] toy = toy_destination:SPEC``), exactly as a package
would in its setup.py or pyproject.toml, and builds everything else from it:
the ``zibrato toy`` command, its --help, its docs/CLI.md section, its --config
keys and the running worker's `zibrato status`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import click

from zibrato.components import DestinationSpec, Retry, embed, option
from zibrato.destination import Destination, Interval


@dataclass(frozen=True)
class ToyConfig:
    output: str = option(None, "File to append one JSON line per interval to.", required=True, metavar="FILE")
    greeting: str = option("hello", "Written in every line.", type=click.Choice(["hello", "hi"]))
    retry: Retry = embed(Retry(0.5, 5.0))


class Toy(Destination):
    name = "toy"

    def __init__(self, output: str, greeting: str) -> None:
        self.output, self.greeting, self.intervals_written = output, greeting, 0

    def post(self, interval: Interval) -> None:
        names = sorted({summary["name"] for summary in interval.summaries})
        with open(self.output, "a", encoding="utf-8") as file:
            file.write(json.dumps({"greeting": self.greeting, "names": names}) + "\n")
        self.intervals_written += 1

    def figures(self) -> dict:
        return {"greeting": self.greeting, "intervals_written": self.intervals_written}


SPEC = DestinationSpec(
    name="toy",
    config=ToyConfig,
    factory=lambda config: Toy(config.output, config.greeting),
    default_flush=5.0,
    summary="Append each flush's series names to a file, as one JSON line.",
)
