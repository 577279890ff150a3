"""What the two kinds of pipeline share (real scripts: support.pipeline; threads: support.inprocess).

Nothing here starts a process, so a test that uses only this stays in the fast lane.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from zibrato import Zibrato

from .daemons import wait_until


class WaitsForMeasurements:
    """Waits until measurements beyond the warm-up have reached the worker (its status says so)."""

    client: Zibrato
    #: the worker's ``measurements`` once the warm-up settled
    baseline: int

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def wait_measurements(self, count: int) -> None:
        """Wait until ``count`` measurements beyond the warm-up have reached the worker."""
        self.client.flush()
        wait_until(
            lambda: self.status()["measurements"] >= self.baseline + count,
            timeout=10,
            message=f"{count} measurements at the worker",
        )


def pipelines(factory: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Fixture body: yields ``make(*args, **kwargs)`` (a started pipeline) and closes every one made."""
    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        made.append(factory(*args, **kwargs))
        return made[-1].start()

    try:
        yield make
    finally:
        for pipeline in made:
            pipeline.close()
