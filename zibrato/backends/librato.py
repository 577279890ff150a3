"""zibrato-librato: deliver each flush to Librato, losing nothing that can be kept.

Mapping (see docs/LIBRATO.md): a counter becomes a gauge of its per-flush sum;
a gauge is sent as its last value; a timer or a histogram becomes one summary
gauge (``count``, ``sum``, ``min``, ``max``, ``sum_squares``) plus one gauge
per percentile (``name.p95``); a set, a gauge of its unique members. Every measurement is stamped with the flush
boundary, in whole seconds, so the flush interval must be whole seconds too.
Names and sources are fitted to Librato's rules, and each changed one is
logged once. Librato keeps one value per name, source and time, so a second
measurement of the same name and source in one interval is dropped, counted
and logged once per name rather than sent.

The mapping (:class:`LibratoMapping`) is pure: summaries in, measurements and
JSON bodies out. The transport (:class:`Librato`, the destination) splits the
interval into batches and POSTs them over one keep-alive session. Failures that
a retry can outlast raise :class:`~zibrato.delivery.Retryable` (with the
``Retry-After``), so the runtime's delivery queue retries with backoff while
later intervals wait in its bounded backlog: connection errors, timeouts,
5xx, 408, 429, 401/403 (credentials can be fixed) and the other 4xx that say
the request itself is wrong (404, 405, 413, 415...: a configuration error, such
as a wrong --api-url, that no measurement is to blame for). Batches already
accepted are never sent again. Only 400 and 422 reject measurements; since
Librato rejects the whole batch for one bad measurement, the batch is split in
halves until the bad ones are isolated; only those are dropped, with
Librato's error body logged.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import time as _time
from collections import deque
from collections.abc import Iterator

from .. import __version__
from ..delivery import NameFitter, Retryable, parse_retry_after, request_timeout
from ..destination import Destination, Interval
from ..http_client import HttpSession, post
from ..runtime import SECRETS, printable
from ..series_guard import SeriesGuard
from ..summary import Summary

DEFAULT_API_URL = "https://metrics-api.librato.com"
APIS = ("legacy", "tagged")
MAX_NAME_LENGTH = 255
MAX_TAG_NAME_LENGTH = 64
MAX_TAG_VALUE_LENGTH = 255
_INVALID_NAME = re.compile(r"[^A-Za-z0-9.:_\-]")
_INVALID_TAG_NAME = re.compile(r"[^A-Za-z0-9.:_\-]")
_INVALID_TAG_VALUE = re.compile(r"[^A-Za-z0-9.:_\- ]")
_PERCENTILE_KEY = re.compile(r"p\d+(?:_\d+)?\Z")
_TIMER_FIELDS = ("count", "sum", "min", "max", "sum_squares")
_TAGGED_TIMER_FIELDS = ("count", "sum", "min", "max", "stddev")
_CREDENTIAL_STATUSES = (401, 403)
_MEASUREMENT_STATUSES = (400, 422)  # Librato's rejections of what was sent, not of the request
_RETRY_AFTER_STATUSES = (429, 503)
_MAX_LOGGED_BODY = 1000
_MAX_REMEMBERED_NAMES = 100_000
_MAX_DROPS_LOGGED = 10  # per interval; past it, one summary line
NAME_RULE = "at most 255 characters of A-Z a-z 0-9 . : - _"


class _Rejection(Exception):
    """Librato refused measurements of the payload (400 or 422): one bad one rejects the batch."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body


def _fit_source(text: str, limit: int | None) -> str:
    fixed = _INVALID_NAME.sub("_", text)[:MAX_NAME_LENGTH]
    return fixed + "_" if fixed.lower() == "all" else fixed  # 'all' is reserved


