"""Every built-in destination declares what it asks of the aggregation in one place: ``aggregation_needs``.

The older ``needs_level`` / ``needs_values`` attributes are still read, for
destinations written elsewhere (tests/test_worker_parts.py shows it); the
built-in ones no longer set them.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from expecter import expect

import zibrato.backends
from zibrato.aggregation_needs import AggregationNeeds
from zibrato.destination import Destination
from zibrato.forward import Forwarder


def built_in_destinations() -> list[type[Destination]]:
    found: set[type[Destination]] = {Forwarder}
    for module in pkgutil.iter_modules(zibrato.backends.__path__):
        loaded = importlib.import_module(f"zibrato.backends.{module.name}")
        for _, value in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(value, Destination) and value is not Destination and value.__module__ == loaded.__name__:
                found.add(value)
    return sorted(found, key=lambda cls: cls.__name__)


@pytest.mark.parametrize("destination", built_in_destinations(), ids=lambda cls: cls.__name__)
def test_a_built_in_destination_sets_no_older_needs_attribute(destination):
    for older in ("needs_level", "needs_values"):
        expect(any(older in vars(cls) for cls in destination.__mro__ if cls is not Destination)) == False


@pytest.mark.parametrize(
    ("module", "name", "needs"),
    [
        ("otlp", "OtlpDestination", AggregationNeeds(levels_apart=True)),
        ("prometheus", "PrometheusDestination", AggregationNeeds(levels_apart=True)),
        ("remote_write", "RemoteWriteDestination", AggregationNeeds(levels_apart=True)),
        ("statsd", "Statsd", AggregationNeeds(values=True)),
    ],
)
def test_levels_apart_and_values_are_declared_as_aggregation_needs(module, name, needs):
    destination = getattr(importlib.import_module(f"zibrato.backends.{module}"), name)
    expect(vars(destination)["aggregation_needs"]) == needs
    expect(AggregationNeeds.of(destination)) == needs
