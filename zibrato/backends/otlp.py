"""zibrato-otlp: deliver each interval to an OpenTelemetry Collector or any OTLP/HTTP backend.

The mapping from summaries to protobuf is :mod:`zibrato.backends.otlp_mapping`
(pure code); this module is the transport: ``POST <endpoint>`` of
``application/x-protobuf`` bodies (gzip by default) over one keep-alive
session, https verified against the system's CAs or ``--ca-file``.

Answers, as the OTLP specification says:

* 2xx: delivered; a ``partial_success`` with rejected points is logged with
  the server's message and counted (``points_rejected``), not retried;
* 429, 502, 503, 504, a connection error or a timeout: transient
  (:class:`~zibrato.delivery.Retryable`, with the ``Retry-After`` seconds);
  each request is a part of the interval (:meth:`OtlpDestination.parts`), so
  the delivery queue retries it with backoff and never sends again the
  requests already accepted;
* any other status: permanent; the request's points are dropped, counted and
  logged with the server's message (the ``google.rpc.Status`` in the body)
  (:class:`~zibrato.delivery.Rejected`); the delivery queue still sends the
  interval's other requests.

Headers (usually the auth token) come only from ``--headers-file`` or
``OTEL_EXPORTER_OTLP_HEADERS``; they are sent and never logged.
"""

from __future__ import annotations

import gzip
import logging
import os
import ssl
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from .. import __version__
from ..aggregation_needs import AggregationNeeds
from ..delivery import Rejected, Retryable, parse_retry_after, request_timeout
from ..destination import Destination, Interval, Part
from ..http_client import DEFAULT_MAX_ANSWER_BYTES, Answer, HttpSession, check_url, post
from ..runtime import RateLimitedLog, printable
from .otlp_mapping import OtlpMapper, count_points

DEFAULT_ENDPOINT = "http://localhost:4318"
METRICS_PATH = "/v1/metrics"
RETRYABLE_STATUSES = (429, 502, 503, 504)
COMPRESSIONS = ("gzip", "none")
_MAX_LOGGED_MESSAGE = 500


def metrics_url(endpoint: str | None = None, environ: dict | None = None) -> str:
    """Where to POST: ``--endpoint``, else the OpenTelemetry variables, else localhost:4318.

    ``--endpoint`` and ``OTEL_EXPORTER_OTLP_ENDPOINT`` are base URLs (``/v1/metrics``
    is appended unless already there); ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``
    is used as it is.
    """
    env = os.environ if environ is None else environ
    if endpoint:
        url = _with_path(endpoint)
    elif env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        url = env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]
    else:
        url = _with_path(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT)
    return check_url(url, "the OTLP endpoint", "put them in --headers-file", shown=_redacted(url))


def _with_path(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(METRICS_PATH) else base + METRICS_PATH


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}" if parts.password else url


