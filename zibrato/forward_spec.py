"""zibrato-forward's settings and spec: the forwarder tier, a worker whose destination is an upstream broker."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .components.addresses import split_host_port
from .components.fields import Parsed, Seconds, embed, option
from .components.settings import Retry
from .components.spec import DestinationSpec

RETRY_CAP_DEPRECATED = (
    "--retry-cap is deprecated and will go in the next minor version: use --max-retry-delay "
    "(the retry pair every worker shares: --retry-delay, --max-retry-delay)"
)


def _upstream(text: str) -> str:
    try:
        split_host_port(text.removeprefix("tcp://"), "--to")
    except ValueError as error:
        raise ValueError(f"{error} (the upstream broker's --port)") from None
    return text


@dataclass(frozen=True)
class ForwardConfig:
    """Aggregate this host's levels and send each interval's mergeable summaries upstream.

    Subscribes to the local broker (--broker, plain loopback) and sends
    to --to with --curve-secret-key/--curve-server-key (the upstream broker's
    key) when given. Workers upstream merge the summaries with what they
    receive raw: exact counts and sums, percentiles within the sketch's bound.
    A 15-minute upstream outage is held in the backlog (docs/SCALING.md).
    """

    to: str = option(
        None,
        "The upstream broker's client (PULL) port, e.g. global.example:5550.",
        required=True,
        metavar="HOST:PORT",
        type=Parsed(_upstream),
    )
    drop_source: bool = option(
        False, "Forward series without their source, so every host's series merge upstream.", is_flag=True
    )
    source: str | None = option(None, "Source given to series that have none (e.g. this host's name).", metavar="NAME")
    retry: Retry = embed(Retry(0.5, 10.0))
    #: the former name of --max-retry-delay, hidden (a deprecation line at start)
    retry_cap: float | None = option(None, "", type=Seconds(0.5, 3600), hidden=True)
    #: the CURVE keys for the upstream broker (the --curve-* flags: the local broker is plain loopback)
    upstream_curve: Any = None


def resolve(config: ForwardConfig, shared: Any, given: Callable[[str], bool]) -> tuple[Any, Any]:
    """The --curve-* keys are the upstream broker's; --retry-cap, when given, caps the retries."""
    from .components.builder import replace_shared

    retry = config.retry
    if config.retry_cap is not None and not given("max_retry_delay"):
        retry = Retry(min(retry.retry_delay, config.retry_cap), config.retry_cap)
    config = dataclasses.replace(config, upstream_curve=shared.curve, retry=retry)
    return config, replace_shared(shared, curve=None)


def backoff(config: ForwardConfig) -> Any:
    if config.retry_cap is not None:
        logging.getLogger("zibrato").warning("%s", RETRY_CAP_DEPRECATED)
    return config.retry.backoff()


def build(config: ForwardConfig) -> Any:
    from .forward import Forwarder

    return Forwarder(config.to, drop_source=config.drop_source, source=config.source, curve=config.upstream_curve)


SPEC = DestinationSpec(
    "forward",
    ForwardConfig,
    build,
    10.0,
    backoff=backoff,
    resolve=resolve,
    worker_class="zibrato.forward:ForwardWorker",
)
