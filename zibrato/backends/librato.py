"""zibrato-librato: deliver each flush to Librato, losing nothing that can be kept.

Mapping (see docs/LIBRATO.md): a counter becomes a gauge of its per-flush sum;
a gauge is sent as its last value; a timer becomes one summary gauge
(``count``, ``sum``, ``min``, ``max``, ``sum_squares``) plus one gauge per
percentile (``name.p95``). Every measurement is stamped with the flush
boundary, in whole seconds, so the flush interval must be whole seconds too.
Names and sources are fitted to Librato's rules, and each changed one is
logged once. Librato keeps one value per name, source and time, so a second
measurement of the same name and source in one interval is dropped, counted
and logged once per name rather than sent.

Delivery: :meth:`LibratoBackend.post` runs in the worker's delivery thread, one
interval at a time. It splits the interval into batches and sends them over
one keep-alive session. Failures that a retry can outlast are retried with
exponential backoff and jitter (honouring ``Retry-After``) while later
intervals wait in the runtime's bounded backlog: connection errors, timeouts,
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
import math
import random
import re
import socket
import threading
import time as _time
from collections import deque
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Iterator

import requests

from .. import __version__
from ..worker import Backend

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
MIN_RETRY_AFTER_CAP = 300.0  # seconds of Retry-After honoured even when --max-retry-delay is less
_MAX_LOGGED_BODY = 1000
_MAX_REMEMBERED_NAMES = 100_000
_LOG_EVERY_N_FAILURES = 10
_MAX_DROPS_LOGGED = 10  # per interval; past it, one summary line


class Rejected(Exception):
    """Librato refused measurements of the payload (400 or 422): one bad one rejects the batch."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body


