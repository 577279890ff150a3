"""The real OpenTelemetry Collector (``.tools/bin/otelcol``, built by ``bin/setup --test`` from
tests/otelcol/builder.yaml) on ephemeral loopback ports, for tests.

:class:`Collector` writes a temporary config (an OTLP/HTTP receiver, the
processors and exporters a test names, and the Collector's own metrics on a
loopback port), starts the binary, waits until it says it is ready, and can be
stopped and started again on the same ports (an outage). :meth:`Collector.telemetry`
reads its own counters (accepted, refused, sent, failed metric points).

:class:`OtlpRelay` sits between ``zibrato-otlp`` and the Collector and keeps a
copy of every request it forwards: what Zibrato sent, byte for byte, to compare
with what comes out of the Collector.

A missing binary is a failure naming what to do, never a skip: these tests are
the proof that Zibrato works with the real Collector.
"""

from __future__ import annotations

import gzip
import json
import shutil
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from .daemons import free_ports, start_server, stop_process

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"
BINARY = TOOLS / "otelcol"
READY = "Everything is ready"
GO = Path("/usr/local/go/bin/go")  # where Go's own installer puts it, often not on PATH


def require_binary() -> Path:
    """The Collector binary, or a failure that says how to get it (and what is missing)."""
    if BINARY.exists():
        return BINARY
    has_go = shutil.which("go") is not None or GO.exists()
    why = "it was not built" if has_go else "Go is not installed (the build needs Go >= 1.24 and the Go module proxy)"
    raise AssertionError(
        f"the OpenTelemetry Collector {BINARY.relative_to(ROOT)} is missing: {why}; "
        "run bin/setup --test, which builds it from tests/otelcol/builder.yaml"
    )


class Collector:
    """``Collector(tmp_path, exporters={...}, processors={...}).start()``: one metrics pipeline,
    OTLP/HTTP in on :attr:`endpoint`, the Collector's own metrics on :attr:`telemetry_port`."""

    def __init__(self, tmp_path: Path, exporters: dict, processors: dict | None = None, name: str = "otelcol") -> None:
        self.binary = require_binary()
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.port = free_ports(2)
        self.telemetry_port = self.port + 1
        processors = processors or {}
        config = {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{self.port}"}}}},
            "processors": processors,
            "exporters": exporters,
            "service": {
                "telemetry": {
                    "logs": {"level": "info"},
                    "metrics": {
                        "level": "normal",
                        "readers": [
                            {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": self.telemetry_port}}}}
                        ],
                    },
                },
                "pipelines": {
                    "metrics": {"receivers": ["otlp"], "processors": list(processors), "exporters": list(exporters)}
                },
            },
        }
        self.config = self.dir / "config.yaml"
        self.config.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.log_path = self.dir / "otelcol.log"
        self.process = None
        self._starts = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> Collector:
        self._starts += 1
        starts = self._starts
        self.process = start_server(
            [self.binary, f"--config=file:{self.config}"],
            self.log_path,
            lambda: self.log.count(READY) >= starts,
            "the OpenTelemetry Collector ready",
            timeout=60,
        )
        return self

    def stop(self) -> None:
        stop_process(self.process)

    def telemetry(self) -> dict[str, float]:
        """The Collector's own counters, summed over their labels: ``{"otelcol_receiver_accepted_metric_points": ...}``
        (the ``_total`` suffix of the exposition dropped)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.telemetry_port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_total") or family.type == "counter":
                    name = sample.name.removesuffix("_total")
                    totals[name] = totals.get(name, 0.0) + sample.value
        return totals


class OtlpRelay:
    """An OTLP/HTTP hop that forwards every request to ``target`` unchanged and keeps a copy
    (:attr:`requests`, decoded); the Collector's answer goes back as it came, and a Collector
    that does not answer is a 503 (transient, as the exporter would see a refused connection)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.requests: list[ExportMetricsServiceRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # shutdown() waits up to one poll interval: the default 0.5 s was each test's tear-down
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    def __enter__(self) -> OtlpRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def forward(self, path: str, headers: dict, body: bytes) -> tuple[int, str, bytes]:
        wanted = {k: v for k, v in headers.items() if k.lower() in ("content-type", "content-encoding")}
        request = urllib.request.Request(self.target + path, data=body, headers=wanted, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, kind, payload = answer.status, answer.headers.get("Content-Type", ""), answer.read()
        except urllib.error.HTTPError as error:
            status, kind, payload = error.code, error.headers.get("Content-Type", ""), error.read()
        except OSError as error:
            return 503, "text/plain", f"relay: the Collector did not answer: {error}".encode()
        if 200 <= status < 300:
            decoded = ExportMetricsServiceRequest()
            raw = gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body
            decoded.ParseFromString(raw)
            with self._lock:
                self.requests.append(decoded)
        return status, kind, payload

    def _handler_class(self):
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, kind, payload = relay.forward(self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Type", kind or "application/octet-stream")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def data_points(requests: list[ExportMetricsServiceRequest]) -> dict[tuple, list[dict]]:
    """Every data point of these requests, as comparable dicts, keyed by stream: (resource
    attributes, scope, metric name, kind, unit, temporality, monotonic, point attributes).

    Values, timestamps, counts, scale and buckets are compared as the protobuf holds them;
    empty sub-messages and attribute order, which an OTLP hop may write differently without
    changing the data, are left out of the comparison."""
    points: dict[tuple, list[dict]] = {}
    for request in requests:
        for resource_metrics in request.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                scope = (scope_metrics.scope.name, scope_metrics.scope.version)
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    data = getattr(metric, kind)
                    temporality = getattr(data, "aggregation_temporality", 0)
                    monotonic = getattr(data, "is_monotonic", False)
                    for point in data.data_points:
                        stream = (
                            resource,
                            scope,
                            metric.name,
                            kind,
                            metric.unit,
                            temporality,
                            monotonic,
                            _attributes(point.attributes),
                        )
                        fields = MessageToDict(point, preserving_proto_field_name=True)
                        fields.pop("attributes", None)
                        points.setdefault(stream, []).append(_pruned(fields))
    for series in points.values():
        series.sort(key=lambda fields: (int(fields.get("time_unix_nano", 0)), json.dumps(fields, sort_keys=True)))
    return points


def _attributes(attributes) -> tuple:
    return tuple(sorted((a.key, json.dumps(MessageToDict(a.value), sort_keys=True)) for a in attributes))


def _pruned(value):
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value
