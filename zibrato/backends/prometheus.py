"""zibrato-prometheus: a scrape endpoint for Prometheus, plus l2met's read API, on one small HTTP server.

Each interval goes into :class:`~zibrato.backends.prometheus_mapping.PrometheusState`
(the pure mapping); the server answers from it:

* ``GET /metrics``: every series, rendered by ``prometheus_client``'s
  exposition code: the text format 0.0.4, or OpenMetrics when the scraper's
  ``Accept`` asks for it (``prometheus_client.exposition.choose_encoder``);
  or, when ``Accept`` asks for Prometheus' delimited protobuf, that format
  with every timer and histogram a native histogram
  (:mod:`.prometheus_protobuf`); gzip when accepted. A renderer thread renders each format a scraper asked
  for again after each interval, so a scrape only sends bytes that are ready
  (at most one interval old), however many series there are, and delivery
  never waits for a rendering;
* ``GET /series/<name>?source=S&offset=N``: the series' summary of the N-th
  last interval (``offset`` 1, the default, is the last one) as JSON;
  ``tags=k:v,k2:v2`` and ``type=timer`` pick one series when several share
  the name and source;
* with ``count=``, ``mean=`` or ``sum=`` (and ``tol=``, default 0) the same URL
  is l2met's **metric assertion**: 200 when ``|actual - expected| <= tol`` for
  every one given, 404 when not, so an uptime checker can alert on a metric.

The server binds in :meth:`PrometheusDestination.connect` (127.0.0.1:9464 by
default: loopback unless told otherwise) and runs in daemon threads; it
never blocks delivery, which only updates the state under its lock.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import socket
import threading
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import exposition

from ..aggregation_needs import AggregationNeeds
from ..destination import Destination, Interval
from ..http_server import GuardedHandler, GuardedHTTPServer, HttpLimits, host_allowed, is_loopback
from ..runtime import printable_repr
from .native_histogram import DEFAULT_MAX_NATIVE_BUCKETS
from .prometheus_mapping import DEFAULT_EXPIRE, DEFAULT_HISTORY, BucketRule, PrometheusState

DEFAULT_LISTEN = ("127.0.0.1", 9464)
ASSERTIONS = ("count", "mean", "sum")


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or ':PORT', '[::1]:PORT') -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


class _Rendered:
    """One exposition of one version of the state, and its gzip (made when first asked for)."""

    __slots__ = ("version", "body", "encoder", "_gzipped")

    def __init__(self, version: int, body: bytes, encoder) -> None:
        self.version, self.body, self.encoder = version, body, encoder
        self._gzipped: bytes | None = None

    @property
    def was_gzipped(self) -> bool:
        return self._gzipped is not None

    def gzipped(self) -> bytes:
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, compresslevel=1)
        return self._gzipped


class _Collector:
    """What prometheus_client's exposition asks for: an object with collect()."""

    def __init__(self, state: PrometheusState) -> None:
        self.state = state

    def collect(self):
        return self.state.families()