class LibratoMapping:
    """Summaries to Librato measurements and JSON bodies (pure: no sockets)."""

    def __init__(self, api: str = "legacy", source: str | None = None, log: logging.Logger | None = None) -> None:
        if api not in APIS:
            raise ValueError(f"unknown API {api!r} (legacy or tagged)")
        self.api = api
        self.log = log or logging.getLogger("zibrato.librato")
        self.guard = SeriesGuard(self.log)  # a series whose measurements raise is dropped alone
        self.names = NameFitter(self.log, NAME_RULE, _INVALID_NAME, destination="Librato")
        self.sources = NameFitter(self.log, NAME_RULE + "; 'all' is reserved", fit=_fit_source, destination="Librato")
        self.default_source = self.sources(source, kind="source") if source else None
        self.duplicates = 0
        self.not_finite = 0
        self._duplicates_logged: set[str] = set()

    @property
    def names_changed(self) -> int:
        return self.names.changed + self.sources.changed

    def measurements(self, summaries: list[Summary]) -> list[dict]:
        """Librato measurements for one interval's summaries (see the module docstring)."""
        out: list[dict | None] = []
        tagged = self.api == "tagged"
        for s in summaries:
            try:
                out.extend(self._series_measurements(s, tagged))
            except Exception as error:  # this series alone, never the interval
                self.guard.dropped(s, error)
        finite = [m for m in out if m is not None]
        if len(finite) < len(out):  # pragma: no cover - aggregation never produces NaN
            self.not_finite += len(out) - len(finite)
            self.log.error("dropped %d measurements that are not finite numbers", len(out) - len(finite))
        return self._without_duplicates(finite)

    def _series_measurements(self, s: Summary, tagged: bool) -> list[dict | None]:
        kind = s["type"]
        if kind not in ("counter", "gauge", "timer", "histogram", "set"):  # set: a gauge of its count
            return []
        extra = self._tags(s) if tagged else self._source(s)
        if kind in ("timer", "histogram"):
            if not s.get("count"):
                return []
            suffixes = [k for k in s if _PERCENTILE_KEY.match(k)]
            room = max((len(k) + 1 for k in suffixes), default=0)
            name = self.names(s["name"], MAX_NAME_LENGTH - room)
            fields = _TAGGED_TIMER_FIELDS if tagged else _TIMER_FIELDS
            out = [_finite({"name": name, **{f: s[f] for f in fields}, **extra})]
            out.extend(_finite({"name": f"{name}.{k}", "value": s[k], **extra}) for k in suffixes)
            return out
        return [_finite({"name": self.names(s["name"], MAX_NAME_LENGTH), "value": s["value"], **extra})]

    def _without_duplicates(self, measurements: list[dict]) -> list[dict]:
        """Keep the first measurement of each series; Librato would keep only one of two anyway.

        Two Zibrato series can meet in one Librato series: a timer ``x``'s
        ``x.p95`` and a gauge named ``x.p95``, or names that sanitise alike
        (``a b`` and ``a_b``). Sending both would let Librato pick one silently.
        """
        seen: set[tuple] = set()
        kept = []
        for measurement in measurements:
            key = _series_key(measurement)
            if key in seen:
                self.duplicates += 1
                self._warn_duplicate(measurement)
                continue
            seen.add(key)
            kept.append(measurement)
        return kept

    def _warn_duplicate(self, measurement: dict) -> None:
        name = measurement["name"]
        if name in self._duplicates_logged:
            return
        if len(self._duplicates_logged) >= _MAX_REMEMBERED_NAMES:
            self._duplicates_logged.clear()
        self._duplicates_logged.add(name)
        where = measurement.get("source") or measurement.get("tags")
        self.log.warning(
            "two series become the Librato measurement %s%s in one interval (a timer's "
            "percentile gauge and a series of that name, or names that differ only in "
            "characters sent as _): only the first is sent (measurements_duplicate; "
            "logged once per name)",
            name,
            f" ({printable(where)})" if where else "",
        )

    def payload(self, time: float, batch: list[dict]) -> dict:
        """The JSON body for one batch, stamped with the flush boundary (see :func:`measure_time`)."""
        if self.api == "tagged":
            return {"time": measure_time(time), "measurements": batch}
        return {"measure_time": measure_time(time), "gauges": batch}

    def _source(self, summary: Summary) -> dict:
        """Legacy API: the series' source (or the default), with its tags folded in.

        The source-based API has no tags; dropping them would send series that
        differ only by tags as duplicates of one name and source, and Librato
        keeps one of those. So ``source`` becomes ``source.k1:v1.k2:v2``.
        """
        parts = [summary.get("source") or self.default_source or ""]
        parts += sorted(summary.get("tags") or ())
        source = ".".join(p for p in parts if p)
        return {"source": self.sources(source, kind="source")} if source else {}

    def _tags(self, summary: Summary) -> dict:
        """Tagged API: Zibrato's ``k:v`` tags, plus the source as the tag ``source``."""
        tags: dict[str, str] = {}
        source = summary.get("source") or self.default_source or _hostname()
        tags["source"] = _fit(_INVALID_TAG_VALUE, source, MAX_TAG_VALUE_LENGTH)
        for tag in summary.get("tags") or ():
            key, _, value = tag.partition(":")
            key = _fit(_INVALID_TAG_NAME, key, MAX_TAG_NAME_LENGTH)
            if key:
                tags[key] = _fit(_INVALID_TAG_VALUE, value, MAX_TAG_VALUE_LENGTH) or "true"
        return {"tags": tags}