class Transient(Exception):
    """Worth retrying: no answer, a timeout, 5xx, 429, refused credentials, a configuration error.

    ``alarm`` marks failures that need an operator (credentials, configuration):
    logged as errors rather than warnings.
    """

    def __init__(self, reason: str, status: int | str, retry_after: float | None = None,
                 alarm: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.status, self.retry_after, self.alarm = reason, status, retry_after, alarm


class LibratoBackend(Backend):
    """The Librato worker: ``zibrato-librato``.

    ``backoff_base`` and ``backoff_cap`` (seconds) shape the retry delays:
    base, 2 x base, 4 x base ... up to the cap, each with jitter (between half
    the delay and the whole of it). A ``Retry-After`` from Librato is waited
    for up to ``max(backoff_cap, 300)`` seconds, never past the stop deadline.
    """

    name = "librato"
    self_figures = ("measurements_sent", "measurements_rejected", "measurements_lost",
                    "measurements_duplicate", "retries")

    def __init__(self, *args, username: str, token: str, api_url: str = DEFAULT_API_URL,
                 api: str = "legacy", source: str | None = None, batch_size: int = 300,
                 timeout: float = 5.0, backoff_base: float = 1.0, backoff_cap: float = 60.0,
                 **kwargs) -> None:
        if not username or not token:
            raise ValueError("Librato needs a username (the account e-mail) and an API token")
        if api not in APIS:
            raise ValueError(f"unknown API {api!r} (legacy or tagged)")
        if batch_size < 1 or timeout <= 0 or backoff_base <= 0 or backoff_cap < backoff_base:
            raise ValueError("batch size, timeout and backoff must be positive (cap >= base)")
        problem = flush_interval_problem(kwargs.get("flush_interval", 60.0))
        if problem:
            raise ValueError(problem)
        super().__init__(*args, **kwargs)
        self.username, self._token = username, token
        self.api = api
        self.url = api_url.rstrip("/") + ("/v1/metrics" if api == "legacy" else "/v1/measurements")
        self.batch_size, self.timeout = batch_size, timeout
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.retry_after_cap = max(backoff_cap, MIN_RETRY_AFTER_CAP)
        self.names = Sanitiser(self.log)
        self.default_source = self.names.source(source) if source else None
        self.session: requests.Session | None = None
        self._failures = 0  # consecutive failed attempts, across intervals
        self._failing_since: float | None = None
        self._alarms_logged: set[int | str] = set()  # statuses logged as errors in this failing run
        self._duplicates_logged: set[str] = set()
        self._unsent = 0  # measurements of the interval in post() not yet sent or dropped
        self._cut_off = False  # set when stop's window ended with a post still running
        self._random = random.Random()
        self.figures_.update(posts=0, posts_failed=0, retries=0, measurements_sent=0,
                             measurements_rejected=0, measurements_lost=0,
                             measurements_duplicate=0, names_changed=0,
                             last_error_status=None, last_error=None, last_post_seconds=None)

    # --- Backend extension points -------------------------------------------

    def connect(self) -> None:
        session = requests.Session()
        session.auth = (self.username, self._token)
        session.headers.update({"Content-Type": "application/json",
                                "User-Agent": f"zibrato-librato/{__version__}"})
        self.session = session
        self.log.info("posting to %s as %s (%s API, batches of at most %d)", self.url,
                      self.username, self.api, self.batch_size)

    def post(self, time: float, summaries: list[dict]) -> None:
        """Deliver one interval; return when it is delivered, or given up at stop."""
        measurements = self.measurements(summaries)
        self._unsent = len(measurements)
        pending = deque(batches(measurements, self.batch_size))
        split = False  # once a batch was split, further splits are logged at debug level
        dropped = 0
        while pending:
            batch = pending[0]
            try:
                self._send(time, batch)
            except Rejected as rejection:
                pending.popleft()
                self._recovered()
                newly_dropped = self._isolate(batch, rejection, pending, split, dropped)
                dropped += newly_dropped
                self._unsent -= newly_dropped
                split = True
                continue
            except Transient as failure:
                if failure.status == "stopping" or not self._wait_to_retry(failure):
                    self._give_up(time, pending)
                    return
                continue
            pending.popleft()
            self._recovered()
            self.figures_["measurements_sent"] += len(batch)
            self._unsent -= len(batch)
        if dropped > _MAX_DROPS_LOGGED:
            self.log.error("Librato rejected %d measurements of the interval at %s (the first %d "
                           "are logged above)", dropped, _iso(time), _MAX_DROPS_LOGGED)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def figures(self) -> dict:
        f = super().figures()
        if self._failing_since is not None:
            failing = _time.monotonic() - self._failing_since
            f["problems"].append(f"Librato delivery failing for {failing:.0f} s ({f['last_error']})")
            f["healthy"] = False
        f.update(api_url=self.url, api=self.api)
        return f

    # --- mapping ------------------------------------------------------------

    def measurements(self, summaries: list[dict]) -> list[dict]:
        """Librato measurements for one interval's summaries (see the module docstring)."""
        out: list[dict | None] = []
        tagged = self.api == "tagged"
        for s in summaries:
            kind = s["type"]
            extra = self._tags(s) if tagged else self._source(s)
            if kind == "timer":
                if not s.get("count"):
                    continue
                suffixes = [k for k in s if _PERCENTILE_KEY.match(k)]
                room = max((len(k) + 1 for k in suffixes), default=0)
                name = self.names.name(s["name"], MAX_NAME_LENGTH - room)
                fields = _TAGGED_TIMER_FIELDS if tagged else _TIMER_FIELDS
                out.append(_finite({"name": name, **{f: s[f] for f in fields}, **extra}))
                out.extend(_finite({"name": f"{name}.{k}", "value": s[k], **extra}) for k in suffixes)
            else:
                out.append(_finite({"name": self.names.name(s["name"]), "value": s["value"], **extra}))
        self.figures_["names_changed"] = self.names.changed
        finite = [m for m in out if m is not None]
        if len(finite) < len(out):  # pragma: no cover - aggregation never produces NaN
            self.figures_["measurements_rejected"] += len(out) - len(finite)
            self.log.error("dropped %d measurements that are not finite numbers", len(out) - len(finite))
        return self._without_duplicates(finite)

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
                self.figures_["measurements_duplicate"] += 1
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
        self.log.warning("two series become the Librato measurement %s%s in one interval (a timer's "
                         "percentile gauge and a series of that name, or names that differ only in "
                         "characters sent as _): only the first is sent (measurements_duplicate; "
                         "logged once per name)", name, f" ({where})" if where else "")

    def payload(self, time: float, batch: list[dict]) -> dict:
        """The JSON body for one batch, stamped with the flush boundary (see :func:`measure_time`)."""
        if self.api == "tagged":
            return {"time": measure_time(time), "measurements": batch}
        return {"measure_time": measure_time(time), "gauges": batch}

    def _source(self, summary: dict) -> dict:
        """Legacy API: the series' source (or the default), with its tags folded in.

        The source-based API has no tags; dropping them would send series that
        differ only by tags as duplicates of one name and source, and Librato
        keeps one of those. So ``source`` becomes ``source.k1:v1.k2:v2``.
        """
        parts = [summary.get("source") or self.default_source or ""]
        parts += sorted(summary.get("tags") or ())
        source = ".".join(p for p in parts if p)
        return {"source": self.names.source(source)} if source else {}

    def _tags(self, summary: dict) -> dict:
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

    # --- sending --------------------------------------------------------------

    def _send(self, time: float, batch: list[dict]) -> None:
        """POST one batch; return if accepted, raise Rejected or Transient otherwise."""
        timeout = self._request_timeout()
        if timeout is None:
            raise Transient("stop deadline reached", "stopping")
        if self.session is None:
            self.connect()
        body = json.dumps(self.payload(time, batch), separators=(",", ":"), allow_nan=False).encode()
        self.figures_["posts"] += 1
        started = _time.monotonic()
        try:
            response = self.session.post(self.url, data=body, timeout=timeout, allow_redirects=False)
        except requests.Timeout:
            raise Transient(f"no answer from {self.url} within {timeout:g} s", "timeout") from None
        except requests.RequestException as error:
            raise Transient(f"cannot reach {self.url}: {self._redact(error)}", "connection error") from None
        finally:
            self.figures_["last_post_seconds"] = round(_time.monotonic() - started, 6)
        status = response.status_code
        if 200 <= status < 300:
            return
        text = self._redact(response.text[:_MAX_LOGGED_BODY])
        if status in _CREDENTIAL_STATUSES:
            raise Transient(self._credentials_message(status, text), status, alarm=True)
        if status < 400:  # a redirect: kept and retried, since the data is not at fault
            raise Transient(f"{self.url} answered {status} (a redirect to "
                            f"{response.headers.get('Location')!r}): check --api-url", status)
        if status == 429 or status == 408 or status >= 500:
            retry_after = (parse_retry_after(response.headers.get("Retry-After"))
                           if status in _RETRY_AFTER_STATUSES else None)
            raise Transient(f"{self.url} answered {status}: {text}", status, retry_after)
        if status in _MEASUREMENT_STATUSES:
            raise Rejected(status, text)
        raise Transient(self._configuration_message(status, text), status, alarm=True)

    def _request_timeout(self) -> float | None:
        """The request timeout; while stopping, no longer than what is left (None: nothing left)."""
        if not self.stopping.is_set() or self.stop_deadline is None:
            return self.timeout
        left = self.stop_deadline - _time.monotonic()
        return min(self.timeout, left) if left > 0.05 else None

    def _isolate(self, batch: list[dict], rejection: Rejected, pending: deque, split: bool,
                 dropped: int) -> int:
        """Split a rejected batch in halves (retried first); drop a measurement rejected alone.

        Returns how many measurements were dropped (0 or 1). Bisecting costs
        about 2 x log2(batch size) extra requests per bad measurement, and at
        most 2n - 1 requests for a batch of n that is rejected throughout (a
        full binary tree); it needs nothing from the error body, whose format
        is not documented. Rejections of the request itself never come here
        (see :meth:`_send`).
        """
        if len(batch) > 1:
            log = self.log.debug if split else self.log.warning
            log("Librato rejected a batch of %d measurements (%s); splitting it to isolate "
                "the bad ones", len(batch), rejection)
            half = len(batch) // 2
            pending.appendleft(batch[half:])
            pending.appendleft(batch[:half])
            return 0
        measurement = batch[0]
        self.figures_["measurements_rejected"] += 1
        self.figures_["last_error_status"], self.figures_["last_error"] = rejection.status, str(rejection)
        where = measurement.get("source") or measurement.get("tags")
        log = self.log.error if dropped < _MAX_DROPS_LOGGED else self.log.debug
        log("dropped measurement %s%s: Librato answered %s", measurement["name"],
            f" ({where})" if where else "", rejection)
        return 1

    def _wait_to_retry(self, failure: Transient) -> bool:
        """Count the failure, log it, sleep the backoff delay; False when it is time to give up."""
        f = self.figures_
        f["posts_failed"] += 1
        f["last_error_status"], f["last_error"] = failure.status, failure.reason
        if self._failing_since is None:
            self._failing_since = _time.monotonic()
        self._failures += 1
        delay = self.backoff_delay(self._failures, failure.retry_after)
        if self.stopping.is_set():
            left = (self.stop_deadline or 0) - _time.monotonic()
            if left <= 0.1:
                return False
            delay = min(delay, left / 2)
        f["retries"] += 1
        self._log_failure(failure, delay)
        self.stopping.wait(delay)
        return True

    def _log_failure(self, failure: Transient, delay: float) -> None:
        """The first failure, every tenth, and the first of each alarming status (as an error)."""
        new_alarm = failure.alarm and failure.status not in self._alarms_logged
        if new_alarm:
            self._alarms_logged.add(failure.status)
        if new_alarm or self._failures == 1 or self._failures % _LOG_EVERY_N_FAILURES == 0:
            level = self.log.error if failure.alarm else self.log.warning
            level("%s (attempt %d failed; retrying in %.2g s, later flushes keep aggregating)",
                  failure.reason, self._failures, delay)
        else:
            self.log.debug("%s; retrying in %.2g s", failure.reason, delay)

    def backoff_delay(self, failures: int, retry_after: float | None = None) -> float:
        """Exponential backoff with jitter: between half and all of min(cap, base x 2^(n-1)).

        A ``Retry-After`` is honoured up to :attr:`retry_after_cap`, which
        exceeds ``backoff_cap`` when that is short: Librato knows better when
        to come back than a fixed cap does.
        """
        delay = min(self.backoff_cap, self.backoff_base * 2 ** min(failures - 1, 60))
        delay = self._random.uniform(delay / 2, delay)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_cap))
        return delay

    def _recovered(self) -> None:
        if self._failing_since is not None:
            self.log.info("Librato delivery recovered after %d failed attempts over %.1f s",
                          self._failures, _time.monotonic() - self._failing_since)
        self._failures, self._failing_since = 0, None
        self._alarms_logged.clear()

    def _give_up(self, time: float, pending: deque) -> None:
        with self._backlog_ready:  # exclusive with _count_cut_off, so nothing is counted twice
            if self._cut_off:
                return
            lost = sum(len(batch) for batch in pending)
            self.figures_["measurements_lost"] += lost
            self._unsent = 0
        self.log.error("stop deadline reached: gave up the interval at %s, %d measurements not "
                       "delivered (last error: %s)", _iso(time), lost, self.figures_["last_error"])

    def _finish_delivery(self, delivery: threading.Thread) -> None:
        """As the runtime does; then count what a post still running at the deadline will not deliver."""
        super()._finish_delivery(delivery)
        if delivery.is_alive():
            self._count_cut_off()

    def _count_cut_off(self) -> None:
        """The stop window ended inside a post (a request can outlast it): count and log the loss.

        The interval in flight loses what it had not sent; those waiting
        behind it lose every measurement they would have become.
        """
        with self._backlog_ready:
            self._cut_off = True
            intervals = list(self._backlog)
            in_flight = self._unsent if self._delivering and intervals else 0
            waiting = intervals[1:] if self._delivering else intervals
            lost = in_flight + sum(_measurement_count(summaries) for _, summaries in waiting)
            self.figures_["measurements_lost"] += lost
        self.log.error("stop window ended with a post to Librato still running: %d measurements "
                       "of %d intervals not delivered (measurements_lost)", lost, len(intervals))

    def _configuration_message(self, status: int, text: str) -> str:
        return (f"{self.url} answered {status}, a rejection of the request itself rather than of "
                f"a measurement: check --api-url and --api{' and --batch-size' if status == 413 else ''}; "
                f"the data is kept and retried. Librato said: {text}")

    def _credentials_message(self, status: int, text: str) -> str:
        hint = (" (with --api tagged, 403 also means the account has no tagged metrics)"
                if self.api == "tagged" and status == 403 else "")
        return (f"Librato refused the credentials ({status}) for user {self.username!r}: check "
                f"--username and the API token (--apitoken-file or ZIBRATO_LIBRATO_APITOKEN); "
                f"the data is kept and retried{hint}. Librato said: {text}")

    def _redact(self, text: object) -> str:
        """Whatever is logged passes here: the API token never appears in a log line."""
        return str(text).replace(self._token, "<token>") if self._token else str(text)