class PrometheusDestination(Destination):
    """Holds the running state and serves it; ``post`` only updates the state."""

    name = "prometheus"
    self_figures = ("series", "scrapes", "name_collisions", "label_collisions", "series_expired")
    aggregation_needs = AggregationNeeds(levels_apart=True)  # the level is a label of every series

    def __init__(
        self,
        listen: tuple[str, int] = DEFAULT_LISTEN,
        *,
        buckets: Sequence[float] | None = None,
        expire: float | Mapping[str, float] = DEFAULT_EXPIRE,
        history: int = DEFAULT_HISTORY,
        bucket_rules: Sequence[BucketRule] = (),
        max_native_buckets: int = DEFAULT_MAX_NATIVE_BUCKETS,
        limits: HttpLimits | None = None,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self.listen = listen
        self.limits, self.allowed_hosts = limits, allowed_hosts
        self.loopback_only = is_loopback(listen[0])
        self.log = logging.getLogger("zibrato.prometheus")
        self.state = PrometheusState(
            buckets=buckets,
            expire=expire,
            history=history,
            log=self.log,
            bucket_rules=bucket_rules,
            max_native_buckets=max_native_buckets,
        )
        self.collector = _Collector(self.state)
        self.server: GuardedHTTPServer | None = None
        self._figures = {"scrapes": 0, "renders": 0, "series_requests": 0, "intervals": 0, "hosts_refused": 0}
        self._render_lock = threading.Lock()  # one rendering at a time
        self._cache_lock = threading.Lock()  # guards _rendered (held only to read or swap)
        self._rendered: dict[str, _Rendered] = {}  # content type -> its latest rendering
        self._wanted = threading.Event()  # the renderer thread has a newer state to render
        self._renderer: threading.Thread | None = None
        self._closing = False

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens (the real port when ``listen`` asked for port 0)."""
        if self.server is None:
            return self.listen
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def connect(self) -> None:
        if self.server is not None:
            return
        try:
            server = GuardedHTTPServer(self.listen, _handler(self), limits=self.limits, log=self.log)
        except OSError as error:
            raise OSError(f"cannot listen on {self.listen[0]}:{self.listen[1]}: {error.strerror}") from None
        self.server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="zibrato-prometheus-http", daemon=True
        ).start()
        self._renderer = threading.Thread(target=self._render_forever, name="zibrato-prometheus-render", daemon=True)
        self._renderer.start()
        host, port = self.address
        self.log.info("serving /metrics and /series/<name> on http://%s:%d", host, port)

    def post(self, interval: Interval) -> None:
        if self.server is None:
            self.connect()
        self.state.update(interval.summaries)
        self._figures["intervals"] += 1
        self._wanted.set()

    def close(self) -> None:
        self._closing = True
        self._wanted.set()
        if self._renderer is not None:
            self._renderer.join(5)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def figures(self) -> dict:
        host, port = self.address
        http = self.server.figures() if self.server is not None else {}
        return {**self.state.figures, **self._figures, **http, "listen": f"{host}:{port}"}

    # --- answers (called from the server's threads) ------------------------------

    def metrics(self, accept: str | None, gzipped: bool = False) -> tuple[bytes, str]:
        """The latest rendering of the exposition this ``Accept`` asks for.

        Rendering 100,000 series takes seconds (prometheus_client's exposition),
        so it happens neither in the delivery thread nor while a scraper waits:
        after each interval the renderer thread renders every format asked for
        so far (and its gzip, if that was asked for), and a scrape sends the
        latest one ready, at most one interval old while the next is rendered.
        Only the first scrape of a format waits for its rendering.
        """
        encoder, content_type = _choose_encoder(accept)
        self._figures["scrapes"] += 1
        with self._cache_lock:
            rendered = self._rendered.get(content_type)
        if rendered is None:
            with self._render_lock:
                with self._cache_lock:
                    rendered = self._rendered.get(content_type)
                if rendered is None:
                    rendered = self._render(content_type, encoder, self.state.expire_now())
        elif rendered.version != self.state.version:
            self._wanted.set()
        return (rendered.gzipped() if gzipped else rendered.body), content_type

    def _render(self, content_type: str, encoder, version: int, gzipped: bool = False) -> _Rendered:
        """Render (holding the render lock), then swap the cache entry in."""
        rendered = _Rendered(version, encoder(self.collector), encoder)
        if gzipped:
            rendered.gzipped()
        with self._cache_lock:
            self._rendered[content_type] = rendered
        self._figures["renders"] += 1
        return rendered

    def _render_forever(self) -> None:
        while True:
            self._wanted.wait()
            if self._closing:
                return
            self._wanted.clear()
            try:
                self._render_again()
            except Exception:  # a bug must not end the renderer: scrapes would go stale silently
                self.log.exception("rendering /metrics failed")

    def _render_again(self) -> None:
        """Render again each format scrapers asked for, if the state changed since."""
        with self._render_lock:
            version = self.state.expire_now()
            with self._cache_lock:
                stale = [(content_type, r) for content_type, r in self._rendered.items() if r.version != version]
            for content_type, old in stale:
                self._render(content_type, old.encoder, version, gzipped=old.was_gzipped)

    def series(self, name: str, query: dict[str, list[str]]) -> tuple[int, dict]:
        """The l2met read API and metric assertion: (status, JSON body)."""
        self._figures["series_requests"] += 1
        one = {key: values[-1] for key, values in query.items()}
        try:
            offset = int(one.get("offset", "1"))
            tol = float(one.get("tol", "0"))
            expected = {key: float(one[key]) for key in ASSERTIONS if key in one}
        except ValueError:
            return 400, {"error": "offset must be an integer; count, mean, sum and tol numbers"}
        if offset < 1:
            return 400, {"error": "offset counts back from 1 (the last interval)"}
        tags = [t for t in one["tags"].split(",") if t] if "tags" in one else None
        matches = self.state.lookup(name, one.get("source"), tags, one.get("type"), any_source="source" not in one)
        if not matches:
            return 404, {"error": f"no series {name!r} with source {one.get('source')!r}"}
        if len(matches) > 1:
            return 409, {
                "error": "several series match: add source=, tags= or type=",
                "matches": [{"type": m.key[0], "source": m.key[2], "tags": list(m.key[3])} for m in matches],
            }
        history = list(matches[0].history)
        if offset > len(history):
            return 404, {"error": f"offset {offset}: only {len(history)} intervals are kept"}
        summary = history[-offset]
        if not expected:
            return 200, summary
        results = {key: _check(summary, key, value, tol) for key, value in expected.items()}
        ok = all(r["ok"] for r in results.values())
        return (200 if ok else 404), {"ok": ok, "tol": tol, "assertions": results, "summary": summary}


def _protobuf_encoder(collector: _Collector) -> bytes:
    from .prometheus_protobuf import exposition as protobuf_exposition

    return protobuf_exposition(collector.state)


def _choose_encoder(accept: str | None):
    """The protobuf exposition (native histograms) only when the scraper asks for it; else text or OpenMetrics.

    Without a usable protobuf runtime (missing, or older than the generated
    messages need) a protobuf scraper gets the text format it also accepts.
    """
    if accept and "application/vnd.google.protobuf" in accept:
        try:
            from .prometheus_protobuf import CONTENT_TYPE, wants_protobuf
        except Exception as error:  # ImportError, or protobuf's VersionError for a too old runtime
            _warn_no_protobuf(error)
        else:
            if wants_protobuf(accept):
                return _protobuf_encoder, CONTENT_TYPE
    return exposition.choose_encoder(accept or "")


_warned: list[str] = []


def _warn_no_protobuf(error: Exception) -> None:
    if not _warned:
        _warned.append(str(error))
        logging.getLogger("zibrato.prometheus").warning(
            "a scraper asks for native histograms, but protobuf cannot load Prometheus' messages (%s): "
            "answering text; pip install '.[prometheus]' in Zibrato's checkout",
            error,
        )


def check_listen(listen: tuple[str, int]) -> None:
    """Raise OSError (with the reason) when ``listen`` cannot be bound now: a usage check at start."""
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(listen)
        except OSError as error:
            raise OSError(f"cannot listen on {listen[0]}:{listen[1]}: {error.strerror}") from None


def _actual(summary: dict, key: str) -> float | None:
    """count, sum and mean of any summary type (a counter's sum is its value)."""
    count = summary.get("count", summary.get("value"))
    total = summary.get("sum", summary.get("value"))
    if key == "count":
        return count
    if key == "sum":
        return total
    mean = summary.get("mean")
    if mean is None and count:
        mean = total / count
    return mean


def _check(summary: dict, key: str, expected: float, tol: float) -> dict:
    actual = _actual(summary, key)
    ok = actual is not None and math.isfinite(expected) and abs(actual - expected) <= tol
    return {"expected": expected, "actual": actual, "ok": ok}


def _handler(destination: PrometheusDestination):
    class Handler(GuardedHandler):
        server_version = "zibrato-prometheus"

        def log_message(self, format: str, *args: object) -> None:
            destination.log.debug("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if not host_allowed(self.headers.get("Host"), destination.loopback_only, destination.allowed_hosts):
                destination._figures["hosts_refused"] += 1
                self.server.count_refusal(
                    "refused a request for Host %s: not a loopback name (--allow-host)",
                    printable_repr(self.headers.get("Host") or ""),
                )
                self._send(403, b"this server answers only loopback host names (see --allow-host)\n", "text/plain")
                return
            try:
                if url.path == "/metrics":
                    gzipped = "gzip" in (self.headers.get("Accept-Encoding") or "")
                    body, content_type = destination.metrics(self.headers.get("Accept"), gzipped)
                    self._send(200, body, content_type, gzipped=gzipped)
                elif url.path.startswith("/series/") and len(url.path) > len("/series/"):
                    status, answer = destination.series(unquote(url.path[len("/series/") :]), parse_qs(url.query))
                    self._send(status, json.dumps(answer, default=str).encode() + b"\n", "application/json")
                elif url.path == "/":
                    self._send(
                        200,
                        b"zibrato-prometheus: GET /metrics, GET /series/<name>?source=&offset=\n",
                        "text/plain; charset=utf-8",
                    )
                else:
                    self._send(404, b"not found: try /metrics or /series/<name>\n", "text/plain")
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                raise  # the scraper went away: counted by the server, no traceback
            except Exception as error:  # a bug must not kill the server thread silently
                destination.log.exception("answering %s failed", url.path)
                self._send(500, f"internal error: {error.__class__.__name__}\n".encode(), "text/plain")

        def _send(self, status: int, body: bytes, content_type: str, gzipped: bool = False) -> None:
            self.send_response(status)
            if gzipped:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