def check_credentials(username: str, token: str) -> None:
    """Raise ValueError (a usage error at start-up) for credentials HTTP Basic auth cannot carry.

    requests encodes them as latin-1: a token holding another character (a
    stray BOM, a typographic quote) would fail every post, never reaching Librato.
    """
    if not username or not token:
        raise ValueError("Librato needs a username (the account e-mail) and an API token")
    for what, text in (("username", username), ("API token", token)):
        try:
            text.encode("latin-1")
        except UnicodeEncodeError as error:
            bad = text[error.start]
            raise ValueError(
                f"the Librato {what} holds the character U+{ord(bad):04X} at position "
                f"{error.start + 1}, which HTTP Basic auth cannot send (latin-1 "
                f"only): check the {what} you gave"
            ) from None
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ValueError(f"the Librato {what} holds a control character: check it")


class Librato(Destination):
    """The Librato destination: ``zibrato-librato``.

    ``post`` sends the interval's batches in order; a batch already accepted is
    never sent again when the queue retries the interval.
    """

    name = "librato"
    self_figures = ("measurements_sent", "measurements_rejected", "measurements_lost", "measurements_duplicate")

    def __init__(
        self,
        username: str,
        token: str,
        *,
        api_url: str = DEFAULT_API_URL,
        api: str = "legacy",
        source: str | None = None,
        batch_size: int = 300,
        timeout: float = 5.0,
    ) -> None:
        check_credentials(username, token)
        if batch_size < 1 or not timeout > 0:
            raise ValueError("batch size and timeout must be positive")
        self.log = logging.getLogger("zibrato.librato")
        self.mapping = LibratoMapping(api, source, self.log)
        self.username, self._token = username, token
        SECRETS.add_basic(username, token)
        self.api = api
        self.url = api_url.rstrip("/") + ("/v1/metrics" if api == "legacy" else "/v1/measurements")
        self.batch_size, self.timeout = batch_size, timeout
        self.session: HttpSession | None = None
        self._pending: tuple[Interval, deque] | None = None  # the batches of an interval not yet sent
        self.counts = dict(posts=0, posts_failed=0, measurements_sent=0, measurements_rejected=0, measurements_lost=0)
        self.last_error_status: int | str | None = None
        self.last_error: str | None = None
        self.last_post_seconds: float | None = None

    def connect(self) -> None:
        session = HttpSession(auth=(self.username, self._token))
        session.headers.update({"Content-Type": "application/json", "User-Agent": f"zibrato-librato/{__version__}"})
        self.session = session
        self.log.info(
            "posting to %s as %s (%s API, batches of at most %d)", self.url, self.username, self.api, self.batch_size
        )

    def post(self, interval: Interval) -> None:
        """Send what is left of the interval; raise Retryable to have the queue retry the rest."""
        if self._pending is None or self._pending[0] is not interval:
            measurements = self.mapping.measurements(interval.summaries)
            self._pending = (interval, deque(batches(measurements, self.batch_size)))
        pending = self._pending[1]
        dropped = 0
        while pending:
            batch = pending[0]
            try:
                self._send(interval.end, batch)
            except _Rejection as rejection:
                pending.popleft()
                dropped += self._isolate(batch, rejection, pending, dropped)
                continue
            except Retryable as failure:
                self.counts["posts_failed"] += 1
                self.last_error_status, self.last_error = failure.status, failure.reason
                raise
            pending.popleft()
            self.counts["measurements_sent"] += len(batch)
        self._pending = None
        if dropped > _MAX_DROPS_LOGGED:
            self.log.error(
                "Librato rejected %d measurements of the interval at %s (the first %d are logged above)",
                dropped,
                _iso(interval.end),
                _MAX_DROPS_LOGGED,
            )

    def close(self) -> None:
        if self._pending is not None:  # given up at the stop deadline
            lost = sum(len(batch) for batch in self._pending[1])
            self.counts["measurements_lost"] += lost
            self.log.error(
                "stop deadline reached: %d measurements of the interval at %s not delivered (last error: %s)",
                lost,
                _iso(self._pending[0].end),
                self.last_error,
            )
            self._pending = None
        if self.session is not None:
            self.session.close()

    def figures(self) -> dict:
        m = self.mapping
        return {
            **self.counts,
            "measurements_duplicate": m.duplicates,
            "names_changed": m.names_changed,
            "series_failed_mapping": m.guard.failed,
            "last_error_status": self.last_error_status,
            "librato_error": self.last_error,
            "last_post_seconds": self.last_post_seconds,
            "api_url": self.url,
            "api": self.api,
        }

    # --- sending --------------------------------------------------------------

    def _send(self, time: float, batch: list[dict]) -> None:
        """POST one batch; return if accepted, raise _Rejection or Retryable otherwise."""
        timeout = request_timeout(self.timeout)
        session = self.session
        if session is None:
            self.connect()
            session = self.session
            assert session is not None  # connect() opened it
        body = json.dumps(self.mapping.payload(time, batch), separators=(",", ":"), allow_nan=False).encode()
        self.counts["posts"] += 1
        started = _time.monotonic()
        try:
            response = post(session, self.url, data=body, deadline=timeout)
        except Retryable as failure:  # a redirect (3xx, never followed) comes here too, as it is
            if failure.status == "timeout":
                raise Retryable(f"no whole answer from {self.url} within {timeout:g} s", status="timeout") from None
            if failure.status == "connection":
                raise Retryable(
                    f"cannot reach {self.url}: {self._redact(failure.reason)}", status="connection error"
                ) from None
            raise
        finally:
            self.last_post_seconds = round(_time.monotonic() - started, 6)
        status = response.status
        if 200 <= status < 300:
            return
        text = self._redact(response.text[:_MAX_LOGGED_BODY])
        if status in _CREDENTIAL_STATUSES:
            raise Retryable(self._credentials_message(status, text), status=status, alarm=True)
        if status == 429 or status == 408 or status >= 500:
            retry_after = (
                parse_retry_after(response.headers.get("Retry-After")) if status in _RETRY_AFTER_STATUSES else None
            )
            raise Retryable(f"{self.url} answered {status}: {text}", retry_after, status=status)
        if status in _MEASUREMENT_STATUSES:
            raise _Rejection(status, text)
        raise Retryable(self._configuration_message(status, text), status=status, alarm=True)

    def _isolate(self, batch: list[dict], rejection: _Rejection, pending: deque, dropped: int) -> int:
        """Split a rejected batch in halves (retried first); drop a measurement rejected alone.

        Returns how many measurements were dropped (0 or 1). Bisecting costs
        about 2 x log2(batch size) extra requests per bad measurement, and at
        most 2n - 1 requests for a batch of n that is rejected throughout (a
        full binary tree); it needs nothing from the error body, whose format
        is not documented. Rejections of the request itself never come here
        (see :meth:`_send`).
        """
        if len(batch) > 1:
            log = self.log.debug if dropped else self.log.warning
            log(
                "Librato rejected a batch of %d measurements (%s); splitting it to isolate the bad ones",
                len(batch),
                rejection,
            )
            half = len(batch) // 2
            pending.appendleft(batch[half:])
            pending.appendleft(batch[:half])
            return 0
        measurement = batch[0]
        self.counts["measurements_rejected"] += 1
        self.last_error_status, self.last_error = rejection.status, str(rejection)
        where = measurement.get("source") or measurement.get("tags")
        log = self.log.error if dropped < _MAX_DROPS_LOGGED else self.log.debug
        log(
            "dropped measurement %s%s: Librato answered %s",
            measurement["name"],
            f" ({printable(where)})" if where else "",
            rejection,
        )
        return 1

    def _configuration_message(self, status: int, text: str) -> str:
        return (
            f"{self.url} answered {status}, a rejection of the request itself rather than of "
            f"a measurement: check --api-url and --api{' and --batch-size' if status == 413 else ''}; "
            f"the data is kept and retried. Librato said: {text}"
        )

    def _credentials_message(self, status: int, text: str) -> str:
        hint = (
            " (with --api tagged, 403 also means the account has no tagged metrics)"
            if self.api == "tagged" and status == 403
            else ""
        )
        return (
            f"Librato refused the credentials ({status}) for user {self.username!r}: check "
            f"--username and the API token (--apitoken-file or ZIBRATO_LIBRATO_APITOKEN); "
            f"the data is kept and retried{hint}. Librato said: {text}"
        )

    def _redact(self, text: object) -> str:
        """Whatever is logged passes here: no form of the credentials, escaped, one line."""
        return printable(SECRETS.redact(str(text)), _MAX_LOGGED_BODY)