class Sanitiser:
    """Fits names and sources to Librato's rules; logs each changed one once."""

    def __init__(self, log) -> None:
        self.log = log
        self.changed = 0
        self._seen: dict[tuple[str, str, int], str] = {}

    def name(self, text: str, limit: int = MAX_NAME_LENGTH) -> str:
        return self._fix("name", text, limit)

    def source(self, text: str) -> str:
        return self._fix("source", text, MAX_NAME_LENGTH)

    def _fix(self, kind: str, text: str, limit: int) -> str:
        key = (kind, text, limit)
        fixed = self._seen.get(key)
        if fixed is None:
            fixed = _fit(_INVALID_NAME, text, limit)
            rule = f"at most {limit} characters of A-Z a-z 0-9 . : - _"
            if kind == "source" and fixed.lower() == "all":
                fixed, rule = fixed + "_", "'all' is reserved"
            if len(self._seen) >= _MAX_REMEMBERED_NAMES:
                self._seen.clear()
            self._seen[key] = fixed
            if fixed != text:
                self.changed += 1
                self.log.warning("%s %r does not fit Librato's rules (%s): sent as %r",
                                 kind, text, rule, fixed)
        return fixed


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
    return (f"flush interval {seconds:g} s: Librato's measure_time is whole seconds, so the "
            f"interval must be a whole number of seconds, at least 1 (or two intervals would "
            f"share a time and Librato would keep one)")


