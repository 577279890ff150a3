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

The mapping (:class:`LibratoMapping`, in :mod:`.librato_mapping`) is pure: summaries in, measurements and
JSON bodies out. The transport (:class:`Librato`, the destination) splits the
interval into batches, the parts the delivery queue sends and retries
(:meth:`Librato.parts`), and POSTs them over one keep-alive session. Failures that
a retry can outlast raise :class:`~zibrato.delivery.Retryable` (with the
``Retry-After``), so the runtime's delivery queue retries with backoff while
later intervals wait in its bounded backlog: connection errors, timeouts,
5xx, 408, 429, 401/403 (credentials can be fixed) and the other 4xx that say
the request itself is wrong (404, 405, 413, 415...: a configuration error, such
as a wrong --api-url, that no measurement is to blame for). Batches already
accepted are never sent again (the queue remembers them). Only 400 and 422
reject measurements; since Librato rejects the whole batch for one bad
measurement, the batch is split in halves (two parts sent in its place) until
the bad ones are isolated; only those are dropped, with Librato's error body
logged.
"""

from __future__ import annotations

import json
import logging
import time as _time
from collections.abc import Iterator, Sequence

from .. import __version__
from ..delivery import Retryable, iso, parse_retry_after, request_timeout
from ..destination import CUT_OFF, Destination, Interval, Part
from ..http_client import HttpSession, post
from ..runtime import SECRETS, printable
from .librato_mapping import (
    APIS,
    MAX_NAME_LENGTH,
    MAX_TAG_NAME_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    MAX_TAGS,
    NAME_RULE,
    TAG_NAME_RULE,
    TAG_VALUE_RULE,
    LibratoMapping,
    measure_time,
)

DEFAULT_API_URL = "https://metrics-api.librato.com"
_CREDENTIAL_STATUSES = (401, 403)
_MEASUREMENT_STATUSES = (400, 422)  # Librato's rejections of what was sent, not of the request
_RETRY_AFTER_STATUSES = (429, 503)
_MAX_LOGGED_BODY = 1000
_MAX_DROPS_LOGGED = 10  # logged as errors per interval; past it, at debug level


class _Batch:
    """One batch of an interval's measurements, stamped with the interval's end."""

    __slots__ = ("measurements", "time")

    def __init__(self, time: float, measurements: list[dict]) -> None:
        self.time, self.measurements = time, measurements


class _Rejection(Exception):
    """Librato refused measurements of the payload (400 or 422): one bad one rejects the batch."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body


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

    Each batch of measurements is a part of the interval: the delivery queue
    sends them in order and never sends an accepted one again.
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
        self.counts = dict(posts=0, posts_failed=0, measurements_sent=0, measurements_rejected=0, measurements_lost=0)
        self.last_error_status: int | str | None = None
        self.last_error: str | None = None
        self.last_post_seconds: float | None = None
        self._drops: dict[float, int] = {}  # measurements dropped per interval (its end), for the log

    def connect(self) -> None:
        session = HttpSession(auth=(self.username, self._token))
        session.headers.update({"Content-Type": "application/json", "User-Agent": f"zibrato-librato/{__version__}"})
        self.session = session
        self.log.info(
            "posting to %s as %s (%s API, batches of at most %d)", self.url, self.username, self.api, self.batch_size
        )

    def parts(self, interval: Interval) -> list[Part]:
        """The interval's measurements in batches of at most ``batch_size``, each a part."""
        measurements = self.mapping.measurements(interval.summaries)
        return [Part(_Batch(interval.end, batch), len(batch)) for batch in batches(measurements, self.batch_size)]

    def send(self, part: Part) -> Sequence[Part] | None:
        """POST one batch; a batch Librato refuses for its measurements comes back as two halves."""
        batch: _Batch = part.payload
        try:
            self._send(batch.time, batch.measurements)
        except _Rejection as rejection:
            return self._isolate(batch, rejection)
        except Retryable as failure:
            self.counts["posts_failed"] += 1
            self.last_error_status, self.last_error = failure.status, failure.reason
            raise
        self.counts["measurements_sent"] += len(batch.measurements)
        return None

    def lost(self, parts: Sequence[Part], reason: str) -> None:
        lost = sum(part.points for part in parts)
        self.counts["measurements_lost"] += lost
        if reason == CUT_OFF:
            self.log.error(
                "stop deadline reached: %d measurements of the interval at %s not delivered (last error: %s)",
                lost,
                iso(parts[0].payload.time),
                self.last_error,
            )

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def figures(self) -> dict:
        m = self.mapping
        return {
            **self.counts,
            "measurements_duplicate": m.duplicates,
            "tags_dropped": m.tags_dropped,
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

    def _isolate(self, batch: _Batch, rejection: _Rejection) -> list[Part]:
        """Split a rejected batch in halves (sent next); drop a measurement rejected alone.

        Bisecting costs about 2 x log2(batch size) extra requests per bad
        measurement, and at most 2n - 1 requests for a batch of n that is
        rejected throughout (a full binary tree); it needs nothing from the
        error body, whose format is not documented. Rejections of the request
        itself never come here (see :meth:`_send`). At most
        ``_MAX_DROPS_LOGGED`` drops are logged as errors per interval.
        """
        measurements = batch.measurements
        if len(measurements) > 1:
            log = self.log.debug if batch.time in self._drops else self.log.warning
            log(
                "Librato rejected a batch of %d measurements (%s); splitting it to isolate the bad ones",
                len(measurements),
                rejection,
            )
            half = len(measurements) // 2
            return [
                Part(_Batch(batch.time, measurements[:half]), half),
                Part(_Batch(batch.time, measurements[half:]), len(measurements) - half),
            ]
        measurement = measurements[0]
        self.counts["measurements_rejected"] += 1
        self.last_error_status, self.last_error = rejection.status, str(rejection)
        dropped = self._drops.get(batch.time, 0)
        if len(self._drops) > 16:  # only the latest intervals matter
            self._drops.clear()
        self._drops[batch.time] = dropped + 1
        where = measurement.get("source") or measurement.get("tags")
        log = self.log.error if dropped < _MAX_DROPS_LOGGED else self.log.debug
        log(
            "dropped measurement %s%s: Librato answered %s",
            measurement["name"],
            f" ({printable(where)})" if where else "",
            rejection,
        )
        if dropped == _MAX_DROPS_LOGGED:
            self.log.error(
                "Librato rejects more than %d measurements of the interval at %s: the rest are logged at debug level",
                _MAX_DROPS_LOGGED,
                iso(batch.time),
            )
        return []

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


__all__ = [
    "APIS",
    "DEFAULT_API_URL",
    "MAX_NAME_LENGTH",
    "MAX_TAGS",
    "MAX_TAG_NAME_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "NAME_RULE",
    "TAG_NAME_RULE",
    "TAG_VALUE_RULE",
    "Librato",
    "LibratoMapping",
    "batches",
    "check_credentials",
    "flush_interval_problem",
    "measure_time",
]