def system_ca_bundle() -> str | bool:
    """The system's CA file or directory (what `openssl` trusts), else True: the default TLS context's."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, paths.capath, paths.openssl_capath):
        if candidate and os.path.exists(candidate):
            return candidate
    return True


def _status_class():
    """google.rpc.Status (what OTLP servers send with errors), built here: it is not in opentelemetry-proto."""
    proto = descriptor_pb2.FileDescriptorProto(name="zibrato_rpc_status.proto", package="google.rpc", syntax="proto3")
    message = proto.message_type.add(name="Status")
    message.field.add(
        name="code",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    message.field.add(
        name="message",
        number=2,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


_Status = _status_class()


def server_message(response: Answer) -> str:
    """The server's reason: a google.rpc.Status message, else the body's text, shortened."""
    body = response.body
    message = ""
    if "protobuf" in response.headers.get("Content-Type", ""):
        try:
            status = _Status()
            status.ParseFromString(body)
            message = status.message
        except DecodeError:
            message = ""
    if not message:
        message = body.decode("utf-8", "replace").strip() or response.reason or ""
    return printable(message, _MAX_LOGGED_MESSAGE)


class OtlpDestination(Destination):
    """Posts each interval as OTLP/HTTP protobuf requests of at most ``max_points`` points."""

    name = "otlp"
    aggregation_needs = AggregationNeeds(levels_apart=True)  # the level is an attribute of every data point
    self_figures = ("points_sent", "points_rejected", "requests_failed")

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        temporality: str = "delta",
        resource: dict[str, str] | None = None,
        compression: str = "gzip",
        ca_file: str | None = None,
        timeout: float = 10.0,
        max_points: int = 1000,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r} (gzip or none)")
        if max_points < 1 or timeout <= 0:
            raise ValueError("max_points and timeout must be positive")
        self.url = url
        self._headers = dict(headers or {})
        self.mapper = OtlpMapper(temporality=temporality, resource=resource)
        self.compression, self.ca_file = compression, ca_file
        self.timeout, self.max_points = timeout, max_points
        self.max_answer_bytes = max_answer_bytes
        self.log = logging.getLogger("zibrato.otlp")
        self._malformed_log = RateLimitedLog(self.log, 60.0)
        self.session: HttpSession | None = None
        self._figures: dict[str, Any] = {
            "requests_sent": 0,
            "points_sent": 0,
            "points_rejected": 0,
            "requests_rejected": 0,
            "requests_failed": 0,
            "malformed_answers": 0,
            "last_error": None,
        }

    def connect(self) -> None:
        session = HttpSession(headers=self._headers, verify=self.ca_file or system_ca_bundle())
        session.headers.update({"Content-Type": "application/x-protobuf", "User-Agent": f"zibrato-otlp/{__version__}"})
        if self.compression == "gzip":
            session.headers["Content-Encoding"] = "gzip"
        self.session = session
        self.log.info(
            "posting to %s (%s temporality, %s, at most %d points a request, %d headers)",
            self.url,
            "cumulative" if self.mapper.cumulative else "delta",
            self.compression,
            self.max_points,
            len(self._headers),
        )

    def parts(self, interval: Interval) -> list[Part]:
        """One part per request body (see :meth:`encode`)."""
        return [Part(body, points) for body, points in self.encode(interval)]

    def send(self, part: Part) -> None:
        """POST one request body; raise Retryable or Rejected as the answer says."""
        if self.session is None:
            self.connect()
        self._send(part.payload, part.points)

    def encode(self, interval: Interval) -> list[tuple[bytes, int]]:
        """The interval's request bodies, serialised (and compressed), with their point counts."""
        out = []
        for request in self.mapper.requests(interval.start, interval.end, interval.summaries, self.max_points):
            points = sum(
                count_points(m) for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            )
            body = request.SerializeToString()
            out.append((gzip.compress(body, compresslevel=6) if self.compression == "gzip" else body, points))
        return out

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def figures(self) -> dict:
        return {**self._figures, "endpoint": self.url, "series_failed_mapping": self.mapper.guard.failed}

    def _send(self, body: bytes, points: int) -> None:
        f = self._figures
        assert self.session is not None, "send() connects first"
        try:
            response = post(
                self.session,
                self.url,
                data=body,
                deadline=request_timeout(self.timeout),
                max_answer_bytes=self.max_answer_bytes,
            )
        except Retryable as failure:
            f["requests_failed"] += 1
            f["last_error"] = failure.reason
            raise
        status = response.status
        if 200 <= status < 300:
            f["requests_sent"] += 1
            self._partial_success(response, points)
            return
        message = server_message(response)
        f["last_error"] = f"{status} {message}"
        if status in RETRYABLE_STATUSES:
            f["requests_failed"] += 1
            raise Retryable(
                f"{status} from {self.url}: {message}",
                parse_retry_after(response.headers.get("Retry-After")),
                status=status,
            )
        f["requests_rejected"] += 1
        f["points_rejected"] += points
        self.log.error("%s refused %d data points with %d: %s (not retried)", self.url, points, status, message)
        raise Rejected(f"{status}: {message}")

    def _partial_success(self, response: Answer, points: int) -> None:
        """Count what a 2xx says it rejected; an answer that makes no sense is counted, never trusted.

        The request was accepted (2xx), so its points count as sent unless the
        answer says, sanely, that some were rejected. A truncated, undecodable
        or impossible answer (a negative ``rejected_data_points``) is a
        ``malformed_answers``, logged (rate-limited) with what was wrong.
        """
        answer = ExportMetricsServiceResponse()
        problem = None
        if response.truncated:
            problem = f"an answer over {self.max_answer_bytes} bytes (not read further)"
        else:
            try:
                answer.ParseFromString(response.body)
            except DecodeError:
                problem = "an answer that is not an ExportMetricsServiceResponse"
        partial = answer.partial_success
        if problem is None and partial.rejected_data_points < 0:
            problem = f"a negative rejected_data_points ({partial.rejected_data_points})"
        if problem is not None:
            self._figures["points_sent"] += points
            if response.body or response.truncated:
                self._figures["malformed_answers"] += 1
                self._malformed_log.warning(
                    "%s accepted %d data points with %s: counted as sent", self.url, points, problem
                )
            return
        rejected = min(partial.rejected_data_points, points)
        self._figures["points_sent"] += points - rejected
        if rejected or partial.error_message:
            self._figures["points_rejected"] += rejected
            self.log.warning(
                "%s accepted the request but rejected %d of its %d data points: %s",
                self.url,
                rejected,
                points,
                printable(partial.error_message, _MAX_LOGGED_MESSAGE) or "(no message)",
            )
