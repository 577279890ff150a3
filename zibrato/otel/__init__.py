"""zibrato.otel: the OpenTelemetry metrics API, recording through a Zibrato client.

::

    from opentelemetry import metrics
    import zibrato.otel

    metrics.set_meter_provider(zibrato.otel.MeterProvider(z))

Needs ``opentelemetry-api`` (``pip install zibrato[otel]``), never the SDK.
The mapping (instrument kinds, units, attributes, observable callbacks) is
in docs/OTEL.md.
"""

from __future__ import annotations

from .provider import DEFAULT_CARDINALITY_LIMIT, Meter, MeterProvider
from .series import FIGURES, OVERFLOW_TAG

__all__ = ["MeterProvider", "Meter", "DEFAULT_CARDINALITY_LIMIT", "FIGURES", "OVERFLOW_TAG"]
