"""zibrato-influxdb: each interval as InfluxDB line protocol, written over HTTP.

Mapping (:class:`InfluxMapping`, pure: summaries in, lines out): one point
per series per interval, ``<measurement>[,<tags>] <fields> <timestamp>``:

* measurement: the series name (after ``--prefix``, if any);
* tags: the series' tags (``k:v`` -> ``k=v``; a bare ``x`` -> ``x=true``),
  plus ``source``, ``level`` and a histogram's ``unit`` when present, sorted
  by key (InfluxDB's advice), a repeated key keeping its last value;
* fields, every one a float (a field's type is fixed on first write, so a
  count must not be an integer in one interval and a float in the next):
  counter ``value`` (the sum), ``count``, ``rate``; gauge ``value``,
  ``count``, ``min``, ``max``, ``sum``; timer and histogram ``count``,
  ``sum``, ``sum_squares``, ``min``, ``max``, ``mean``, ``median``,
  ``stddev`` and each percentile (``p99_9``), timers in seconds; set
  ``value`` (unique members). An interval without values sends ``count=0``;
* timestamp: the interval's end, in milliseconds (``precision=ms``).

Escaping, per the line-protocol rules (checked against the real InfluxDB):
commas and spaces in measurements; commas, equals signs and spaces in tag
keys and values. Quotes need no escaping outside string fields (and every
field here is a number). Three things the format cannot carry are changed and
counted: a backslash at the end of a name or before a character that is
escaped (InfluxDB would read it as an escape) becomes ``_``; a measurement
starting with ``#`` (a comment line) gets a leading ``_``; the key ``time``
(refused by InfluxDB) becomes ``time_``. Empty tag values are left out.

Transport (:class:`InfluxDBDestination`): ``POST /write?db=...`` (1.x) or
``POST /api/v2/write?org=...&bucket=...`` (2.x), at most ``batch_size``
lines per request; each request is a part of the interval, so the delivery
queue retries only the batches InfluxDB has not accepted (a batch written
twice would overwrite its points, and cost InfluxDB the work). The token goes
in an ``Authorization`` header only (``Token <token>``; for 1.x a
``user:password`` token is sent as Basic auth). Answers: 2xx delivered; 429,
5xx and connection errors are :class:`~zibrato.delivery.Retryable`
(honouring ``Retry-After``); other 4xx are :class:`~zibrato.delivery.Rejected`,
logged with InfluxDB's own message: 400 and 413 (what this batch holds) for
that batch alone, the others (a missing database, refused credentials) for
the batches of the interval not yet sent too.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..delivery import NameFitter, Rejected, Retryable, parse_retry_after, request_timeout
from ..destination import REFUSED, Destination, Interval, Part
from ..http_client import Answer, HttpSession, post
from ..runtime import printable
from ..series_guard import SeriesGuard
from ..summary import SeriesMemo, Summary
from .graphite import distribution_stats, split_tag

DEFAULT_URL = "http://127.0.0.1:8086"
DEFAULT_BATCH_SIZE = 5000  # InfluxDB's advice for the best write performance
TOKEN_ENV = "INFLUXDB_TOKEN"

_MEASUREMENT_ESCAPES = re.compile(r"([, ])")
_KEY_ESCAPES = re.compile(r"([,= ])")
# a backslash InfluxDB would read as an escape: before an escaped character, or ending the token
_AMBIGUOUS_BACKSLASH_MEASUREMENT = re.compile(r"\\(?=[, ]|$)")
_AMBIGUOUS_BACKSLASH_KEY = re.compile(r"\\(?=[,= ]|$)")
_RESERVED_KEYS = {"time"}
_MAX_CACHED_SERIES = 100_000
NAME_RULE = "a measurement cannot start with # nor hold a backslash before a comma or space or at its end"
TAG_RULE = "tag keys and values cannot hold a backslash before , = or space or at their end"


def fit_measurement(name: str) -> str:
    """What line protocol cannot carry in a measurement, changed (see the module docstring)."""
    name = _AMBIGUOUS_BACKSLASH_MEASUREMENT.sub("_", name)
    return "_" + name if name.startswith("#") else name


def fit_key(text: str) -> str:
    """What line protocol cannot carry in a tag key or value, changed."""
    return _AMBIGUOUS_BACKSLASH_KEY.sub("_", text)


def escape_measurement(name: str) -> str:
    """A measurement name as line protocol spells it (commas and spaces escaped)."""
    return _MEASUREMENT_ESCAPES.sub(r"\\\1", fit_measurement(name))


def escape_key(text: str) -> str:
    """A tag key, tag value or field key (commas, equals signs and spaces escaped)."""
    return _KEY_ESCAPES.sub(r"\\\1", fit_key(text))


def fields_of(summary: Summary) -> Iterator[tuple[str, float]]:
    """(field, value) pairs of one summary."""
    kind = summary["type"]
    if kind == "counter":
        yield "value", summary["value"]
        yield "count", summary.get("count", 0)
        yield "rate", summary.get("rate", 0.0)
    elif kind == "gauge":
        yield "value", summary["value"]
        for key in ("count", "min", "max", "sum"):
            if key in summary:
                yield key, summary[key]
    elif kind in ("timer", "histogram"):
        yield from distribution_stats(summary)
    elif kind == "set":
        yield "value", summary["value"]


class InfluxMapping:
    """Summaries -> line-protocol lines (no I/O); counts names it had to change."""

    def __init__(self, prefix: str = "", log: logging.Logger | None = None) -> None:
        self.prefix = prefix
        self.log = log or logging.getLogger("zibrato.influxdb")
        self.guard = SeriesGuard(self.log)  # a series whose line raises is dropped alone
        self.names = NameFitter(
            self.log, NAME_RULE, fit=lambda text, limit: fit_measurement(text), destination="InfluxDB"
        )
        self.tags = NameFitter(self.log, TAG_RULE, fit=lambda text, limit: fit_key(text), destination="InfluxDB")
        self._keys = SeriesMemo(self._series_key, _MAX_CACHED_SERIES)  # escaping once per series

    def lines(self, interval: Interval) -> list[str]:
        stamp = f" {round(interval.end * 1000)}"
        out = []
        for summary in interval.summaries:
            try:
                # field names are Zibrato's own (value, count, p99_9 ...): nothing to escape
                fields = ",".join([f"{k}={float(v)!r}" for k, v in fields_of(summary)])
                if fields:
                    out.append(f"{self.series_key(summary)} {fields}{stamp}")
            except Exception as error:  # this series alone, never the interval
                self.guard.dropped(summary, error)
        return out

    def series_key(self, summary: Summary) -> str:
        """``measurement,k=v,...``: the part of a line that names the series (cached per series)."""
        return self._keys(summary)

    def _series_key(self, summary: Summary) -> str:
        measurement = _escape(_MEASUREMENT_ESCAPES, self.names(self.prefix + summary["name"]))
        tags = self.tags_of(summary)
        return measurement + "".join(f",{k}={v}" for k, v in tags)

    def tags_of(self, summary: Summary) -> list[tuple[str, str]]:
        pairs = dict(split_tag(t) for t in summary.get("tags") or ())
        for key in ("source", "level", "unit"):
            if summary.get(key):
                pairs[key] = str(summary[key])
        out = []
        for key, value in pairs.items():
            if not key or not value:
                continue
            if key in _RESERVED_KEYS:
                key = key + "_"
            out.append(
                (
                    _escape(_KEY_ESCAPES, self.tags(key, kind="tag key")),
                    _escape(_KEY_ESCAPES, self.tags(value, kind="tag value")),
                )
            )
        return sorted(out)

    @property
    def changed(self) -> int:
        """How many distinct names and tags had to change to be written."""
        return self.names.changed + self.tags.changed


def _escape(pattern: re.Pattern, text: str) -> str:
    return pattern.sub(r"\\\1", text)


class InfluxDBDestination(Destination):
    """Line protocol over HTTP to InfluxDB 1.x (``database``) or 2.x (``org`` + ``bucket``)."""

    name = "influxdb"

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        database: str | None = None,
        org: str | None = None,
        bucket: str | None = None,
        token: str | None = None,
        prefix: str = "",
        batch_size: int = DEFAULT_BATCH_SIZE,
        timeout: float = 10.0,
        session: HttpSession | None = None,
    ) -> None:
        if bool(database) == bool(bucket):
            raise ValueError("give either a database (InfluxDB 1.x) or a bucket with an org (2.x)")
        if bucket and not org:
            raise ValueError("a bucket (InfluxDB 2.x) needs its org")
        if batch_size < 1 or timeout <= 0:
            raise ValueError("batch size and timeout must be positive")
        self.url = url.rstrip("/")
        self.shown_url = without_credentials(self.url)  # for logs and status: never a password
        self.database, self.org, self.bucket = database, org, bucket
        self.batch_size, self.timeout = batch_size, timeout
        self.log = logging.getLogger("zibrato.influxdb")
        self.mapping = InfluxMapping(prefix, self.log)
        self._token = token
        self._session = session
        self._figures: dict[str, Any] = {
            "points_sent": 0,
            "requests": 0,
            "intervals_sent": 0,
            "http_errors": 0,
            "connection_errors": 0,
            "rejected_points": 0,
        }

    # --- request shape (no I/O) -------------------------------------------------

    @property
    def write_url(self) -> str:
        return f"{self.url}/api/v2/write" if self.bucket else f"{self.url}/write"

    @property
    def params(self) -> dict:
        if self.bucket:
            return {"org": self.org, "bucket": self.bucket, "precision": "ms"}
        return {"db": self.database, "precision": "ms"}

    @property
    def headers(self) -> dict:
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self._token:
            if self.database and ":" in self._token:  # 1.x user:password
                basic = base64.b64encode(self._token.encode("utf-8")).decode("ascii")
                headers["Authorization"] = f"Basic {basic}"
            else:
                headers["Authorization"] = f"Token {self._token}"
        return headers

    @property
    def target(self) -> str:
        where = f"bucket {self.bucket!r} of org {self.org!r}" if self.bucket else f"database {self.database!r}"
        return f"{self.shown_url} ({where})"

    # --- Destination ---------------------------------------------------------------

    def connect(self) -> None:
        if self._session is None:
            self._session = HttpSession()
        self.log.info(
            "writing to InfluxDB at %s, %s", self.target, "with a token" if self._token else "without authentication"
        )

    def parts(self, interval: Interval) -> list[Part]:
        """The interval's lines in batches of at most ``batch_size``, each a part.

        ``intervals_sent`` counts an interval when its last batch is accepted.
        """
        lines = self.mapping.lines(interval)
        batches = [lines[start : start + self.batch_size] for start in range(0, len(lines), self.batch_size)]
        return [Part((batch, i == len(batches) - 1), len(batch)) for i, batch in enumerate(batches)]

    def send(self, part: Part) -> None:
        """Write one batch; the payload is (its lines, whether it is the interval's last)."""
        lines, last = part.payload
        try:
            self._write(lines)
        except Rejected:
            self._figures["rejected_points"] += part.points
            raise
        if last:
            self._figures["intervals_sent"] += 1

    def lost(self, parts: Sequence[Part], reason: str) -> None:
        if reason == REFUSED:
            self._figures["rejected_points"] += sum(part.points for part in parts)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    def figures(self) -> dict:
        """Own figures; failing deliveries are reported by the delivery queue."""
        return dict(
            self._figures,
            influxdb=self.target,
            names_changed=self.mapping.changed,
            series_failed_mapping=self.mapping.guard.failed,
        )

    def _write(self, lines: list[str]) -> None:
        body = "\n".join(lines).encode("utf-8")
        if self._session is None:
            self.connect()
        assert self._session is not None
        try:
            answer = post(
                self._session,
                self.write_url,
                params=self.params,
                data=body,
                headers=self.headers,
                deadline=request_timeout(self.timeout),
            )
        except Retryable as failure:
            if failure.status not in ("connection", "timeout"):
                self._figures["http_errors"] += 1  # a redirect: never followed
                raise
            self._figures["connection_errors"] += 1
            raise Retryable(
                f"InfluxDB at {self.shown_url} unreachable: {failure.reason}", status=failure.status
            ) from None
        self._figures["requests"] += 1
        if answer.status < 300:
            self._figures["points_sent"] += len(lines)
            return
        self._figures["http_errors"] += 1
        message = server_message(answer)
        reason = f"InfluxDB answered {answer.status}: {message}"
        if answer.status == 429 or answer.status >= 500:
            raise Retryable(reason, parse_retry_after(answer.headers.get("Retry-After")), status=answer.status)
        raise Rejected(reason, whole_interval=answer.status not in _BATCH_STATUSES)


_BATCH_STATUSES = (400, 413)  # refusals of what one batch holds; the others refuse every request alike


def server_message(answer: Answer) -> str:
    """InfluxDB's own explanation: JSON ``error`` (1.x) or ``message`` (2.x), else the body."""
    try:
        body = json.loads(answer.body)
        if isinstance(body, dict) and (body.get("error") or body.get("message")):
            return printable(body.get("error") or body.get("message"), 500)
    except ValueError:
        pass
    return printable(answer.headers.get("X-Influxdb-Error") or answer.text.strip() or answer.reason or "", 500)


def without_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` part, for logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
