"""zibrato-remote-write: Prometheus remote write 1.0, to Prometheus, Mimir, Thanos, VictoriaMetrics or Cortex.

Each interval updates the same running state zibrato-prometheus serves
(:class:`~.prometheus_mapping.PrometheusState`: cumulative counters, last
gauges, cumulative native and classic histograms), and its copy at the
interval's end is sent (:mod:`.remote_write_mapping`) as ``WriteRequest``
protobufs of at most ``max_samples`` samples, compressed with snappy's block
format (``cramjam``), with the three headers the specification requires.

Answers, as the specification says:

* 2xx: delivered;
* 429 and 5xx, a connection error or a timeout: retried with backoff through
  the delivery queue (:class:`~zibrato.delivery.Retryable`, with the
  ``Retry-After``); each request is a part of the interval, so requests
  already accepted are not sent again, and an interval keeps its own
  timestamp however late it goes out, so an outage loses nothing and causes
  no out-of-order samples;
* a **500 that says native histograms are disabled** (Prometheus 2.42
  without ``--enable-feature=native-histograms``; a spec-following sender
  would retry it forever), or any other refusal of a request holding native
  histograms whose message names them: this receiver gets classic ``le``
  buckets from then on, the request is encoded again in that form and sent
  at once (the parts :meth:`RemoteWriteDestination.send` returns), and the switch is
  logged once and shown in status (``native_histograms``, ``native_fallbacks``);
* any other 500 is retried at most :data:`MAX_SERVER_ERRORS` times for one
  request, then that request is dropped and counted: never forever;
* any other status (4xx): that request's samples are dropped, counted and
  logged with the receiver's message (:class:`~zibrato.delivery.Rejected`);
  the delivery queue still sends the interval's other requests. A redirect is
  never followed: retried, for an operator to fix the URL. Cumulative series
  heal at the next interval.

Credentials (basic auth or a bearer token) and extra headers come from files
or the environment only (see zibrato.cli.remote_write); they are sent, never
logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cramjam

from .. import __version__
from ..aggregation_needs import AggregationNeeds
from ..delivery import Rejected, Retryable, parse_retry_after, request_timeout
from ..destination import Destination, Interval, Part
from ..http_client import Answer, HttpSession, post
from ..http_client import check_url as http_url
from ..runtime import printable
from .classic_buckets import BucketRule
from .native_histogram import DEFAULT_MAX_NATIVE_BUCKETS
from .prometheus_mapping import DEFAULT_EXPIRE, PrometheusState
from .remote_write_mapping import Point, encode, snapshot

DEFAULT_MAX_SAMPLES = 2000
MAX_SERVER_ERRORS = 5  # attempts of one request answered 500 before it is dropped
_MAX_LOGGED_MESSAGE = 500
_NATIVES_REFUSED = "native histogram"  # Prometheus 2.42: "native histograms are disabled"
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


def check_url(url: str) -> str:
    """The receiver's write URL: http(s), a host, no credentials (those come from files or the environment)."""
    return http_url(url, "the remote write URL", "use --password-file or --bearer-token-file")


@dataclass
class _Request:
    """One request of an interval: its points, their encoding, and how often it was refused with 500."""

    points: list[Point]
    timestamp_ms: int
    body: bytes
    samples: int
    has_native: bool
    native: bool  # the encoding's form: with native histograms, or classic buckets only
    server_errors: int = 0