def batches(measurements: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(measurements), size):
        yield measurements[start:start + size]


def _fit(invalid: re.Pattern, text: str, limit: int) -> str:
    return invalid.sub("_", text)[:limit]


def _finite(measurement: dict) -> dict | None:
    """Librato cannot take NaN or infinity (aggregation should never produce them)."""
    for value in measurement.values():
        if isinstance(value, float) and not math.isfinite(value):
            return None
    return measurement


def _series_key(measurement: dict) -> tuple:
    """What Librato keeps one value of per time: the name and the source (or the tags)."""
    tags = measurement.get("tags")
    return (measurement["name"], measurement.get("source"),
            tuple(sorted(tags.items())) if tags else None)


def _measurement_count(summaries: list[dict]) -> int:
    """How many measurements :meth:`LibratoBackend.measurements` makes of these (duplicates included)."""
    count = 0
    for s in summaries:
        if s["type"] != "timer":
            count += 1
        elif s.get("count"):
            count += 1 + sum(1 for key in s if _PERCENTILE_KEY.match(key))
    return count


def parse_retry_after(header: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110)."""
    if not header:
        return None
    header = header.strip()
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as every HTTP-date is
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (_time.time() if now is None else now))


def _hostname() -> str:
    return socket.gethostname().split(".")[0] or "zibrato"


def _iso(timestamp: float) -> str:
    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(timestamp))