def measure_time(time: float) -> int:
    """Librato takes whole seconds: the boundary, rounded up.

    Boundaries of a flush interval of whole seconds are whole already; the
    final, partial interval flushed at stop ends between two seconds, and
    rounding it up keeps it apart from the boundary before it (rounding down
    could give both the same time, and Librato would keep only one).
    """
    return math.ceil(time - 1e-6)


def flush_interval_problem(seconds: float) -> str | None:
    """Why Librato cannot take this flush interval, or None.

    measure_time is whole seconds: intervals shorter than a second share
    stamps, and with a fractional interval the partial one flushed at stop can
    share its boundary's stamp. Librato keeps one value per series and second.
    """
    if seconds >= 1 and seconds == int(seconds):
        return None
    return (
        f"flush interval {seconds:g} s: Librato's measure_time is whole seconds, so the "
        f"interval must be a whole number of seconds, at least 1 (or two intervals would "
        f"share a time and Librato would keep one)"
    )


def batches(measurements: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(measurements), size):
        yield measurements[start : start + size]


def _fit(invalid: re.Pattern, text: str, limit: int) -> str:
    return invalid.sub("_", text)[:limit]


def _finite(measurement: dict) -> dict | None:
    """Librato cannot take NaN or infinity (aggregation should never produce them).

    A value that is not a number at all raises: the series is dropped by its
    guard, rather than failing the JSON encoding of its whole batch.
    """
    for key, value in measurement.items():
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if key not in _TEXT_KEYS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"measurement {key} {value!r} is not a number")
    return measurement


_TEXT_KEYS = frozenset(("name", "source", "tags"))


def _series_key(measurement: dict) -> tuple:
    """What Librato keeps one value of per time: the name and the source (or the tags)."""
    tags = measurement.get("tags")
    return (measurement["name"], measurement.get("source"), tuple(sorted(tags.items())) if tags else None)


def _hostname() -> str:
    return socket.gethostname().split(".")[0] or "zibrato"


def _iso(timestamp: float) -> str:
    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(timestamp))