class RemoteWriteDestination(Destination):
    """Sends each interval's cumulative state as remote write requests."""

    name = "remote-write"
    aggregation_needs = AggregationNeeds(levels_apart=True)  # the level is a label of every series
    self_figures = ("series", "samples_sent", "samples_rejected", "requests_failed", "native_fallbacks")

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        ca_file: str | None = None,
        timeout: float = 10.0,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        classic_histograms: bool = False,
        bucket_rules: tuple[BucketRule, ...] = (),
        max_native_buckets: int = DEFAULT_MAX_NATIVE_BUCKETS,
        expire: float | dict[str, float] = DEFAULT_EXPIRE,
    ) -> None:
        if max_samples < 1 or timeout <= 0:
            raise ValueError("max_samples and timeout must be positive")
        if auth is not None and bearer_token is not None:
            raise ValueError("give basic auth or a bearer token, not both")
        self.url = check_url(url)
        self.log = logging.getLogger("zibrato.remote-write")
        self.state = PrometheusState(
            expire=expire, history=1, log=self.log, bucket_rules=bucket_rules, max_native_buckets=max_native_buckets
        )
        self._headers = dict(headers or {})
        self._auth, self._bearer = auth, bearer_token
        self.ca_file, self.timeout, self.max_samples = ca_file, timeout, max_samples
        self.classic = classic_histograms
        self.native = True  # until the receiver refuses native histograms
        self.session: HttpSession | None = None
        self._figures: dict[str, Any] = {
            "requests_sent": 0,
            "samples_sent": 0,
            "samples_rejected": 0,
            "requests_rejected": 0,
            "requests_failed": 0,
            "native_fallbacks": 0,
            "last_error": None,
        }

    def connect(self) -> None:
        headers = {**self._headers, **HEADERS, "User-Agent": f"zibrato-remote-write/{__version__}"}
        if self._bearer is not None:
            headers["Authorization"] = f"Bearer {self._bearer}"
        self.session = HttpSession(headers=headers, verify=self.ca_file or True, auth=self._auth)
        self.log.info(
            "remote write to %s (native histograms%s, at most %d samples a request, %d extra headers%s)",
            self.url,
            " and classic buckets" if self.classic else "",
            self.max_samples,
            len(self._headers),
            ", basic auth" if self._auth else ", bearer token" if self._bearer else "",
        )

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def figures(self) -> dict[str, Any]:
        return {
            **self.state.figures,
            **self._figures,
            "native_histograms": "on" if self.native else "off: the receiver refused them",
            "url": self.url,
        }

    def parts(self, interval: Interval) -> list[Part]:
        """Update the state with the interval, then its copy as requests of at most ``max_samples``."""
        self.state.update(interval.summaries)
        return self._requests(snapshot(self.state), round(interval.end * 1000))

    def _requests(self, points: list[Point], timestamp_ms: int) -> list[Part]:
        parts = []
        while points:
            body, used, samples, has_native = encode(
                points, timestamp_ms, native=self.native, classic=self.classic, max_samples=self.max_samples
            )
            request = _Request(points[:used], timestamp_ms, body, samples, has_native, self.native)
            parts.append(Part(request, samples))
            points = points[used:]
        return parts

    def send(self, part: Part) -> Sequence[Part] | None:
        """Post one request; refused natives come back as the same points, encoded classic."""
        if self.session is None:
            self.connect()
        request: _Request = part.payload
        if request.native != self.native:  # encoded before the receiver refused natives
            return self._requests(request.points, request.timestamp_ms)
        if not self._send(request):
            return self._requests(request.points, request.timestamp_ms)
        return None

    def _send(self, request: _Request) -> bool:
        """Post one request: True when accepted, False to encode it again (classic); else raise."""
        f = self._figures
        try:
            response = self._post(bytes(cramjam.snappy.compress_raw(request.body)))
        except Retryable as error:  # no answer in time, none at all, or a redirect (never followed)
            f["requests_failed"] += 1
            f["last_error"] = str(error.status)
            raise
        status = response.status
        if 200 <= status < 300:
            f["requests_sent"] += 1
            f["samples_sent"] += request.samples
            return True
        message = printable((response.text or response.reason or "").strip(), _MAX_LOGGED_MESSAGE)
        f["last_error"] = f"{status} {message}"
        if status >= 400 and status != 429 and request.has_native and self.native and _refuses_natives(message):
            self._fall_back(message)
            return False
        if status == 429 or status >= 500:
            f["requests_failed"] += 1
            request.server_errors += status == 500
            if request.server_errors < MAX_SERVER_ERRORS:
                raise Retryable(
                    f"{status} from {self.url}: {message}",
                    parse_retry_after(response.headers.get("Retry-After")),
                    status=status,
                )
            message = f"{message} (answered 500 {MAX_SERVER_ERRORS} times: given up)"
        f["requests_rejected"] += 1
        f["samples_rejected"] += request.samples
        self.log.error("%s refused %d samples with %d: %s (not retried)", self.url, request.samples, status, message)
        raise Rejected(f"{status}: {message}")

    def _post(self, body: bytes) -> Answer:
        """The one HTTP call, through the shared client: a total deadline, a capped answer, no redirects."""
        assert self.session is not None, "connect() first"
        return post(self.session, self.url, data=body, deadline=request_timeout(self.timeout))

    def _fall_back(self, message: str) -> None:
        self.native = False
        self._figures["native_fallbacks"] += 1
        self.log.warning(
            "%s does not take native histograms (500: %s): sending classic le buckets from now on "
            "(enable them there, e.g. Prometheus' --enable-feature=native-histograms, and restart this worker)",
            self.url,
            message,
        )


def _refuses_natives(message: str) -> bool:
    return _NATIVES_REFUSED in message.lower()
