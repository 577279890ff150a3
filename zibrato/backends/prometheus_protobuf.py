"""The Prometheus protobuf exposition: every series of a :class:`PrometheusState`, timers and histograms native.

Prometheus scrapes native histograms only in this format (varint-length-
delimited ``io.prometheus.client.MetricFamily`` messages), and only asks for
it with ``--enable-feature=native-histograms`` (2.42) or
``scrape_native_histograms`` (3.x). zibrato-prometheus answers it only when the
scraper's ``Accept`` asks for it: a Prometheus without the feature marks a
target down that sends protobuf anyway.

The messages are protoc's, generated from Prometheus' own ``metrics.proto``
(:mod:`zibrato.backends.prometheus_proto`); nothing here encodes bytes by hand.
Each timer and histogram carries its native histogram (schema, zero bucket,
spans and deltas from :mod:`.native_histogram`) and, beside it, its classic
``le`` buckets, so a scraper that keeps both can.
"""

from __future__ import annotations

from typing import Any

from .native_histogram import ZERO_THRESHOLD, NativeHistogram, write_buckets
from .prometheus_proto import metrics_pb2 as pb

CONTENT_TYPE = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
_TYPES = {"counter": pb.COUNTER, "gauge": pb.GAUGE, "histogram": pb.HISTOGRAM}


def wants_protobuf(accept: str | None) -> bool:
    """True when ``Accept`` lists the delimited MetricFamily protobuf with a non-zero q."""
    for media_range in (accept or "").split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        if kind.lower() != "application/vnd.google.protobuf":
            continue
        given = dict(p.split("=", 1) for p in params if "=" in p)
        if given.get("proto") != "io.prometheus.client.MetricFamily" or given.get("encoding") != "delimited":
            continue
        try:
            if float(given.get("q", "1")) > 0:
                return True
        except ValueError:
            continue
    return False


def exposition(state: Any) -> bytes:
    """Every family of ``state`` (a PrometheusState), each a length-delimited MetricFamily."""
    return b"".join(state.render(_family_bytes))


def _family_bytes(name: str, family: Any) -> bytes:
    message = family_message(name, family)
    body = message.SerializeToString()
    return varint(len(body)) + body


def varint(n: int) -> bytes:
    """The length prefix of a delimited message (protobuf's base-128 varint; what Go's pbutil writes)."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def family_message(name: str, family: Any) -> pb.MetricFamily:
    kind = family.kind
    message = pb.MetricFamily(name=name + "_total" if kind == "counter" else name, help=family.help, type=_TYPES[kind])
    for series in family.series.values():
        metric = message.metric.add()
        for key, value in series.labels.items():
            metric.label.add(name=key, value=value)
        if kind == "counter":
            metric.counter.value = series.value
        elif kind == "gauge":
            metric.gauge.value = series.value
        else:
            _histogram(metric.histogram, series)
    return message


def _histogram(h: pb.Histogram, series: Any) -> None:
    """Classic buckets (cumulative, +Inf left implicit) and the native histogram, in one message."""
    native: NativeHistogram | None = series.native
    integral = native.integral if native is not None else float(series.count).is_integer()
    if integral:
        h.sample_count = int(series.count)
    else:
        h.sample_count_float = series.count
    h.sample_sum = series.sum
    running = 0.0
    for bound, n in zip(series.bounds, series.buckets):
        running += n
        bucket = h.bucket.add(upper_bound=bound)
        if integral and float(running).is_integer():
            bucket.cumulative_count = int(running)
        else:
            bucket.cumulative_count_float = running
    h.zero_threshold = ZERO_THRESHOLD
    if native is None or native.schema is None:
        h.schema = 0
        h.positive_span.add(offset=0, length=0)  # an empty native histogram: the spec's no-op span
        return
    h.schema = native.schema
    if integral:
        h.zero_count = int(native.zero_count)
    else:
        h.zero_count_float = native.zero_count
    for spans_field, deltas_field, counts_field, buckets in (
        (h.positive_span, h.positive_delta, h.positive_count, native.positive),
        (h.negative_span, h.negative_delta, h.negative_count, native.negative),
    ):
        write_buckets(spans_field, deltas_field, counts_field, buckets, integral)
    if not h.positive_span and not h.negative_span:
        h.positive_span.add(offset=0, length=0)  # only zeros: still marked native
